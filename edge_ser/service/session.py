"""One client's conversation with the service: Wyoming events in, steps out (no sockets, no event loop).

A request is optional `classify` (its mode), then `audio-start`, `audio-chunk`s, `audio-stop`:

- listen (default): the endpointer finds utterances (a Classifier.stream); voice-started / voice-stopped
  as it decides, one `emotion` per utterance.
- push-to-talk: the client's own boundaries; a `voice-stopped` from the client ends an utterance, and
  audio-stop ends the last (a stream with endpoint=None).
- clip: the whole audio is one clip, classified at audio-stop as `edge-ser classify` would (windows,
  the no-speech check), held up to Limits.clip_seconds.

After audio-stop the server sends what is left and then `emotion-stop`: nothing more for this request.
Everything here that checks a client's event runs on the event loop and is cheap; every call into the
model is a job (Step.job) that the server runs off the loop, one client's jobs in the order they came.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from wyoming.event import Event
from wyoming.error import Error
from wyoming.ping import Pong
from wyoming.vad import VoiceStarted, VoiceStopped

from ..audio import MAX_CHANNELS
from ..classifier import Classifier
from ..endpoint import EndpointOptions
from ..errors import AudioError, BudgetError, EdgeSerError
from ..options import RATE_RULE, RunOptions, is_rate
from ..runner import Result
from ..stream import Stream
from .protocol import Limits, ProtocolError

MODES = ("listen", "push-to-talk", "clip")
WIDTHS = {2: "<i2", 4: "<i4"}  # bytes per sample -> signed little-endian PCM (Wyoming's audio is PCM)
RESULT_EVENT = "emotion"  # one per utterance (or clip): what `edge-ser listen --json` prints
DONE_EVENT = "emotion-stop"  # after audio-stop, once everything of the request has been sent


@dataclass
class Step:
    """What the server does with one event: send `reply` now (in order after earlier steps' output), run `job`
    off the event loop and send the events it returns, counting `cost` bytes of audio as held meanwhile."""

    reply: list[Event] = field(default_factory=list)
    job: Callable[[], list[Event]] | None = None
    cost: int = 0


def error(text: str, code: str) -> Event:
    return Error(text=text, code=code).event()


def result_event(result: Result) -> Event:
    return Event(type=RESULT_EVENT, data=result.to_dict())


def _ms(seconds: float) -> int:
    return round(1000 * seconds)


@dataclass(frozen=True)
class AudioFormat:
    rate: int
    width: int
    channels: int

    @classmethod
    def from_data(cls, data: dict, what: str) -> AudioFormat:
        rate, width, channels = data.get("rate"), data.get("width"), data.get("channels")
        if not is_rate(rate):
            raise ProtocolError(f"{what}: rate must be {RATE_RULE}, got {rate!r}", "bad-audio")
        if width not in WIDTHS or isinstance(width, bool):
            raise ProtocolError(f"{what}: width must be 2 (16-bit) or 4 (32-bit PCM), got {width!r}", "bad-audio")
        if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
            raise ProtocolError(f"{what}: channels must be a whole number from 1 to {MAX_CHANNELS}, got {channels!r}",
                                "bad-audio")
        return cls(int(rate), width, channels)

    def samples(self, payload: bytes) -> np.ndarray:
        """Mono float32 samples of a chunk's PCM (channels averaged after scaling)."""
        frame = self.width * self.channels
        if len(payload) % frame:
            raise ProtocolError(f"audio-chunk of {len(payload)} bytes is not a whole number of {self.channels}-channel "
                                f"{8 * self.width}-bit samples ({frame} bytes each); the chunk was dropped", "bad-audio")
        pcm = np.frombuffer(payload, WIDTHS[self.width]).reshape(-1, self.channels)
        return (pcm.astype(np.float32) / float(np.iinfo(pcm.dtype).max)).mean(axis=1, dtype=np.float32)


class Session:
    """The state of one connection: at most one request open at a time."""

    def __init__(self, classifier: Classifier, run: RunOptions, endpoint: EndpointOptions, limits: Limits,
                 info: Event):
        self.classifier, self.run, self.endpoint, self.limits, self.info = classifier, run, endpoint, limits, info
        self.mode = "listen"  # of the next request
        self.format: AudioFormat | None = None  # set between audio-start and audio-stop
        self.stream: Stream | None = None  # made by the audio-start job, used by later jobs (in order)
        self.clip: list[np.ndarray] = []  # a clip request's audio so far, at the model's rate
        self.clip_samples = 0  # ... and its length at the client's rate (what the limit counts)
        self.clip_refused = False
        self.clip_resampler = None  # soxr's streaming resampler, when the client's rate is not the model's

    # ---- on the event loop ------------------------------------------------------------------

    def on_event(self, event: Event) -> Step:
        """The step for one event; a ProtocolError that is not fatal becomes an error reply and the session goes on."""
        try:
            handler = getattr(self, "_on_" + event.type.replace("-", "_"), None)
            if handler is None:
                raise ProtocolError(f"unknown event type {event.type!r}; this server takes describe, ping, classify, "
                                    "audio-start, audio-chunk, audio-stop and (push-to-talk) voice-stopped",
                                    "unknown-event")
            return handler(event)
        except ProtocolError as err:
            if err.fatal:
                raise
            return Step(reply=[error(str(err), err.code)])

    def _on_describe(self, event: Event) -> Step:
        return Step(reply=[self.info])

    def _on_ping(self, event: Event) -> Step:
        return Step(reply=[Pong(text=event.data.get("text")).event()])

    def _on_classify(self, event: Event) -> Step:
        if self.format is not None:
            raise ProtocolError("classify inside a request: send it before audio-start", "unexpected-event")
        mode = event.data.get("mode", "listen")
        if mode not in MODES:
            raise ProtocolError(f"classify: mode must be one of {', '.join(MODES)}, got {mode!r}", "bad-request")
        self.mode = mode
        return Step()

    def _on_audio_start(self, event: Event) -> Step:
        if self.format is not None:
            raise ProtocolError("audio-start inside a request: send audio-stop first", "unexpected-event")
        self.format = AudioFormat.from_data(event.data, "audio-start")
        if self.mode == "clip":
            self.clip, self.clip_samples, self.clip_refused, self.clip_resampler = [], 0, False, None
            model_rate = self.classifier.manifest.sample_rate
            if self.format.rate != model_rate:  # held at the model's rate: a 768 kHz clip holds no more than 16 kHz
                import soxr

                self.clip_resampler = soxr.ResampleStream(self.format.rate, model_rate, 1, dtype="float32")
            return Step()
        endpoint = self.endpoint if self.mode == "listen" else None
        rate = self.format.rate

        def open_stream() -> list[Event]:
            try:
                self.stream = self.classifier.stream(rate, endpoint=endpoint, options=self.run)
            except EdgeSerError as err:
                self.stream = None
                return [error(f"cannot open a stream: {err}", "bad-request")]
            return []

        return Step(job=open_stream)

    def _on_audio_chunk(self, event: Event) -> Step:
        if self.format is None:
            raise ProtocolError("audio-chunk outside a request: send audio-start first", "unexpected-event")
        chunk = AudioFormat.from_data(event.data, "audio-chunk")
        if chunk != self.format:
            raise ProtocolError(f"audio-chunk at {chunk.rate} Hz, {chunk.width} bytes, {chunk.channels} channel(s) "
                                f"in a request that started at {self.format.rate} Hz, {self.format.width} bytes, "
                                f"{self.format.channels} channel(s): a format cannot change mid-stream; the chunk "
                                "was dropped", "bad-audio")
        samples = self.format.samples(event.payload or b"")
        if self.mode == "clip":
            return self._hold(samples)
        return Step(job=lambda: self._accept(samples), cost=len(event.payload or b""))

    def _hold(self, samples: np.ndarray) -> Step:
        if self.clip_refused:
            return Step()
        limit = round(self.limits.clip_seconds * self.format.rate)
        if self.clip_samples + samples.size > limit:
            self.clip, self.clip_refused = [], True
            return Step(reply=[error(f"the clip is longer than this server's limit of {self.limits.clip_seconds:g} s; "
                                     "it was dropped (use mode listen or push-to-talk for long audio)", "too-large")])
        self.clip.append(self.clip_resampler.resample_chunk(samples) if self.clip_resampler else samples)
        self.clip_samples += samples.size
        return Step()

    def _on_voice_stopped(self, event: Event) -> Step:
        if self.format is None or self.mode != "push-to-talk":
            raise ProtocolError("voice-stopped from a client marks the end of an utterance in a push-to-talk request "
                                "only", "unexpected-event")
        return Step(job=lambda: self._accept(np.zeros(0, np.float32), end=True))

    def _on_audio_stop(self, event: Event) -> Step:
        if self.format is None:
            raise ProtocolError("audio-stop outside a request: send audio-start first", "unexpected-event")
        step = self.finish()
        self.mode = "listen"
        return step

    def finish(self) -> Step:
        """End the open request (audio-stop, or the server stopping): its last results, then emotion-stop."""
        done = Event(type=DONE_EVENT)
        if self.format is None:
            return Step()
        self.format = None
        if self.mode == "clip":
            clip, refused, resampler = self.clip, self.clip_refused, self.clip_resampler
            self.clip, self.clip_samples, self.clip_resampler = [], 0, None
            if refused:
                return Step(reply=[done])
            if resampler is not None:
                clip.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            return Step(job=lambda: self._classify_clip(clip) + [done], cost=sum(c.nbytes for c in clip))
        return Step(job=lambda: self._flush() + [done])

    # ---- jobs: off the event loop, one session's in order --------------------------------------

    def _accept(self, samples: np.ndarray, end: bool = False) -> list[Event]:
        if self.stream is None:  # the stream could not be opened: that error was sent
            return []
        return self._collect(lambda: self.stream.accept(samples, end_of_utterance=end))

    def _flush(self) -> list[Event]:
        if self.stream is None:
            return []
        try:
            return self._collect(self.stream.flush)
        finally:
            self.stream = None

    def _collect(self, step: Callable[[], list[Result]]) -> list[Event]:
        """Voice events, then results, then the error of an utterance that was refused (the rest still count)."""
        problem: list[Event] = []
        try:
            results = step()
        except BudgetError as err:
            results, problem = err.results, [error(f"utterance refused: {err}", "budget")]
        except AudioError as err:
            results, problem = err.results, [error(str(err), "bad-audio")]
        voice = [VoiceStarted(timestamp=_ms(at)).event() if kind == "started" else VoiceStopped(timestamp=_ms(at)).event()
                 for kind, at in self.stream.take_voice_events()]
        return voice + [result_event(r) for r in results] + problem

    def _classify_clip(self, clip: list[np.ndarray]) -> list[Event]:
        samples = np.concatenate(clip) if clip else np.zeros(0, np.float32)
        rate = self.classifier.manifest.sample_rate
        try:
            return [result_event(self.classifier.classify(samples, rate, options=self.run))]
        except BudgetError as err:
            return [error(f"clip refused: {err}", "budget")]
        except AudioError as err:
            return [error(str(err), "bad-audio")]
