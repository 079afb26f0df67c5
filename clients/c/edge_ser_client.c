/*
 * edge_ser_client.c: the Wyoming side of edge_ser_client.h, on POSIX sockets, with cJSON for JSON.
 *
 * An event on the wire is one JSON header line ({"type", "data", "data_length", "payload_length"}), then
 * data_length bytes of JSON data, then payload_length bytes of payload. Incoming bytes are buffered and cut
 * into events; every size the server claims is bounded (MAX_EVENT_BYTES) before it is waited for.
 */
#define _POSIX_C_SOURCE 200809L

#include "edge_ser_client.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_MS 10000
#define MAX_EVENT_BYTES (1 << 20) /* a result event is a few hundred bytes; anything near this is not ours */
#define READ_BYTES 4096

/* What an event owns, freed with it (the public struct's pointers point into these). */
typedef struct Owned {
  EdgeSerEvent event; /* first: an EdgeSerEvent* is an Owned* */
  char *type_name, *json, *error_code, *error_text;
  EdgeSerResult result;
  char **labels;
  float *probabilities;
} Owned;

typedef struct QueueItem {
  Owned *owned;
  struct QueueItem *next;
} QueueItem;

struct EdgeSerClient {
  char *uri;
  int timeout_ms;
  int fd;
  int started;   /* a request is open */
  int frame;     /* bytes per frame of the open request */
  char format[96]; /* the open request's {"rate", "width", "channels"} */
  char *in;      /* received, not yet cut into events */
  size_t in_len, in_cap;
  QueueItem *head, *tail;
  char error[512];
};

/* ---- errors ------------------------------------------------------------------------------------ */

static int fail(EdgeSerClient *client, int status, const char *format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(client->error, sizeof client->error, format, args);
  va_end(args);
  return status;
}

const char *EdgeSerStatusString(int status) {
  switch (status) {
    case EDGE_SER_OK: return "ok";
    case EDGE_SER_ERR_ARGUMENT: return "bad argument";
    case EDGE_SER_ERR_CONNECT: return "connection failed";
    case EDGE_SER_ERR_IO: return "connection lost";
    case EDGE_SER_ERR_PROTOCOL: return "protocol error";
    case EDGE_SER_ERR_TIMEOUT: return "timed out";
    case EDGE_SER_ERR_NOMEM: return "out of memory";
    case EDGE_SER_ERR_STATE: return "call out of order";
    default: return "unknown status";
  }
}

const char *EdgeSerClientLastError(const EdgeSerClient *client) { return client ? client->error : ""; }

/* ---- create / destroy / connect ---------------------------------------------------------------- */

static char *copy_string(const char *text) {
  size_t n = strlen(text) + 1;
  char *out = malloc(n);
  if (out) memcpy(out, text, n);
  return out;
}

EdgeSerClient *EdgeSerCreateClient(const EdgeSerClientConfig *config) {
  if (!config || !config->uri) return NULL;
  EdgeSerClient *client = calloc(1, sizeof *client);
  if (!client) return NULL;
  client->uri = copy_string(config->uri);
  if (!client->uri) {
    free(client);
    return NULL;
  }
  client->timeout_ms = config->timeout_ms > 0 ? config->timeout_ms : DEFAULT_TIMEOUT_MS;
  client->fd = -1;
  return client;
}

void EdgeSerDestroyClient(EdgeSerClient *client) {
  if (!client) return;
  if (client->fd >= 0) close(client->fd);
  while (client->head) {
    QueueItem *item = client->head;
    client->head = item->next;
    EdgeSerDestroyEvent(&item->owned->event);
    free(item);
  }
  free(client->in);
  free(client->uri);
  free(client);
}

static void set_timeouts(int fd, int timeout_ms) {
  struct timeval tv;
  tv.tv_sec = timeout_ms / 1000;
  tv.tv_usec = (timeout_ms % 1000) * 1000;
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int connect_unix(EdgeSerClient *client, const char *path) {
  struct sockaddr_un address;
  memset(&address, 0, sizeof address);
  address.sun_family = AF_UNIX;
  if (strlen(path) == 0 || strlen(path) >= sizeof address.sun_path)
    return fail(client, EDGE_SER_ERR_ARGUMENT, "unix socket path must be 1 to %zu bytes: %s",
                sizeof address.sun_path - 1, client->uri);
  strcpy(address.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return fail(client, EDGE_SER_ERR_CONNECT, "socket: %s", strerror(errno));
  if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
    int err = errno;
    close(fd);
    return fail(client, EDGE_SER_ERR_CONNECT, "cannot connect to %s: %s", client->uri, strerror(err));
  }
  client->fd = fd;
  return EDGE_SER_OK;
}

static int connect_tcp(EdgeSerClient *client, const char *rest) {
  char host[256];
  const char *colon;
  if (rest[0] == '[') { /* [::1]:10700 */
    const char *close_bracket = strchr(rest, ']');
    if (!close_bracket || close_bracket[1] != ':') colon = NULL;
    else colon = close_bracket + 1;
    if (colon && (size_t)(close_bracket - rest - 1) < sizeof host) {
      memcpy(host, rest + 1, (size_t)(close_bracket - rest - 1));
      host[close_bracket - rest - 1] = '\0';
    } else {
      colon = NULL;
    }
  } else {
    colon = strrchr(rest, ':');
    if (colon && (size_t)(colon - rest) < sizeof host && colon > rest) {
      memcpy(host, rest, (size_t)(colon - rest));
      host[colon - rest] = '\0';
    } else {
      colon = NULL;
    }
  }
  if (!colon || colon[1] == '\0')
    return fail(client, EDGE_SER_ERR_ARGUMENT, "a tcp URI needs a host and a port, e.g. tcp://127.0.0.1:10700: %s",
                client->uri);
  struct addrinfo hints, *found = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = getaddrinfo(host, colon + 1, &hints, &found);
  if (rc != 0) return fail(client, EDGE_SER_ERR_CONNECT, "cannot resolve %s: %s", client->uri, gai_strerror(rc));
  int err = 0;
  for (struct addrinfo *a = found; a; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    set_timeouts(fd, client->timeout_ms);
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      freeaddrinfo(found);
      client->fd = fd;
      return EDGE_SER_OK;
    }
    err = errno;
    close(fd);
  }
  freeaddrinfo(found);
  return fail(client, EDGE_SER_ERR_CONNECT, "cannot connect to %s: %s", client->uri, strerror(err));
}

int EdgeSerClientConnect(EdgeSerClient *client) {
  if (!client) return EDGE_SER_ERR_ARGUMENT;
  if (client->fd >= 0) return fail(client, EDGE_SER_ERR_STATE, "already connected to %s", client->uri);
  int status;
  if (strncmp(client->uri, "unix://", 7) == 0) status = connect_unix(client, client->uri + 7);
  else if (strncmp(client->uri, "tcp://", 6) == 0) status = connect_tcp(client, client->uri + 6);
  else
    return fail(client, EDGE_SER_ERR_ARGUMENT, "unknown URI %s: use unix:///path/to/socket or tcp://host:port",
                client->uri);
  if (status == EDGE_SER_OK) set_timeouts(client->fd, client->timeout_ms);
  return status;
}

/* ---- sending ------------------------------------------------------------------------------------ */

static int take_in(EdgeSerClient *client, int timeout_ms);

static int send_all(EdgeSerClient *client, const void *bytes, size_t size) {
  const char *p = bytes;
  while (size > 0) {
    ssize_t n = send(client->fd, p, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return fail(client, EDGE_SER_ERR_TIMEOUT, "the server took no audio for %d ms", client->timeout_ms);
    if (n <= 0) return fail(client, EDGE_SER_ERR_IO, "sending to %s: %s", client->uri, strerror(errno));
    p += n;
    size -= (size_t)n;
  }
  return EDGE_SER_OK;
}

/* One event: header line with data_length and payload_length, data, payload. */
static int send_event(EdgeSerClient *client, const char *type, const char *data, const void *payload,
                      size_t payload_bytes) {
  char header[256];
  size_t data_bytes = data ? strlen(data) : 0;
  int n = snprintf(header, sizeof header, "{\"type\":\"%s\",\"data_length\":%zu,\"payload_length\":%zu}\n", type,
                   data_bytes, payload_bytes);
  if (n < 0 || (size_t)n >= sizeof header) return fail(client, EDGE_SER_ERR_ARGUMENT, "event type too long");
  int status = send_all(client, header, (size_t)n);
  if (status == EDGE_SER_OK && data_bytes) status = send_all(client, data, data_bytes);
  if (status == EDGE_SER_OK && payload_bytes) status = send_all(client, payload, payload_bytes);
  return status;
}

static int need_connection(EdgeSerClient *client) {
  if (!client) return EDGE_SER_ERR_ARGUMENT;
  if (client->fd < 0) return fail(client, EDGE_SER_ERR_STATE, "not connected: call EdgeSerClientConnect first");
  return EDGE_SER_OK;
}

static const char *mode_name(EdgeSerMode mode) {
  switch (mode) {
    case EDGE_SER_MODE_PUSH_TO_TALK: return "push-to-talk";
    case EDGE_SER_MODE_CLIP: return "clip";
    default: return "listen";
  }
}

int EdgeSerClientStart(EdgeSerClient *client, const EdgeSerStreamConfig *config) {
  int status = need_connection(client);
  if (status != EDGE_SER_OK) return status;
  if (!config) return fail(client, EDGE_SER_ERR_ARGUMENT, "config is NULL");
  if (client->started) return fail(client, EDGE_SER_ERR_STATE, "a request is open: call EdgeSerClientStop first");
  int rate = config->sample_rate ? config->sample_rate : 16000;
  int width = config->sample_width ? config->sample_width : 2;
  int channels = config->channels ? config->channels : 1;
  if (rate < 1000 || rate > 768000) return fail(client, EDGE_SER_ERR_ARGUMENT, "sample_rate must be 1000 to 768000 Hz, got %d", rate);
  if (width != 2 && width != 4) return fail(client, EDGE_SER_ERR_ARGUMENT, "sample_width must be 2 or 4 bytes, got %d", width);
  if (channels < 1 || channels > 8) return fail(client, EDGE_SER_ERR_ARGUMENT, "channels must be 1 to 8, got %d", channels);
  if (config->mode < EDGE_SER_MODE_LISTEN || config->mode > EDGE_SER_MODE_CLIP)
    return fail(client, EDGE_SER_ERR_ARGUMENT, "mode must be listen, push-to-talk or clip, got %d", (int)config->mode);
  char request[64];
  snprintf(request, sizeof request, "{\"mode\":\"%s\"}", mode_name(config->mode));
  snprintf(client->format, sizeof client->format, "{\"rate\":%d,\"width\":%d,\"channels\":%d}", rate, width, channels);
  status = send_event(client, "classify", request, NULL, 0);
  if (status == EDGE_SER_OK) status = send_event(client, "audio-start", client->format, NULL, 0);
  if (status != EDGE_SER_OK) return status;
  client->started = 1;
  client->frame = width * channels;
  return EDGE_SER_OK;
}

int EdgeSerClientPush(EdgeSerClient *client, const void *pcm, size_t bytes) {
  int status = need_connection(client);
  if (status != EDGE_SER_OK) return status;
  if (!client->started) return fail(client, EDGE_SER_ERR_STATE, "no request open: call EdgeSerClientStart first");
  if (!pcm && bytes) return fail(client, EDGE_SER_ERR_ARGUMENT, "pcm is NULL");
  if (bytes % (size_t)client->frame)
    return fail(client, EDGE_SER_ERR_ARGUMENT, "%zu bytes is not a whole number of %d-byte frames", bytes,
                client->frame);
  status = take_in(client, 0); /* results that arrived: never let the server's replies back up */
  if (status < 0) return status;
  if (bytes == 0) return EDGE_SER_OK;
  return send_event(client, "audio-chunk", client->format, pcm, bytes);
}

int EdgeSerClientMarkEnd(EdgeSerClient *client) {
  int status = need_connection(client);
  if (status != EDGE_SER_OK) return status;
  if (!client->started) return fail(client, EDGE_SER_ERR_STATE, "no request open: call EdgeSerClientStart first");
  return send_event(client, "voice-stopped", NULL, NULL, 0);
}

int EdgeSerClientStop(EdgeSerClient *client) {
  int status = need_connection(client);
  if (status != EDGE_SER_OK) return status;
  if (!client->started) return fail(client, EDGE_SER_ERR_STATE, "no request open: call EdgeSerClientStart first");
  client->started = 0;
  return send_event(client, "audio-stop", NULL, NULL, 0);
}

/* ---- receiving ---------------------------------------------------------------------------------- */

void EdgeSerDestroyEvent(const EdgeSerEvent *event) {
  if (!event) return;
  Owned *owned = (Owned *)event;
  for (int i = 0; owned->labels && i < owned->result.num_labels; i++) free(owned->labels[i]);
  free(owned->labels);
  free(owned->probabilities);
  free(owned->type_name);
  free(owned->json);
  free(owned->error_code);
  free(owned->error_text);
  free(owned);
}

static double number_or(const cJSON *object, const char *key, double otherwise) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
  return cJSON_IsNumber(item) ? item->valuedouble : otherwise;
}

static int flag_or(const cJSON *object, const char *key) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
  return cJSON_IsBool(item) ? cJSON_IsTrue(item) : -1;
}

static char *string_or_null(const cJSON *object, const char *key) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
  return cJSON_IsString(item) ? copy_string(item->valuestring) : NULL;
}

/* Fill owned->result from an emotion event's data; 0, or -1 when the data is not a result. */
static int parse_result(Owned *owned, const cJSON *data) {
  const cJSON *label = cJSON_GetObjectItemCaseSensitive(data, "label");
  const cJSON *probabilities = cJSON_GetObjectItemCaseSensitive(data, "probabilities");
  if (!cJSON_IsString(label) || !cJSON_IsObject(probabilities)) return -1;
  int count = cJSON_GetArraySize(probabilities);
  owned->labels = calloc((size_t)(count > 0 ? count : 1), sizeof *owned->labels);
  owned->probabilities = calloc((size_t)(count > 0 ? count : 1), sizeof *owned->probabilities);
  if (!owned->labels || !owned->probabilities) return -1;
  EdgeSerResult *result = &owned->result;
  const cJSON *item;
  cJSON_ArrayForEach(item, probabilities) {
    if (!cJSON_IsNumber(item) || !(owned->labels[result->num_labels] = copy_string(item->string))) return -1;
    owned->probabilities[result->num_labels] = (float)item->valuedouble;
    if (strcmp(item->string, label->valuestring) == 0) result->label = owned->labels[result->num_labels];
    result->num_labels++;
  }
  if (!result->label) return -1;
  result->labels = (const char *const *)owned->labels;
  result->probabilities = owned->probabilities;
  result->start = number_or(data, "start", -1.0);
  result->end = number_or(data, "end", -1.0);
  result->exit_layer = (int32_t)number_or(data, "exit_layer", -1.0);
  result->latency_ms = number_or(data, "latency_ms", -1.0);
  result->budget_met = flag_or(data, "budget_met");
  result->speech = flag_or(data, "speech");
  return 0;
}

/* One event from its header and data text (data_text: the data block, or NULL). */
static int make_event(EdgeSerClient *client, cJSON *header, const char *data_text, size_t data_length) {
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(header, "type");
  if (!cJSON_IsString(type)) return fail(client, EDGE_SER_ERR_PROTOCOL, "an event without a type from the server");
  cJSON *data = cJSON_GetObjectItemCaseSensitive(header, "data");
  cJSON *block = NULL;
  if (data_text) {
    block = cJSON_ParseWithLength(data_text, data_length);
    if (!cJSON_IsObject(block)) {
      cJSON_Delete(block);
      return fail(client, EDGE_SER_ERR_PROTOCOL, "the server's %s event has a data block that is not a JSON object",
                  type->valuestring);
    }
    if (cJSON_IsObject(data)) { /* header data and block merge, the block winning (as Wyoming's reader does) */
      cJSON *item;
      cJSON_ArrayForEach(item, data) {
        if (!cJSON_HasObjectItem(block, item->string)) cJSON_AddItemToObject(block, item->string, cJSON_Duplicate(item, 1));
      }
    }
    data = block;
  }
  Owned *owned = calloc(1, sizeof *owned);
  QueueItem *node = calloc(1, sizeof *node);
  int status = EDGE_SER_OK;
  if (!owned || !node || !(owned->type_name = copy_string(type->valuestring))) {
    status = EDGE_SER_ERR_NOMEM;
  } else {
    if (data_text && data == block && !cJSON_GetObjectItemCaseSensitive(header, "data")) {
      owned->json = malloc(data_length + 1); /* exactly as sent */
      if (owned->json) {
        memcpy(owned->json, data_text, data_length);
        owned->json[data_length] = '\0';
      }
    } else {
      owned->json = cJSON_IsObject(data) ? cJSON_PrintUnformatted(data) : copy_string("{}");
    }
    if (!owned->json) status = EDGE_SER_ERR_NOMEM;
  }
  if (status == EDGE_SER_OK) {
    EdgeSerEvent *event = &owned->event;
    event->type_name = owned->type_name;
    event->json = owned->json;
    event->timestamp_ms = -1;
    const char *name = owned->type_name;
    if (strcmp(name, "emotion") == 0) {
      event->type = EDGE_SER_EVENT_RESULT;
      if (parse_result(owned, data) != 0)
        status = fail(client, EDGE_SER_ERR_PROTOCOL, "the server sent an emotion event without a label and probabilities");
      event->result = &owned->result;
    } else if (strcmp(name, "voice-started") == 0 || strcmp(name, "voice-stopped") == 0) {
      event->type = strcmp(name, "voice-started") == 0 ? EDGE_SER_EVENT_VOICE_STARTED : EDGE_SER_EVENT_VOICE_STOPPED;
      event->timestamp_ms = (int64_t)number_or(data, "timestamp", -1.0);
    } else if (strcmp(name, "error") == 0) {
      event->type = EDGE_SER_EVENT_ERROR;
      owned->error_code = string_or_null(data, "code");
      owned->error_text = string_or_null(data, "text");
      if (!owned->error_code) owned->error_code = copy_string("");
      if (!owned->error_text) owned->error_text = copy_string("");
      event->error_code = owned->error_code;
      event->error_text = owned->error_text;
    } else if (strcmp(name, "emotion-stop") == 0) {
      event->type = EDGE_SER_EVENT_DONE;
    } else {
      event->type = EDGE_SER_EVENT_OTHER;
    }
  }
  cJSON_Delete(block);
  if (status != EDGE_SER_OK) {
    if (owned) EdgeSerDestroyEvent(&owned->event);
    free(node);
    return status == EDGE_SER_ERR_NOMEM ? fail(client, status, "out of memory reading an event") : status;
  }
  node->owned = owned;
  if (client->tail) client->tail->next = node;
  else client->head = node;
  client->tail = node;
  return EDGE_SER_OK;
}

/* Cut whole events off the input buffer into the queue. */
static int cut_events(EdgeSerClient *client) {
  for (;;) {
    char *newline = memchr(client->in, '\n', client->in_len);
    if (!newline) {
      if (client->in_len > MAX_EVENT_BYTES)
        return fail(client, EDGE_SER_ERR_PROTOCOL, "a header line from the server is longer than %d bytes", MAX_EVENT_BYTES);
      return EDGE_SER_OK;
    }
    size_t line = (size_t)(newline - client->in);
    cJSON *header = cJSON_ParseWithLength(client->in, line);
    if (!cJSON_IsObject(header)) {
      cJSON_Delete(header);
      return fail(client, EDGE_SER_ERR_PROTOCOL, "the server sent a header that is not a JSON object");
    }
    double data_length = number_or(header, "data_length", 0), payload_length = number_or(header, "payload_length", 0);
    if (data_length < 0 || payload_length < 0 || data_length + payload_length > MAX_EVENT_BYTES) {
      cJSON_Delete(header);
      return fail(client, EDGE_SER_ERR_PROTOCOL, "the server announced an event of more than %d bytes", MAX_EVENT_BYTES);
    }
    size_t total = line + 1 + (size_t)data_length + (size_t)payload_length;
    if (client->in_len < total) {
      cJSON_Delete(header);
      return EDGE_SER_OK; /* the rest has not arrived */
    }
    int status = make_event(client, header, data_length > 0 ? client->in + line + 1 : NULL, (size_t)data_length);
    cJSON_Delete(header);
    if (status != EDGE_SER_OK) return status;
    memmove(client->in, client->in + total, client->in_len - total);
    client->in_len -= total;
  }
}

/* Read what the server has sent, waiting up to timeout_ms for the first bytes (0: none, -1: forever). */
static int take_in(EdgeSerClient *client, int timeout_ms) {
  struct pollfd watch = {client->fd, POLLIN, 0};
  int ready = poll(&watch, 1, timeout_ms);
  if (ready < 0 && errno == EINTR) return 0;
  if (ready < 0) return fail(client, EDGE_SER_ERR_IO, "poll: %s", strerror(errno));
  if (ready == 0) return 0;
  if (client->in_cap - client->in_len < READ_BYTES) {
    size_t cap = client->in_cap ? 2 * client->in_cap : 2 * READ_BYTES;
    char *grown = realloc(client->in, cap);
    if (!grown) return fail(client, EDGE_SER_ERR_NOMEM, "out of memory reading from the server");
    client->in = grown;
    client->in_cap = cap;
  }
  ssize_t n = recv(client->fd, client->in + client->in_len, client->in_cap - client->in_len, 0);
  if (n < 0 && errno == EINTR) return 0;
  if (n < 0) return fail(client, EDGE_SER_ERR_IO, "receiving from %s: %s", client->uri, strerror(errno));
  if (n == 0) return fail(client, EDGE_SER_ERR_IO, "the server at %s closed the connection", client->uri);
  client->in_len += (size_t)n;
  int status = cut_events(client);
  return status < 0 ? status : 1;
}

static long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int EdgeSerClientNextEvent(EdgeSerClient *client, int32_t timeout_ms, const EdgeSerEvent **event) {
  int status = need_connection(client);
  if (status != EDGE_SER_OK) return status;
  if (!event) return fail(client, EDGE_SER_ERR_ARGUMENT, "event is NULL");
  *event = NULL;
  long long deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
  while (!client->head) {
    int wait = timeout_ms < 0 ? -1 : (int)(deadline - now_ms());
    if (timeout_ms >= 0 && wait < 0) wait = 0;
    status = take_in(client, wait);
    if (status < 0 && !client->head) return status;
    if (status == 0 && timeout_ms >= 0 && now_ms() >= deadline && !client->head) return 0;
  }
  QueueItem *item = client->head;
  client->head = item->next;
  if (!client->head) client->tail = NULL;
  *event = &item->owned->event;
  free(item);
  return 1;
}
