/*
 * listen: raw PCM on standard input -> `edge-ser serve` -> one JSON line per utterance on standard output.
 * The C twin of `edge-ser listen - --json`:
 *
 *   arecord -t raw -f S16_LE -r 16000 -c 1 | build/listen --uri unix:///run/edge-ser/edge-ser.sock
 *
 * Errors the server reports go to standard error, one line each, and listening goes on. It ends at the end of
 * input, or on Ctrl-C / SIGTERM, after the server has classified the utterance in progress. Exit status: 0;
 * 1 when the server refused something or the input ended mid-sample; 2 for a bad option or no server;
 * 130 when interrupted.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edge_ser_client.h"

#define CHUNK_BYTES 3200 /* 100 ms of 16 kHz 16-bit mono */

static volatile sig_atomic_t interrupted = 0;

static void on_signal(int signum) {
  (void)signum;
  interrupted = 1;
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: listen --uri URI [--rate HZ] [--width 2|4] [--channels N] [--mode listen|push-to-talk|clip]\n"
          "                        [--events]\n"
          "Streams raw signed little-endian PCM from standard input to `edge-ser serve` at URI\n"
          "(unix:///path or tcp://host:port) and prints each result as one JSON line.\n"
          "  --rate HZ      sample rate of the input (default 16000)\n"
          "  --width BYTES  2 for S16_LE (default), 4 for S32_LE\n"
          "  --channels N   interleaved channels (default 1)\n"
          "  --mode MODE    listen: the server finds utterances (default); push-to-talk or clip: all input is one\n"
          "  --events       also print voice-started / voice-stopped as JSON lines\n");
}

static int parse_int(const char *flag, const char *text, int low, int high, int *out) {
  char *end = NULL;
  errno = 0;
  long value = text ? strtol(text, &end, 10) : 0;
  if (!text || errno || end == text || *end != '\0' || value < low || value > high) {
    fprintf(stderr, "listen: %s takes a whole number from %d to %d, got %s\n", flag, low, high, text ? text : "nothing");
    return -1;
  }
  *out = (int)value;
  return 0;
}

/* Print what the server sent; returns 1 at the end of the request, -1 for a refusal, 0 otherwise. */
static int report(const EdgeSerEvent *event, int print_voice) {
  switch (event->type) {
    case EDGE_SER_EVENT_RESULT:
      printf("%s\n", event->json); /* the server's JSON, as `edge-ser listen --json` prints it */
      fflush(stdout);
      return 0;
    case EDGE_SER_EVENT_VOICE_STARTED:
    case EDGE_SER_EVENT_VOICE_STOPPED:
      if (print_voice) {
        printf("{\"event\": \"%s\", \"timestamp_ms\": %lld}\n", event->type_name, (long long)event->timestamp_ms);
        fflush(stdout);
      }
      return 0;
    case EDGE_SER_EVENT_ERROR:
      fprintf(stderr, "listen: the server refused: %s (%s)\n", event->error_text, event->error_code);
      return -1;
    case EDGE_SER_EVENT_DONE:
      return 1;
    default:
      return 0;
  }
}

int main(int argc, char **argv) {
  const char *uri = NULL;
  EdgeSerStreamConfig stream = {0};
  int rate = 16000, width = 2, channels = 1, print_voice = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(arg, "--uri") == 0 && value) {
      uri = value;
      i++;
    } else if (strcmp(arg, "--rate") == 0) {
      if (parse_int("--rate", value, 1000, 768000, &rate)) return 2;
      i++;
    } else if (strcmp(arg, "--width") == 0) {
      if (parse_int("--width", value, 2, 4, &width) || width == 3) {
        if (width == 3) fprintf(stderr, "listen: --width takes 2 or 4\n");
        return 2;
      }
      i++;
    } else if (strcmp(arg, "--channels") == 0) {
      if (parse_int("--channels", value, 1, 8, &channels)) return 2;
      i++;
    } else if (strcmp(arg, "--mode") == 0 && value) {
      if (strcmp(value, "listen") == 0) stream.mode = EDGE_SER_MODE_LISTEN;
      else if (strcmp(value, "push-to-talk") == 0) stream.mode = EDGE_SER_MODE_PUSH_TO_TALK;
      else if (strcmp(value, "clip") == 0) stream.mode = EDGE_SER_MODE_CLIP;
      else {
        fprintf(stderr, "listen: --mode takes listen, push-to-talk or clip, got %s\n", value);
        return 2;
      }
      i++;
    } else if (strcmp(arg, "--events") == 0) {
      print_voice = 1;
    } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      usage(stdout);
      return 0;
    } else {
      fprintf(stderr, "listen: unknown or incomplete option %s (see --help)\n", arg);
      return 2;
    }
  }
  if (!uri) {
    fprintf(stderr, "listen: --uri is required, e.g. --uri unix:///run/edge-ser/edge-ser.sock\n");
    return 2;
  }
  stream.sample_rate = rate;
  stream.sample_width = width;
  stream.channels = channels;

  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = on_signal; /* no SA_RESTART: a blocked read returns, and we stop */
  sigaction(SIGINT, &action, NULL);
  sigaction(SIGTERM, &action, NULL);

  EdgeSerClientConfig config = {0};
  config.uri = uri;
  EdgeSerClient *client = EdgeSerCreateClient(&config);
  if (!client) {
    fprintf(stderr, "listen: out of memory\n");
    return 2;
  }
  if (EdgeSerClientConnect(client) != EDGE_SER_OK || EdgeSerClientStart(client, &stream) != EDGE_SER_OK) {
    fprintf(stderr, "listen: %s\n", EdgeSerClientLastError(client));
    EdgeSerDestroyClient(client);
    return 2;
  }

  int frame = width * channels, problems = 0, done = 0, failed = 0;
  unsigned char buffer[CHUNK_BYTES + 8];
  size_t carry = 0; /* bytes of a frame that has not fully arrived */
  while (!interrupted && !failed) {
    ssize_t n = read(STDIN_FILENO, buffer + carry, CHUNK_BYTES);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      fprintf(stderr, "listen: reading standard input: %s\n", strerror(errno));
      problems = 1;
      break;
    }
    if (n == 0) break;
    size_t have = carry + (size_t)n, whole = have / (size_t)frame * (size_t)frame;
    if (EdgeSerClientPush(client, buffer, whole) != EDGE_SER_OK) {
      failed = 1;
      break;
    }
    carry = have - whole;
    memmove(buffer, buffer + whole, carry);
    const EdgeSerEvent *event;
    while (EdgeSerClientNextEvent(client, 0, &event) == 1) {
      problems |= report(event, print_voice) < 0;
      EdgeSerDestroyEvent(event);
    }
  }
  if (carry && !failed) {
    fprintf(stderr, "listen: standard input ended mid-sample (%zu stray byte(s)); the samples before them were used\n", carry);
    problems = 1;
  }
  if (!failed && EdgeSerClientStop(client) != EDGE_SER_OK) failed = 1;
  while (!failed && !done) {
    const EdgeSerEvent *event;
    int got = EdgeSerClientNextEvent(client, -1, &event);
    if (got < 0) {
      failed = 1;
      break;
    }
    if (got == 1) {
      int outcome = report(event, print_voice);
      problems |= outcome < 0;
      done = outcome == 1;
      EdgeSerDestroyEvent(event);
    }
  }
  if (failed) fprintf(stderr, "listen: %s\n", EdgeSerClientLastError(client));
  EdgeSerDestroyClient(client);
  if (failed) return 2;
  if (interrupted) return 130;
  return problems ? 1 : 0;
}
