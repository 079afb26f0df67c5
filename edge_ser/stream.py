"""Live audio: a stream takes chunks of any size and returns a Result per utterance.

    stream = classifier.stream(sample_rate=16000, budget_ms=50)
    for chunk in microphone:
        for result in stream.accept(chunk):      # utterances that ended inside this chunk
            print(result.start, result.end, result.label)
    results = stream.flush()                     # the end of the stream: what is left

Utterances are found by the endpointer (edge_ser.endpoint, its detector from edge_ser.vad), or marked by the app
(`accept(chunk, end_of_utterance=True)`, push-to-talk; `endpoint=None` turns the detector
off so that everything between two marks is one utterance).

Where the manifest says the encoder streams exactly (the export checked chunked against
whole-clip output), the CNN encoder runs on each chunk as it arrives, with the overlap its
receptive field needs, so at the end of an utterance only the last frames, the context
(positional convolution, which looks over the whole utterance), the blocks up to the exit
and the head remain: `Result.latency_ms` is that work, from the moment the end is decided,
and is what a budget covers. Other models keep the utterance's samples and run the whole
chain at its end (exact, and slower). An utterance longer than the classifier's window is
classified window by window as its windows become final (audio.window_bounds, the rule
files and arrays follow), so memory stays bounded and the answer is a file's answer.

A stream is one microphone: its methods may be called from any thread, one call at a time
(a lock serialises them). Several streams may share one Classifier.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from .audio import to_mono
from .endpoint import DEFAULT_ENDPOINT, Boundary, EndpointOptions, Endpointer
from .errors import AudioError, BudgetError, EdgeSerError, StreamError
from .options import RATE_RULE, RunOptions, is_rate

if TYPE_CHECKING:
    from .runner import ChainRunner, Result

MAX_PIECE_SECONDS = 0.5  # a large chunk is walked in pieces of this length, so the look-back buffer stays small


def chunk_to_float(samples: object, what: str = "chunk") -> np.ndarray:
    """A chunk as mono float32 (audio.to_mono: float as it is, 16/32-bit PCM scaled, channels averaged)."""
    return to_mono(samples, what)


class IncrementalEncoder:
    """Runs the encoder segment on audio as it arrives; its frames equal a whole-clip run's.

    Frame t of the CNN (no padding) reads samples [t*stride, t*stride + receptive). Each call
    runs the frames whose samples have all arrived and keeps the overlap for the next. Frames
    of windows already classified are dropped (drop_before), so a long utterance holds at
    most about a window and a half of them.
    """

    def __init__(self, runner: ChainRunner):
        manifest = runner.manifest
        self._engine = runner.engine
        self._segment = manifest.chain[0]
        self._stride = manifest.samples_per_frame
        self._receptive = manifest.receptive_samples
        self._pending = np.zeros(0, np.float32)  # samples from the next frame's first sample on
        self._frames: list[np.ndarray] = []  # (1, t, R) pieces, from frame index `_first` on
        self._first = 0
        self.frames_done = 0

    def push(self, samples: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, samples])
        self._run(self._pending)

    def _run(self, available: np.ndarray) -> None:
        if available.size < self._receptive:
            return
        count = (available.size - self._receptive) // self._stride + 1
        self._frames.append(self._engine.run(self._segment, available[None, : (count - 1) * self._stride + self._receptive]))
        self.frames_done += count
        self._pending = self._pending[count * self._stride :]

    def _held(self) -> np.ndarray:
        if len(self._frames) > 1:
            self._frames = [np.concatenate(self._frames, axis=1)]
        return self._frames[0]

    def frames_between(self, start: int, end: int) -> np.ndarray:
        """The frames a whole-clip run on samples [start, end) gives (start a multiple of the stride): (1, T, R)."""
        first = start // self._stride
        count = (end - start - self._receptive) // self._stride + 1
        if self.frames_done < first + count:
            self._run(self._pending[: end - self.frames_done * self._stride])
        return self._held()[:, first - self._first : first - self._first + count]

    def drop_before(self, start: int) -> None:
        """Forget the frames before sample `start` (a multiple of the stride): their window is classified."""
        first = start // self._stride
        if self._frames:
            self._frames = [self._held()[:, first - self._first :]]
        self._first = first


class _Utterance:
    """The open utterance: where it starts, the audio it has had (as encoder frames, or as samples when the
    encoder runs at the end), and the windows of it already classified."""

    def __init__(self, start: int, encoder: IncrementalEncoder | None):
        self.start = start
        self.fed = start  # stream position up to which it has received audio
        self.encoder = encoder
        self._pieces: list[np.ndarray] = []  # samples from utterance sample `_kept` on (no encoder)
        self._kept = 0
        self.window_start = 0  # utterance sample where the first window not yet classified begins
        self.windows: list[Result] = []
        self.refused: EdgeSerError | None = None  # a window --strict refused: the utterance is refused

    def feed(self, samples: np.ndarray) -> None:
        if samples.size:
            if self.encoder is not None:
                self.encoder.push(samples)
            else:
                self._pieces.append(samples)
            self.fed += samples.size

    def chain_input(self, runner: ChainRunner, start: int, end: int) -> tuple[np.ndarray, int]:
        """(value, chain segments already run) for classifying utterance samples [start, end)."""
        if self.encoder is not None:
            return self.encoder.frames_between(start, end), 1
        samples = np.concatenate(self._pieces)[start - self._kept : end - self._kept]
        return runner.preprocess(samples), 0

    def drop_before(self, start: int) -> None:
        if self.encoder is not None:
            self.encoder.drop_before(start)
        elif self._pieces:
            self._pieces = [np.concatenate(self._pieces)[start - self._kept :]]
        self._kept = start


class _Recent:
    """The last `capacity` samples of the stream, addressed by stream position (pre-roll for a start)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.data = np.zeros(0, np.float32)
        self.end = 0  # stream position just after data[-1]

    def append(self, samples: np.ndarray) -> None:
        self.data = np.concatenate([self.data, samples])[-self.capacity :]
        self.end += samples.size

    def since(self, position: int, until: int) -> np.ndarray:
        first = self.end - self.data.size
        if position < first:
            raise AssertionError(f"look-back of {self.end - position} samples exceeds the {self.capacity} kept")
        return self.data[position - first : until - first]


class Stream:
    """One live audio stream; made by Classifier.stream(), which passes its ChainRunner and window.

    options: the budgets, exit and strictness every utterance runs under (RunOptions, checked when made).
    window_samples: an utterance longer than this is classified window by window (Classifier.window_samples).
    """

    def __init__(
        self,
        runner: ChainRunner,
        sample_rate: int,
        options: RunOptions | None = None,
        *,
        window_samples: int,
        endpoint: EndpointOptions | None = DEFAULT_ENDPOINT,
        incremental: bool | None = None,
    ):
        options = options or RunOptions()
        if not is_rate(sample_rate):
            raise StreamError(f"sample_rate must be {RATE_RULE}, got {sample_rate!r}")
        if endpoint is not None and not isinstance(endpoint, EndpointOptions):
            raise StreamError(f"endpoint must be EndpointOptions or None (utterances marked by the app), got {endpoint!r}")
        manifest = runner.manifest
        exact = manifest.streams_exactly(runner.engine.precision)
        if incremental and not exact:
            raise StreamError(f"model {manifest.name!r} at {runner.engine.precision} does not stream its encoder "
                              f"exactly ({manifest.streaming.reason or 'no streaming check in its manifest'})")
        self.runner = runner
        self.window_samples = window_samples
        self.sample_rate = int(sample_rate)
        self.rate = manifest.sample_rate
        self.options = options
        runner.plan(1.0, options)  # an exit the model lacks fails here, not mid-stream
        self.incremental = exact if incremental is None else incremental
        self.endpointer = Endpointer(endpoint, self.rate) if endpoint is not None else None
        frame = self.endpointer.frame_samples if self.endpointer else manifest.samples_per_frame
        lookback = self.endpointer.lookback_samples if self.endpointer else 0
        self._frame = frame
        self._max_samples = round((endpoint or DEFAULT_ENDPOINT).max_utterance_s * self.rate)
        self._recent = _Recent(lookback + round(MAX_PIECE_SECONDS * self.rate) + 2 * frame)
        self._partial = np.zeros(0, np.float32)  # samples short of a whole endpointer frame
        self._utterance: _Utterance | None = None if self.endpointer else self._open(0)
        self._resampler = None
        if self.sample_rate != self.rate:
            import soxr

            self._resampler = soxr.ResampleStream(self.sample_rate, self.rate, 1, dtype="float32")
        self._lock = threading.Lock()
        self._refused: list[EdgeSerError] = []  # utterances this chunk could not answer (--strict, too short)
        self._voice: list[tuple[str, float]] = []  # endpointer decisions not yet taken: ("started"|"stopped", s)
        self.closed = False
        if self.incremental:
            runner.engine.session(manifest.chain[0])  # open the encoder now, not inside the first utterance
        if options.budget_ms is not None and runner.profile is None:
            runner.probe()  # time the first exit's path now, not after the first utterance

    # ---- public --------------------------------------------------------------------------

    @property
    def position(self) -> float:
        """Seconds of audio the stream has taken in (at the model's rate, after resampling)."""
        return (self._recent.end + self._partial.size) / self.rate

    def accept(self, samples: object, *, sample_rate: int | None = None, end_of_utterance: bool = False) -> list[Result]:
        """Take a chunk (mono, float or 16/32-bit PCM, any length); return the results of utterances that ended in it.

        sample_rate: if given, must be the stream's (a rate cannot change mid-stream).
        end_of_utterance: the app marks the end of the utterance here (push-to-talk).
        A bad chunk raises AudioError and is dropped whole; the stream goes on as if it never came.
        """
        with self._lock:
            if self.closed:
                raise StreamError("accept after flush: this stream has ended; open a new one with classifier.stream()")
            if sample_rate is not None and sample_rate != self.sample_rate:
                raise AudioError(f"this stream takes {self.sample_rate} Hz; a chunk at {sample_rate!r} Hz cannot join "
                                 "it (a rate cannot change mid-stream: open a new stream)")
            audio = chunk_to_float(samples)
            if self._resampler is not None and audio.size:
                audio = self._resampler.resample_chunk(audio)
            results = self._take(audio)
            if end_of_utterance:
                results += self._end_marked()
            return self._deliver(results)

    def flush(self) -> list[Result]:
        """End the stream: the utterance in progress (if any) is classified. Later accepts raise StreamError."""
        with self._lock:
            if self.closed:
                return []
            self.closed = True
            if self._resampler is not None:
                results = self._take(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            else:
                results = []
            return self._deliver(results + self._end_marked())

    def take_voice_events(self) -> list[tuple[str, float]]:
        """The endpointer's decisions since the last call, in order: ("started", seconds) where an utterance was
        found to begin, ("stopped", seconds) where one ended (also one cut at max length or that held no speech
        after all). A service relays them (Wyoming's voice-started / voice-stopped); push-to-talk has none."""
        with self._lock:
            events, self._voice = self._voice, []
            return events

    def _deliver(self, results: list[Result | None]) -> list[Result]:
        """The chunk's results; if an utterance in it was refused, raise that error after the whole chunk has been
        taken in (so the stream's state stays whole), with the chunk's other results on `error.results`."""
        results = [r for r in results if r is not None]
        if self._refused:
            error, self._refused = self._refused[0], []
            error.results = results
            raise error
        return results

    # ---- inside --------------------------------------------------------------------------

    def _open(self, start: int) -> _Utterance:
        return _Utterance(start, IncrementalEncoder(self.runner) if self.incremental else None)

    def _take(self, audio: np.ndarray) -> list[Result | None]:
        results: list[Result | None] = []
        piece = round(MAX_PIECE_SECONDS * self.rate)
        for offset in range(0, audio.size, piece):
            results += self._take_piece(audio[offset : offset + piece])
        return results

    def _take_piece(self, audio: np.ndarray) -> list[Result | None]:
        buffer = np.concatenate([self._partial, audio])
        whole = buffer.size // self._frame * self._frame
        framed, self._partial = buffer[:whole], buffer[whole:]
        position = self._recent.end
        self._recent.append(framed)
        results: list[Result | None] = []
        if self.endpointer is None:
            self._feed(self._recent.end)
            self._classify_whole_windows(self._recent.end)
            if self._recent.end - self._utterance.start >= self._max_samples:
                end = self._recent.end
                results.append(self._finish(end, "max_length", decided_at=end))
                self._utterance = self._open(end)
            return results
        for k in range(0, whole, self._frame):
            for boundary in self.endpointer.step(framed[k : k + self._frame]):
                results += self._on(boundary, now=position + k + self._frame)
        self._feed(self._recent.end)
        self._classify_whole_windows(self.endpointer.sure_until)
        return results

    def _on(self, boundary: Boundary, now: int) -> list[Result | None]:
        self._voice.append(("started" if boundary.kind == "start" else "stopped", boundary.sample / self.rate))
        if boundary.kind == "start":
            self._utterance = self._open(boundary.sample)
            self._feed(now)
            return []
        if boundary.kind == "cancel":
            self._utterance = None
            return []
        return [self._finish(boundary.sample, boundary.reason, decided_at=now)]

    def _feed(self, until: int) -> None:
        if self._utterance is not None and until > self._utterance.fed:
            self._utterance.feed(self._recent.since(self._utterance.fed, until))

    def _end_marked(self) -> list[Result | None]:
        """The app marked an end (or the stream ends): the partial frame joins the utterance, which is classified."""
        tail, self._partial = self._partial, np.zeros(0, np.float32)
        self._recent.append(tail)
        if self.endpointer is not None:
            self.endpointer.position += tail.size  # heard, though shorter than a frame the detector could judge
            boundary = self.endpointer.end_now()
            if boundary is not None:
                self._voice.append(("stopped", boundary.sample / self.rate))
        else:
            boundary = Boundary("end" if self._recent.end > self._utterance.start else "cancel", self._recent.end, "marked")
        try:
            if boundary is None or boundary.kind == "cancel":
                self._utterance = None
                return []
            return [self._finish(boundary.sample, "marked", decided_at=self._recent.end)]
        finally:
            if self.endpointer is None:  # push-to-talk: the next utterance starts right here
                self._utterance = self._open(self._recent.end)

    def _finish(self, end: int, reason: str | None, decided_at: int) -> Result | None:
        """Classify the open utterance as [start, end): the budget's clock starts now, when its end is known
        (at stream position `decided_at`). A refusal is kept for _deliver, so that the chunk is taken in whole."""
        try:
            return self._classify(end, reason, decided_at)
        except (BudgetError, AudioError) as error:
            self._refused.append(error)
            return None

    def _classify(self, end: int, reason: str | None, decided_at: int) -> Result:
        decided = time.perf_counter()
        self._feed(end)
        utterance, self._utterance = self._utterance, None
        length = end - utterance.start
        runner, rate = self.runner, self.rate
        if length < runner.manifest.min_samples:
            raise AudioError(f"utterance at {utterance.start / rate:.2f} s is {1000 * length / rate:.0f} ms long; "
                             f"the model needs at least {1000 * runner.manifest.min_samples / rate:.0f} ms")
        if utterance.refused is not None:
            raise utterance.refused
        last = self._run_window(utterance, utterance.window_start, length, decided)
        result = last
        if utterance.windows:  # a long utterance, windowed as a file would be; each window had its own budget
            combined = runner.combine(utterance.windows + [last], self.options.budget_ms)
            result = replace(combined, latency_ms=last.latency_ms)  # what ran after the end: the last window
        return replace(result, start=utterance.start / rate, end=end / rate, ended_by=reason,
                       endpoint_delay_ms=1000 * (decided_at - end) / rate,
                       speech=True if self.endpointer is not None else None)  # the endpointer found speech there

    def _run_window(self, utterance: _Utterance, start: int, end: int, started: float | None = None) -> Result:
        value, done = utterance.chain_input(self.runner, start, end)
        result = self.runner.run(value, (end - start) / self.rate, self.options, done=done, started=started)
        if done:  # the encoder ran while the audio arrived
            result = replace(result, segments_run=[self.runner.manifest.chain[0].name, *result.segments_run])
        return result

    def _classify_whole_windows(self, heard_until: int) -> None:
        """Classify the open utterance's windows that are final: by window_bounds' rule, a window is final once
        at least half a window follows it, counting only audio that surely belongs to the utterance."""
        utterance, size = self._utterance, self.window_samples
        while utterance is not None and heard_until - utterance.start - utterance.window_start >= size + size // 2:
            start = utterance.window_start
            try:
                utterance.windows.append(self._run_window(utterance, start, start + size))
            except (BudgetError, AudioError) as error:
                utterance.refused = utterance.refused or error
            utterance.window_start = start + size
            utterance.drop_before(utterance.window_start)


def check_streaming(
    runner: ChainRunner,
    chunk_ms: tuple[float, ...] = (20.0, 50.0, 330.0, 1000.0),
    seconds: tuple[float, ...] = (1.37, 3.1),
    tolerance: float = 1e-4,
) -> dict:
    """Is the encoder, run chunk by chunk, the same as on the whole clip? What the export records in the manifest.

    Compares the context's output (what the transformer blocks receive) for clips of `seconds` fed in chunks of
    `chunk_ms`, against one whole-clip run. Per-clip normalisation needs the whole utterance, so such a model
    never streams exactly, whatever the numbers say.
    """
    manifest = runner.manifest
    if len(manifest.chain) < 2 or manifest.chain[1].kind != "context":
        return {"exact": False, "reason": "the encoder is not cut from its context (format 1 export): re-export"}
    encoder, context = manifest.chain[0], manifest.chain[1]
    rng = np.random.default_rng(0)
    worst = 0.0
    for length in seconds:
        clip = (0.1 * rng.standard_normal(int(length * manifest.sample_rate))).astype(np.float32)
        value = runner.preprocess(clip)
        whole = runner.engine.run(context, runner.engine.run(encoder, value))
        for ms in chunk_ms:
            step = max(1, round(ms * manifest.sample_rate / 1000))
            incremental = IncrementalEncoder(runner)
            for offset in range(0, clip.size, step):
                incremental.push(value[0, offset : offset + step])
            chunked = runner.engine.run(context, incremental.frames_between(0, clip.size))
            worst = max(worst, math.inf if chunked.shape != whole.shape else float(np.abs(chunked - whole).max()))
    reason = None
    if manifest.normalize:
        reason = "per-clip normalisation of the waveform needs the whole utterance"
    elif worst > tolerance:
        reason = (f"chunked encoder output differs from whole-clip output by {worst:.2e} (> {tolerance:g}), "
                  "e.g. group normalisation over time in the CNN")
    return {"exact": reason is None, "max_abs_diff": worst, "reason": reason}
