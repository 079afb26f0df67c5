"""The no-speech rule (edge_ser.endpoint.no_speech) on clips that hold speech and on clips that do not.

Speech: the demo corpus's dev and test clips, and espeak-ng sentences (benchmarks/speech.py). No speech:
digital silence, DC, hiss at -80 dBFS, steady tones, hum with harmonics, white and pink noise, 3 s each.
Reports how many of each the rule flags and the spread of frame levels it judges by.

    python benchmarks/bench_no_speech.py [--corpus data/corpus/manifest.csv]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402
from speech import RATE, pink, utterances  # noqa: E402

from edge_ser.endpoint import frame_levels, no_speech  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def spread(audio: np.ndarray) -> float:
    levels = frame_levels(audio, 320)
    return float(np.percentile(levels, 95) - np.percentile(levels, 10))


def summary(clips: list[np.ndarray]) -> dict:
    spreads = [spread(c) for c in clips]
    return {"clips": len(clips), "flagged_no_speech": sum(no_speech(c, RATE) is not None for c in clips),
            "min_spread_db": min(spreads), "max_spread_db": max(spreads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus" / "manifest.csv")
    args = parser.parse_args()
    rows = [r for r in csv.DictReader(open(args.corpus)) if r["split"] in ("dev", "test")]
    corpus = [sf.read(args.corpus.parent / r["path"], dtype="float32")[0] for r in rows]
    rng = np.random.default_rng(0)
    t = np.arange(3 * RATE) / RATE
    quiet = {
        "digital silence": np.zeros(t.size),
        "DC 0.3": np.full(t.size, 0.3),
        "hiss -80 dBFS": 1e-4 * rng.standard_normal(t.size),
        **{f"tone {f} Hz": 0.3 * np.sin(2 * np.pi * f * t) for f in (100, 440, 1000, 3000)},
        "hum 50 Hz + harmonics": sum(0.1 / k * np.sin(2 * np.pi * 50 * k * t) for k in range(1, 6)),
        "white noise": 0.1 * rng.standard_normal(t.size),
        "pink noise": 0.1 * pink(t.size, rng),
    }
    data = {"speech": {"demo corpus dev+test": summary(corpus), "espeak-ng sentences": summary(utterances(40))},
            "no speech": {name: summary([audio.astype(np.float32)]) for name, audio in quiet.items()}}
    for group, rows_ in data.items():
        for name, row in rows_.items():
            print(f"{group:>9} | {name:<22} clips {row['clips']:>5}, flagged {row['flagged_no_speech']:>5}, "
                  f"spread {row['min_spread_db']:.1f}-{row['max_spread_db']:.1f} dB")
    save("no_speech", data)


if __name__ == "__main__":
    main()
