"""Adaptive early exit vs full depth on the demo model's held-out test speakers.

Both runs go through the runtime (fp32 and int8). Compute is measured two ways: wall time of the
budgeted work per clip (the two policies interleaved clip by clip), and the share of the
full-depth path's parameters actually used (a machine-independent proxy).

    python benchmarks/bench_adaptive.py [--model models/demo] [--corpus data/corpus/manifest.csv]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

from edge_ser import Classifier  # noqa: E402
from edge_ser.audio import decode  # noqa: E402
from edge_ser.policy import uar  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/demo"))
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus/manifest.csv"))
    parser.add_argument("--split", default="test")
    args = parser.parse_args()

    rows = [r for r in csv.DictReader(open(args.corpus)) if r["split"] == args.split]
    results = {}
    for precision in ("fp32", "int8"):
        c = Classifier(args.model, precision=precision)
        labels = c.manifest.labels
        full_layer = c.manifest.exits[-1].layer
        params = {e.layer: e.path_parameters for e in c.manifest.exits}
        heads = {e.layer: e.head.parameters for e in c.manifest.exits}
        truth, pred_full, pred_auto, ms_full, ms_auto, exits, used = [], [], [], [], [], [], []
        for r in rows:
            audio = decode(args.corpus.parent / r["path"], c.manifest.sample_rate)
            truth.append(labels.index(r["label"]))
            full = c.classify(audio, c.manifest.sample_rate, exit=full_layer)
            auto = c.classify(audio, c.manifest.sample_rate, exit="auto")
            pred_full.append(labels.index(full.label))
            pred_auto.append(labels.index(auto.label))
            ms_full.append(full.latency_ms)
            ms_auto.append(auto.latency_ms)
            exits.append(auto.exit_layer)
            used.append(params[auto.exit_layer] + sum(h for layer, h in heads.items() if layer < auto.exit_layer))
        truth = np.array(truth)
        results[precision] = {
            "clips": len(rows),
            "full_uar": uar(truth, np.array(pred_full)),
            "adaptive_uar": uar(truth, np.array(pred_auto)),
            "mean_exit": float(np.mean(exits)),
            "exit_histogram": {str(k): int(np.sum(np.array(exits) == k)) for k in params},
            "time_ratio_adaptive_over_full": float(np.sum(ms_auto) / np.sum(ms_full)),
            "param_share": float(np.mean(used) / params[full_layer]),
            "mean_ms_full": float(np.mean(ms_full)),
            "mean_ms_adaptive": float(np.mean(ms_auto)),
        }
    print(f"machine: {machine()}; {args.split} split, {len(rows)} clips; rule: {c.stop_rule}")
    print("| precision | full-depth UAR | adaptive UAR | mean exit | exits used (3/8/10/12) | time adaptive / full | parameter share |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for p, r in results.items():
        hist = "/".join(str(v) for v in r["exit_histogram"].values())
        print(f"| {p} | {100 * r['full_uar']:.1f}% | {100 * r['adaptive_uar']:.1f}% | {r['mean_exit']:.1f} | {hist} "
              f"| {r['time_ratio_adaptive_over_full']:.2f} | {r['param_share']:.2f} |")
    save("adaptive", results)


if __name__ == "__main__":
    main()
