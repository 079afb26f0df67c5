"""Speech nobody on this project wrote: sentences spoken by espeak-ng (Debian's package), laid out as a
recording with pauses and background noise at a chosen SNR, with the true utterance spans.

    apt-get install espeak-ng
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 16000
VOICES = ("en", "en-us", "en+f3", "de", "fr", "es", "en+m3", "it")
SENTENCES = (
    "The train to the coast leaves at half past nine.",
    "Could you turn the heating down a little, please?",
    "I never said that she took the money.",
    "We will meet again next week, if the weather holds.",
    "Put the red box on the table by the window.",
    "Why did nobody tell me about the meeting?",
    "That was the best concert I have heard in years!",
    "Please wait here until your name is called.",
    "Yes.",
    "No, not today.",
    "The battery is almost empty, so plug it in.",
    "Seven hundred and forty two people signed the letter.",
)


def espeak(text: str, voice: str, speed: int = 160) -> np.ndarray:
    """One sentence as float32 at 16 kHz, trimmed to where the voice is (espeak pads a little silence)."""
    import soundfile as sf
    import soxr

    if shutil.which("espeak-ng") is None:
        raise SystemExit("benchmarks need espeak-ng: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                       capture_output=True)
        audio, rate = sf.read(path, dtype="float32")
    audio = soxr.resample(audio, rate, RATE).astype(np.float32)
    loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
    return audio[loud[0] : loud[-1] + 1]


def utterances(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [espeak(SENTENCES[rng.integers(len(SENTENCES))], VOICES[i % len(VOICES)], int(rng.integers(130, 200)))
            for i in range(count)]


@dataclass
class Recording:
    audio: np.ndarray
    truth: list[tuple[int, int]]  # sample spans of the spoken utterances


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise (a room, a fan, traffic) by shaping white noise's spectrum."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size))
    out = np.fft.irfft(spectrum, n)
    return out / out.std()


def lay_out(clips: list[np.ndarray], snr_db: float | None, seed: int = 0, gap: tuple[float, float] = (0.8, 2.5),
            level_db: tuple[float, float] = (-26.0, -14.0)) -> Recording:
    """Clips at random levels with random pauses between them; pink noise at `snr_db` below the mean speech
    power (None: no noise, digital silence in the pauses)."""
    rng = np.random.default_rng(seed)
    pieces, truth, at = [], [], 0
    for clip in clips:
        pause = np.zeros(int(rng.uniform(*gap) * RATE), np.float32)
        scaled = clip / np.sqrt(np.mean(clip**2)) * 10 ** (rng.uniform(*level_db) / 20)
        pieces += [pause, scaled.astype(np.float32)]
        at += pause.size
        truth.append((at, at + clip.size))
        at += clip.size
    pieces.append(np.zeros(int(gap[1] * RATE), np.float32))
    audio = np.concatenate(pieces)
    if snr_db is not None:
        speech_power = np.mean(np.concatenate([audio[a:b] for a, b in truth]) ** 2)
        audio = audio + pink(audio.size, rng) * np.sqrt(speech_power / 10 ** (snr_db / 10))
    return Recording(audio.astype(np.float32), truth)


def score(truth: list[tuple[int, int]], found: list[tuple[int, int]]) -> dict[str, int]:
    """found / split / merged / missed utterances and false alarms, by overlap of spans.

    An utterance is found when exactly one detection overlaps it and that detection overlaps no other
    utterance; split when several detections overlap it; merged when its detection also covers another;
    missed when none overlaps it. A detection overlapping no utterance is a false alarm.
    """
    def overlaps(a, b):
        return a[0] < b[1] and b[0] < a[1]

    counts = {"utterances": len(truth), "found": 0, "split": 0, "merged": 0, "missed": 0,
              "false_alarms": sum(not any(overlaps(f, t) for t in truth) for f in found)}
    for t in truth:
        hits = [f for f in found if overlaps(f, t)]
        if not hits:
            counts["missed"] += 1
        elif len(hits) > 1:
            counts["split"] += 1
        elif sum(overlaps(hits[0], other) for other in truth) > 1:
            counts["merged"] += 1
        else:
            counts["found"] += 1
    return counts
