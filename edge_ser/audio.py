"""Decoding and preprocessing, numpy only.

Decoding (file -> mono float32 at the model's rate) is timed apart from the
budget: an app that already holds samples skips it and sees the same figure.
Preprocessing (normalisation) is inside the budget.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


class AudioError(ValueError):
    """The audio cannot be used: one line that says why."""


def decode(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read any file libsndfile reads (wav, flac, ogg, mp3 ...) as mono float32 at `sample_rate`."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"{path}: cannot decode audio ({str(err).strip() or type(err).__name__})") from None
    if audio.size == 0:
        raise AudioError(f"{path}: the file holds no samples")
    return resample(audio.mean(axis=1), rate, sample_rate)


def resample(audio: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    if rate == sample_rate:
        return np.ascontiguousarray(audio, dtype=np.float32)
    import soxr  # only needed when rates differ

    return soxr.resample(audio, rate, sample_rate).astype(np.float32)


def check_samples(audio: np.ndarray, sample_rate: int, min_samples: int) -> np.ndarray:
    """Validate caller-supplied samples: 1-D (or 2-D channels-last, averaged), finite, long enough."""
    audio = np.asarray(audio)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise AudioError(f"audio must be 1-D samples (or samples x channels), got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating) and not np.issubdtype(audio.dtype, np.integer):
        raise AudioError(f"audio must hold numbers, got dtype {audio.dtype}")
    if np.issubdtype(audio.dtype, np.integer):  # PCM: scale to [-1, 1]
        audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max)
    audio = audio.astype(np.float32, copy=False)
    if audio.size < min_samples:
        raise AudioError(
            f"clip too short: {1000 * audio.size / sample_rate:.0f} ms; the model needs at least "
            f"{1000 * min_samples / sample_rate:.0f} ms"
        )
    if not np.all(np.isfinite(audio)):
        raise AudioError("audio holds NaN or infinite samples")
    return audio


def normalize(audio: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per clip: what Wav2Vec2FeatureExtractor(do_normalize=True) does in training."""
    return ((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)).astype(np.float32)
