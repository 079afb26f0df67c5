"""Decoding and preprocessing, numpy only.

Decoding (file -> mono float32 at the model's rate) is timed apart from the
budget: an app that already holds samples skips it and sees the same figure.
Preprocessing (normalisation) is inside the budget.
"""
from __future__ import annotations

from pathlib import Path
from collections.abc import Iterator

import numpy as np
import soundfile as sf

from .errors import AudioError



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


def duration_seconds(path: str | Path) -> float:
    """Length of an audio file from its header, without decoding it."""
    try:
        return sf.info(str(path)).duration
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"{path}: cannot decode audio ({str(err).strip() or type(err).__name__})") from None


DEFAULT_WINDOW_SECONDS = 10.0  # longer audio is classified window by window (Classifier(window_seconds=), --window)


def window_samples(window_seconds: float, sample_rate: int, samples_per_frame: int) -> int:
    """A window's length in samples: `window_seconds` rounded to whole encoder frames, so that a stream's
    frames, computed once for a whole utterance, split at window boundaries exactly as separate windows would."""
    return max(1, round(window_seconds * sample_rate / samples_per_frame)) * samples_per_frame


def window_bounds(total: int, size: int) -> list[tuple[int, int]]:
    """The one windowing rule, for arrays, files and streams: windows of `size` samples from the start, and a
    last piece shorter than half a window joins the window before it (no window too short to classify well)."""
    bounds = [(a, min(a + size, total)) for a in range(0, max(total, 1), size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < size // 2:
        bounds[-2:] = [(bounds[-2][0], total)]
    return bounds


def stream_windows(path: str | Path, sample_rate: int, size: int) -> Iterator[np.ndarray]:
    """Mono windows of `size` samples at `sample_rate` by window_bounds' rule, read block by block: memory stays
    bounded by about two windows whatever the file's length."""
    try:
        info = sf.info(str(path))
        blocks = sf.blocks(str(path), blocksize=max(1024, int(size / sample_rate * info.samplerate) // 4),
                           dtype="float32", always_2d=True)
        stream = None
        if info.samplerate != sample_rate:
            import soxr

            stream = soxr.ResampleStream(info.samplerate, sample_rate, 1, dtype="float32")
        pending = np.zeros(0, np.float32)
        held: np.ndarray | None = None  # a full window, held back until we know whether a short tail follows
        for block in blocks:
            mono = block.mean(axis=1)
            if stream is not None:
                mono = stream.resample_chunk(mono)
            pending = np.concatenate([pending, mono])
            while pending.size >= size:
                if held is not None:
                    yield held
                held, pending = pending[:size], pending[size:]
        if stream is not None:
            pending = np.concatenate([pending, stream.resample_chunk(np.zeros(0, np.float32), last=True)])
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"{path}: cannot decode audio ({str(err).strip() or type(err).__name__})") from None
    if held is None:
        yield pending
    elif pending.size < size // 2:
        yield np.concatenate([held, pending])
    else:
        yield held
        yield pending


def resample(audio: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    if rate == sample_rate:
        return np.ascontiguousarray(audio, dtype=np.float32)
    import soxr  # only needed when rates differ

    return soxr.resample(audio, rate, sample_rate).astype(np.float32)


PCM_DTYPES = (np.int16, np.int32)  # signed PCM as sound cards and arecord deliver it


def as_float(samples: np.ndarray, what: str = "audio") -> np.ndarray:
    """Samples as float32, one rule for clips and stream chunks: float as it is, 16/32-bit signed PCM scaled to
    [-1, 1]; anything else (unsigned or 8-bit PCM, complex, text) and NaN or infinite samples are refused."""
    if samples.dtype.kind == "f":
        out = samples.astype(np.float32, copy=False)
    elif samples.dtype in PCM_DTYPES:
        out = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max)
    else:
        raise AudioError(f"{what} must be float or signed 16/32-bit PCM samples; got dtype {samples.dtype}")
    if not np.all(np.isfinite(out)):
        raise AudioError(f"{what} holds NaN or infinite samples")
    return out


MAX_CHANNELS = 8  # what a caller's array, a stream or a service client may carry


def to_mono(samples: object, what: str = "audio") -> np.ndarray:
    """Caller-supplied samples as mono float32: (n,) as they are; (n, c) as soundfile reads them and (c, n) as
    torchaudio and librosa give them, averaged after scaling (the mean of int16 channels would leave PCM
    unscaled), where the layout is unambiguous: one axis holds 1-8 channels and the other more samples. Anything
    else is refused in one line that gives the shape and what is expected, never read the wrong way round (a
    (2, 32000) clip read as 2 samples of 32,000 channels)."""
    array = np.asarray(samples)
    if array.ndim == 1:
        return as_float(array, what)
    expected = (f"mono samples (n,), samples x channels (n, c) as soundfile reads them, or channels x samples (c, n) "
                f"as torchaudio and librosa give them, with 1-{MAX_CHANNELS} channels")
    if array.ndim != 2:
        raise AudioError(f"{what} of shape {array.shape}: expected {expected}")
    rows, columns = array.shape
    if columns <= MAX_CHANNELS and (rows > columns or columns == 1):
        axis = 1  # channels last
    elif rows <= MAX_CHANNELS and (columns > rows or rows == 1):
        axis = 0  # channels first
    else:
        raise AudioError(f"{what} of shape {array.shape} is {'ambiguous' if max(rows, columns) <= MAX_CHANNELS else f'not a layout of 1-{MAX_CHANNELS} channels'}: "
                         f"expected {expected}")
    return as_float(array, what).mean(axis=axis, dtype=np.float32)


def check_samples(audio: np.ndarray, sample_rate: int, min_samples: int) -> np.ndarray:
    """Validate caller-supplied samples: mono or channels either way round (to_mono), finite, long enough."""
    audio = to_mono(audio)
    if audio.size < min_samples:
        raise AudioError(
            f"clip too short: {1000 * audio.size / sample_rate:.0f} ms; the model needs at least "
            f"{1000 * min_samples / sample_rate:.0f} ms"
        )
    return audio


def normalize(audio: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per clip: what Wav2Vec2FeatureExtractor(do_normalize=True) does in training."""
    return ((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)).astype(np.float32)


def encoder_input(samples: np.ndarray, normalized: bool) -> np.ndarray:
    """Mono samples at the model's rate -> the encoder's input (1, S), float32, normalised per clip when the
    model was trained so (the manifest's `normalize`): what the runtime feeds and the int8 calibration sees."""
    value = normalize(samples) if normalized else samples
    return np.ascontiguousarray(value, dtype=np.float32)[None, :]
