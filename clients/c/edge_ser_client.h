/*
 * edge_ser_client.h: a small C99 client for `edge-ser serve` (Wyoming protocol over a local socket).
 *
 * One model runs in one service on the device; every app links this library and streams its audio
 * to it. The API follows sherpa-onnx's c-api.h: opaque handles, create/destroy pairs, zero-initialised
 * config structs (a 0 field takes its default), negative status codes and a last-error string.
 *
 *   EdgeSerClientConfig config = {0};
 *   config.uri = "unix:///run/edge-ser/edge-ser.sock";
 *   EdgeSerClient *client = EdgeSerCreateClient(&config);
 *   if (EdgeSerClientConnect(client) != EDGE_SER_OK) { puts(EdgeSerClientLastError(client)); ... }
 *   EdgeSerStreamConfig stream = {0};            // 16 kHz, 16-bit, mono, endpointing by the server
 *   EdgeSerClientStart(client, &stream);
 *   EdgeSerClientPush(client, pcm, bytes);       // as audio arrives, any number of times
 *   const EdgeSerEvent *event;
 *   while (EdgeSerClientNextEvent(client, 0, &event) == 1) { ...; EdgeSerDestroyEvent(event); }
 *   EdgeSerClientStop(client);                   // then read events until EDGE_SER_EVENT_DONE
 *   EdgeSerDestroyClient(client);
 *
 * A client handle is not thread-safe: use it from one thread at a time (one handle per stream).
 */
#ifndef EDGE_SER_CLIENT_H_
#define EDGE_SER_CLIENT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGE_SER_CLIENT_VERSION "0.1.0"

/* Status codes: EDGE_SER_OK, or a negative code; EdgeSerClientLastError says more. */
enum {
  EDGE_SER_OK = 0,
  EDGE_SER_ERR_ARGUMENT = -1, /* a bad argument: NULL, an unknown URI scheme, a width other than 2 or 4 */
  EDGE_SER_ERR_CONNECT = -2,  /* no server at the URI */
  EDGE_SER_ERR_IO = -3,       /* the connection failed or the server closed it */
  EDGE_SER_ERR_PROTOCOL = -4, /* the server sent something that is not a Wyoming event */
  EDGE_SER_ERR_TIMEOUT = -5,  /* a write did not complete within timeout_ms */
  EDGE_SER_ERR_NOMEM = -6,
  EDGE_SER_ERR_STATE = -7     /* a call out of order: push before start, start twice, no connection */
};

typedef struct EdgeSerClient EdgeSerClient;

typedef struct EdgeSerClientConfig {
  const char *uri;    /* unix:///path/to/socket or tcp://host:port (required) */
  int32_t timeout_ms; /* connecting and each write; 0: 10000 */
} EdgeSerClientConfig;

typedef enum EdgeSerMode {
  EDGE_SER_MODE_LISTEN = 0,       /* the server finds utterances (its endpointer) */
  EDGE_SER_MODE_PUSH_TO_TALK = 1, /* the app marks each utterance's end (EdgeSerClientMarkEnd, Stop) */
  EDGE_SER_MODE_CLIP = 2          /* all audio until Stop is one clip, classified as a file would be */
} EdgeSerMode;

typedef struct EdgeSerStreamConfig {
  int32_t sample_rate;  /* Hz; 0: 16000 (any rate is resampled by the server) */
  int32_t sample_width; /* bytes per sample, signed little-endian PCM: 2 or 4; 0: 2 */
  int32_t channels;     /* interleaved; averaged by the server; 0: 1 */
  EdgeSerMode mode;
} EdgeSerStreamConfig;

typedef enum EdgeSerEventType {
  EDGE_SER_EVENT_RESULT = 1,    /* one utterance (or clip) classified: `result` */
  EDGE_SER_EVENT_VOICE_STARTED, /* the server's endpointer found speech starting at timestamp_ms */
  EDGE_SER_EVENT_VOICE_STOPPED, /* ... and its end at timestamp_ms */
  EDGE_SER_EVENT_ERROR,         /* the server refused something: error_code, error_text; the stream goes on
                                   unless the connection closes */
  EDGE_SER_EVENT_DONE,          /* after Stop: everything of the request has been sent */
  EDGE_SER_EVENT_OTHER          /* any other event (info, pong ...): see type_name and json */
} EdgeSerEventType;

typedef struct EdgeSerResult {
  const char *label;                /* the top label */
  int32_t num_labels;
  const char *const *labels;        /* num_labels, in the model's order */
  const float *probabilities;       /* num_labels */
  double start, end;                /* seconds from the start of the stream; -1 for a clip */
  int32_t exit_layer;               /* the exit that answered */
  double latency_ms;                /* the server's work after the end of the utterance */
  int32_t budget_met;               /* 1 met, 0 missed, -1 no budget */
  int32_t speech;                   /* 1 speech, 0 no speech (a clip), -1 not judged */
} EdgeSerResult;

typedef struct EdgeSerEvent {
  EdgeSerEventType type;
  const char *type_name;       /* the Wyoming type, e.g. "emotion" */
  const char *json;            /* the event's data as the server sent it: one JSON object */
  int64_t timestamp_ms;        /* voice events; -1 otherwise */
  const EdgeSerResult *result; /* EDGE_SER_EVENT_RESULT only, else NULL */
  const char *error_code;      /* EDGE_SER_EVENT_ERROR only, else NULL */
  const char *error_text;      /* EDGE_SER_EVENT_ERROR only, else NULL */
} EdgeSerEvent;

/* A client for config->uri; connects nothing yet. NULL when config or its uri is NULL, or without memory. */
EdgeSerClient *EdgeSerCreateClient(const EdgeSerClientConfig *config);
void EdgeSerDestroyClient(EdgeSerClient *client);

/* Connect to the server. */
int EdgeSerClientConnect(EdgeSerClient *client);

/* The last error's message for this client, or "" (valid until the next call on it). */
const char *EdgeSerClientLastError(const EdgeSerClient *client);

/* A status code's name, e.g. "connection failed". */
const char *EdgeSerStatusString(int status);

/* Begin a request (Wyoming classify + audio-start). */
int EdgeSerClientStart(EdgeSerClient *client, const EdgeSerStreamConfig *config);

/* Send PCM: bytes must be a whole number of frames (sample_width * channels); events that have arrived are
 * taken in meanwhile, so a client that only pushes never blocks the server. */
int EdgeSerClientPush(EdgeSerClient *client, const void *pcm, size_t bytes);

/* Push-to-talk: the utterance ends here (the next begins with the next push). */
int EdgeSerClientMarkEnd(EdgeSerClient *client);

/* End the request (audio-stop): the server classifies what is left, then sends EDGE_SER_EVENT_DONE. */
int EdgeSerClientStop(EdgeSerClient *client);

/* The next event: waits up to timeout_ms (0: only what has arrived; -1: until one comes). Returns 1 with
 * *event set (free it with EdgeSerDestroyEvent), 0 when none came in time, or a negative status. */
int EdgeSerClientNextEvent(EdgeSerClient *client, int32_t timeout_ms, const EdgeSerEvent **event);
void EdgeSerDestroyEvent(const EdgeSerEvent *event);

#ifdef __cplusplus
}
#endif

#endif /* EDGE_SER_CLIENT_H_ */
