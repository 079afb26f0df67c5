"""How far off is a budget planned without a device profile ("estimated")?

A fresh Classifier without a profile times the path to its first exit once on a 0.5 s probe; deeper
blocks are scaled from the per-layer cost seen, unseen heads from the dearest head seen. For clips of
1, 3 and 8 s, this compares the plan's prediction for the first clip at each fixed exit with the latency
that clip then took (a fresh Classifier each time, so every figure is a first clip's).

    python benchmarks/bench_estimate.py [--model models/demo] [--trials 5]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from edge_ser import Classifier  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "demo")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows: dict[str, dict] = {}
    exits = [e.layer for e in Classifier(args.model).manifest.exits]
    for seconds in (1.0, 3.0, 8.0):
        for layer in exits:
            ratios = []
            for _ in range(args.trials):
                clip = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
                classifier = Classifier(args.model)
                classifier.probe()
                predicted = classifier.plan(seconds, budget_ms=1e9, exit=layer).predicted_ms[layer]
                measured = classifier.classify(clip, 16000, exit=layer, budget_ms=1e9).latency_ms
                ratios.append(measured / predicted)
            rows[f"{seconds:g} s, exit {layer}"] = {"median_measured_over_predicted": float(np.median(ratios)),
                                                    "max_measured_over_predicted": float(np.max(ratios))}
            print(f"{seconds:g} s exit {layer}: measured / predicted median {np.median(ratios):.2f}, "
                  f"max {np.max(ratios):.2f}", flush=True)
    save("estimate", {"model": args.model.name, "trials": args.trials, "rows": rows})


if __name__ == "__main__":
    main()
