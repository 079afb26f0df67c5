"""A synthetic, speaker-independent corpus of speech-like *styles* (not emotions).

Nothing here is real speech or real emotion. Each clip is a source-filter
synthesis (additive harmonics of a glottal pulse train shaped by three vowel
formants), spoken by one of several synthetic "speakers" in one of five
acoustic styles that differ in pitch level, pitch contour, tempo, loudness and
voice quality. As in real voices, vocal effort follows pitch (`effort`): a rising
contour also gets brighter and louder. Without that coupling the two mirror-image
styles (high-rising, high-falling) differ in the direction of F0 alone, which a
small encoder trained from scratch never learnt (both at chance at every exit,
even on training clips; see the README).

It exists so that training, export and the runtime can be tested end to end
without a downloadable corpus, and so that the demo model has something to
recognise.

Difficulty is graded per clip (0 = easy, 1 = hard): harder clips are noisier,
shorter (down to 1.5 s), down to 6 dB SNR, and borrow up to 35% of another style's
parameters. The hope was that a shallow exit settles easy clips while hard ones
need depth; with a tiny encoder trained on this corpus every exit ends up about
equally accurate (README, "Does depth pay?").
"""
from __future__ import annotations

import csv
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from .errors import InputError

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Style:
    pitch: float  # semitones above the speaker's base pitch
    contour: float  # semitones of pitch movement inside each syllable (+ rising, - falling)
    drift: float  # semitones of pitch movement over the whole clip
    tempo: float  # syllables per second
    loudness: float  # dB
    tilt: float  # spectral tilt in dB per octave (steeper = softer, breathier voice)
    breath: float  # aspiration noise relative to the voiced signal
    jitter: float  # relative random pitch perturbation


STYLES: dict[str, Style] = {
    "low-flat": Style(pitch=-3, contour=0, drift=-1, tempo=3.5, loudness=-4, tilt=-11, breath=0.15, jitter=0.004),
    "high-rising": Style(pitch=5, contour=5, drift=3, tempo=5.5, loudness=0, tilt=-7, breath=0.05, jitter=0.006),
    "high-falling": Style(pitch=5, contour=-5, drift=-3, tempo=5.5, loudness=0, tilt=-7, breath=0.05, jitter=0.006),
    "pressed": Style(pitch=2, contour=0, drift=0, tempo=4.5, loudness=4, tilt=-3, breath=0.02, jitter=0.03),
    "breathy-slow": Style(pitch=-1, contour=-2, drift=-2, tempo=2.5, loudness=-8, tilt=-14, breath=0.6, jitter=0.005),
}
LABELS: list[str] = list(STYLES)

# Formants (Hz) of five vowels for an average adult vocal tract.
VOWELS = np.array([[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240]])
BANDWIDTHS = np.array([90.0, 110.0, 170.0])


@dataclass(frozen=True)
class Speaker:
    name: str
    base_f0: float  # Hz
    formant_scale: float  # vocal tract length: >1 = shorter tract, higher formants
    rate: float  # speaking-rate factor
    tilt: float  # dB/octave added to every style
    loudness: float  # dB added to every style


def make_speakers(count: int, rng: np.random.Generator) -> list[Speaker]:
    """Speakers spread over ~15 semitones of base pitch: absolute pitch alone does not give the style away."""
    f0s = np.geomspace(90, 220, count)
    rng.shuffle(f0s)
    return [
        Speaker(
            name=f"spk{i:02d}",
            base_f0=float(f0),
            formant_scale=float(np.interp(f0, [90, 220], [0.9, 1.15]) * rng.uniform(0.96, 1.04)),
            rate=float(rng.uniform(0.85, 1.15)),
            tilt=float(rng.uniform(-2, 2)),
            loudness=float(rng.uniform(-3, 3)),
        )
        for i, f0 in enumerate(f0s)
    ]


def _blend(a: Style, b: Style, weight: float) -> Style:
    mix = lambda x, y: (1 - weight) * x + weight * y  # noqa: E731
    return Style(*(mix(getattr(a, f), getattr(b, f)) for f in Style.__dataclass_fields__))


def _smooth_noise(n: int, rng: np.random.Generator, every: int = 400) -> np.ndarray:
    """Slowly varying noise in [-1, 1]-ish: random points every `every` samples, linearly joined."""
    points = rng.standard_normal(n // every + 2)
    return np.interp(np.arange(n) / every, np.arange(points.size), points)


def synthesize(
    style: Style, speaker: Speaker, seconds: float, snr_db: float, rng: np.random.Generator, effort: float = 0.0
) -> np.ndarray:
    """One clip of speech-like audio, float32 in [-1, 1], at SAMPLE_RATE.

    effort couples vocal effort to pitch movement, as in real voices (a higher pitch
    is pushed with more effort): per semitone above the style's own level, the
    spectral tilt flattens by `effort` dB/octave and the level rises by `effort` dB.
    With effort 0, pitch direction is carried by F0 alone.
    """
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    syllable = 1.0 / (style.tempo * speaker.rate)
    starts = np.arange(rng.uniform(0, 0.15), seconds - 0.05, syllable)

    envelope = np.zeros(n)
    position = np.zeros(n)  # 0..1 inside the current syllable, drives the pitch contour
    formants = np.tile(VOWELS[0] * speaker.formant_scale, (n, 1)).astype(float)
    for start in starts:
        voiced = syllable * rng.uniform(0.55, 0.8)
        i0, i1 = int(start * SAMPLE_RATE), min(n, int((start + voiced) * SAMPLE_RATE))
        if i1 - i0 < 16:
            continue
        ramp = np.sin(np.linspace(0, np.pi, i1 - i0)) ** 0.6
        envelope[i0:i1] = ramp * rng.uniform(0.7, 1.0)
        position[i0:i1] = np.linspace(0, 1, i1 - i0)
        formants[i0:i1] = VOWELS[rng.integers(len(VOWELS))] * speaker.formant_scale * rng.uniform(0.95, 1.05)

    movement = style.contour * (position - 0.5) + style.drift * (t / seconds - 0.5)  # semitones
    semitones = style.pitch + movement
    f0 = speaker.base_f0 * 2 ** (semitones / 12) * (1 + style.jitter * _smooth_noise(n, rng, every=80))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE

    voiced = np.zeros(n)
    tilt = style.tilt + speaker.tilt + effort * movement  # (n,)
    for k in range(1, int(7000 / f0.max()) + 1):
        freq = k * f0  # (n,)
        gain = (freq / 100.0) ** (tilt / 6.02)  # tilt in dB per octave
        for j in range(3):  # cascade of three formant resonators, magnitude only
            fj, bj = formants[:, j], BANDWIDTHS[j]
            gain = gain * fj**2 / np.sqrt((fj**2 - freq**2) ** 2 + (bj * freq) ** 2)
        voiced += gain * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    voiced /= np.abs(voiced).max() + 1e-9

    aspiration = np.diff(rng.standard_normal(n + 1)) * 0.5  # high-passed white noise
    signal = envelope * (voiced + style.breath * aspiration)
    signal *= 10 ** ((style.loudness + speaker.loudness + effort * movement) / 20) * 0.3

    speech_power = np.mean(signal[envelope > 0] ** 2) if np.any(envelope > 0) else 1e-6
    noise = rng.standard_normal(n) + np.cumsum(rng.standard_normal(n)) * 0.02  # white + a little brown
    noise -= noise.mean()
    noise *= np.sqrt(speech_power / 10 ** (snr_db / 10) / np.mean(noise**2))
    audio = signal + noise
    return (audio / max(1.0, np.abs(audio).max() * 1.05)).astype(np.float32)


@dataclass
class CorpusSpec:
    """The demo corpus by default: 24 speakers (16 train, 4 dev, 4 test) x 5 styles x 32 clips."""

    speakers: int = 24
    clips_per_style: int = 32  # per speaker
    dev_speakers: int = 4  # 4 + 4 held-out speakers: one test clip is 0.16 UAR points, one speaker 12.5%
    test_speakers: int = 4
    min_seconds: float = 1.5
    max_seconds: float = 3.5
    effort: float = 0.6  # vocal effort follows pitch (see synthesize); 0 = direction in F0 alone
    seed: int = 0

    def __post_init__(self) -> None:
        if self.clips_per_style < 1 or self.dev_speakers < 1 or self.test_speakers < 1:
            raise InputError("need at least one clip per style and one dev and one test speaker")
        if self.dev_speakers + self.test_speakers >= self.speakers:
            raise InputError("need at least one training speaker beside the dev and test speakers")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise InputError("clip lengths need 0 < min_seconds <= max_seconds")


def difficulty_settings(difficulty: float, spec: CorpusSpec) -> tuple[float, float, float]:
    """(seconds, snr_db, share of another style) for a difficulty in [0, 1]."""
    seconds = spec.max_seconds - (spec.max_seconds - spec.min_seconds) * difficulty
    snr_db = 30.0 - 24.0 * difficulty
    overlap = 0.35 * difficulty
    return seconds, snr_db, overlap


@dataclass(frozen=True)
class _Job:
    index: int  # seeds the clip's own random stream, so a clip never depends on the worker count
    speaker: Speaker
    label: str
    take: int


def _make_clip(job: _Job, spec: CorpusSpec, out: Path) -> dict[str, str]:
    rng = np.random.default_rng([spec.seed, job.index])
    difficulty = float(rng.uniform())
    seconds, snr_db, overlap = difficulty_settings(difficulty, spec)
    other = STYLES[LABELS[(LABELS.index(job.label) + rng.integers(1, len(LABELS))) % len(LABELS)]]
    style = _blend(STYLES[job.label], other, overlap)
    audio = synthesize(style, job.speaker, seconds, snr_db, rng, spec.effort)
    rel = f"wav/{job.speaker.name}_{job.label}_{job.take:03d}.wav"
    sf.write(out / rel, audio, SAMPLE_RATE, subtype="PCM_16")
    return {"path": rel, "label": job.label, "speaker": job.speaker.name, "difficulty": f"{difficulty:.3f}"}


def generate_corpus(
    out_dir: str | Path, spec: CorpusSpec | None = None, progress: bool = True, workers: int | None = None
) -> Path:
    """Write wavs and manifest.csv (path,label,speaker,split,difficulty) under out_dir; returns the CSV path.

    Speakers are assigned whole to train, dev or test: the splits are speaker-independent.
    Every clip draws from its own seeded stream, so the corpus is the same for any number
    of worker processes (default: one per CPU).
    """
    spec = spec or CorpusSpec()
    out = Path(out_dir)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    speakers = make_speakers(spec.speakers, np.random.default_rng(spec.seed))
    split_of = {}
    for i, spk in enumerate(speakers):
        split_of[spk.name] = "test" if i < spec.test_speakers else "dev" if i < spec.test_speakers + spec.dev_speakers else "train"

    jobs = [(spk, label, k) for spk in speakers for label in LABELS for k in range(spec.clips_per_style)]
    jobs = [_Job(i, spk, label, k) for i, (spk, label, k) in enumerate(jobs)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        make = partial(_make_clip, spec=spec, out=out)
        made = pool.map(make, jobs, chunksize=16) if pool else map(make, jobs)
        rows = list(tqdm(made, total=len(jobs), desc="synthesising", disable=not progress, unit="clip"))
    for row in rows:
        row["split"] = split_of[row["speaker"]]

    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "speaker", "split", "difficulty"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "README.txt").write_text(
        "Synthetic speech-like styles made by edge_ser_torch.synth: not real speech, not emotions.\n"
    )
    return manifest
