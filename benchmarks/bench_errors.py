"""Where does each exit go wrong? Accuracy per exit by clip difficulty, and the most common confusions.

A question for the synthetic corpus rather than a timing: if shallow and deep exits score alike,
is it because every exit settles the same clips, or because all of them fail on the same thing?
Runs every exit of the model on the corpus's held-out clips through the runtime.

    python benchmarks/bench_errors.py [--model models/demo] [--corpus data/corpus/manifest.csv] [--splits dev,test]
"""
from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from edge_ser import Classifier  # noqa: E402
from edge_ser.audio import decode  # noqa: E402

BINS = ((0.0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/demo"))
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus/manifest.csv"))
    parser.add_argument("--splits", default="dev,test")
    args = parser.parse_args()

    splits = set(args.splits.split(","))
    rows = [r for r in csv.DictReader(open(args.corpus)) if r["split"] in splits]
    c = Classifier(args.model)
    labels = c.manifest.labels
    layers = [e.layer for e in c.manifest.exits]
    difficulty = np.array([float(r["difficulty"]) for r in rows])
    truth = np.array([labels.index(r["label"]) for r in rows])
    predicted = {layer: [] for layer in layers}
    for r in rows:
        probs = c.exit_probabilities(decode(args.corpus.parent / r["path"], c.manifest.sample_rate))
        for layer in layers:
            predicted[layer].append(int(probs[layer].argmax()))

    summary: dict = {"clips": len(rows), "splits": sorted(splits), "accuracy_by_difficulty": {}, "confusions": {}}
    print(f"{len(rows)} clips ({', '.join(sorted(splits))}); accuracy per exit by difficulty")
    print("| difficulty | clips | " + " | ".join(f"exit {layer}" for layer in layers) + " |")
    print("|---|---:|" + "---:|" * len(layers))
    for low, high in BINS:
        inside = (difficulty >= low) & ((difficulty < high) | (high == 1.0))
        accuracy = {layer: float(np.mean(np.array(predicted[layer])[inside] == truth[inside])) for layer in layers}
        summary["accuracy_by_difficulty"][f"{low:.2f}-{high:.2f}"] = {"clips": int(inside.sum()), **accuracy}
        print(f"| {low:.2f}-{high:.2f} | {inside.sum()} | " + " | ".join(f"{100 * a:.1f}%" for a in accuracy.values()) + " |")
    for layer in (layers[0], layers[-1]):
        errors = Counter((labels[t], labels[p]) for t, p in zip(truth, predicted[layer], strict=True) if t != p)
        total = sum(errors.values())
        summary["confusions"][str(layer)] = {"errors": total, "top": [[t, p, n] for (t, p), n in errors.most_common(5)]}
        top = ", ".join(f"{t} as {p}: {n}" for (t, p), n in errors.most_common(3))
        print(f"exit {layer}: {total} errors; most common: {top}")
    both_wrong = np.mean([(a != t) and (b != t) for a, b, t in zip(predicted[layers[0]], predicted[layers[-1]], truth, strict=True)])
    summary["share_wrong_at_first_and_last"] = float(both_wrong)
    print(f"clips wrong at both exit {layers[0]} and exit {layers[-1]}: {100 * both_wrong:.1f}%")
    save("errors", summary)


if __name__ == "__main__":
    main()
