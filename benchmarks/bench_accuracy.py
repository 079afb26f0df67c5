"""The demo's accuracy table, measured again through the runtime: UAR per exit and precision on dev and test.

The export writes these figures into models/demo/manifest.yaml when it builds the model; this script measures
them anew from the shipped files on the corpus (so the README's table has a script and a results file behind
it), with the paired bootstrap interval of the deepest exit minus the shallowest on test.

    python benchmarks/bench_accuracy.py [--model models/demo] [--corpus data/corpus/manifest.csv]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from edge_ser import Classifier  # noqa: E402
from edge_ser.audio import decode  # noqa: E402
from edge_ser.policy import uar  # noqa: E402

PRECISIONS = ("fp32", "int8", "int8-blocks")


def main() -> None:
    from edge_ser_torch.evaluate import paired_bootstrap

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/demo"))
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus/manifest.csv"))
    args = parser.parse_args()

    rows = [r for r in csv.DictReader(open(args.corpus)) if r["split"] in ("dev", "test")]
    results: dict = {"model": str(args.model), "clips": {s: sum(r["split"] == s for r in rows) for s in ("dev", "test")}}
    for precision in PRECISIONS:
        c = Classifier(args.model, precision=precision)
        labels = c.manifest.labels
        layers = [e.layer for e in c.manifest.exits]
        predicted = {layer: [] for layer in layers}
        for r in rows:
            probs = c.exit_probabilities(decode(args.corpus.parent / r["path"], c.manifest.sample_rate))
            for layer in layers:
                predicted[layer].append(int(probs[layer].argmax()))
        truth = np.array([labels.index(r["label"]) for r in rows])
        split = np.array([r["split"] for r in rows])
        results[precision] = {s: {str(layer): uar(truth[split == s], np.array(predicted[layer])[split == s])
                                  for layer in layers} for s in ("dev", "test")}
        test = split == "test"
        diff, low, high = paired_bootstrap(truth[test], np.array(predicted[layers[0]])[test],
                                           np.array(predicted[layers[-1]])[test], len(labels))
        results[precision]["test_deepest_minus_shallowest"] = {"uar": diff, "ci95": [low, high]}
        results["path_parameters"] = {str(e.layer): e.path_parameters for e in c.manifest.exits}
    for precision in PRECISIONS[1:]:
        results[precision]["largest_dev_change_points"] = max(
            abs(100 * (results[precision]["dev"][k] - results["fp32"]["dev"][k])) for k in results["fp32"]["dev"])
    print(table(results))
    save("accuracy", results)


def table(results: dict) -> str:
    lines = ["| exit | path parameters | dev UAR fp32 | test UAR fp32 | dev UAR int8 | dev UAR int8-blocks |",
             "|---:|---:|---:|---:|---:|---:|"]
    for layer, params in results["path_parameters"].items():
        lines.append(f"| {layer} | {params:,} | {100 * results['fp32']['dev'][layer]:.1f}% | "
                     f"{100 * results['fp32']['test'][layer]:.1f}% | {100 * results['int8']['dev'][layer]:.1f}% | "
                     f"{100 * results['int8-blocks']['dev'][layer]:.1f}% |")
    d = results["fp32"]["test_deepest_minus_shallowest"]
    lines.append(f"\ntest, deepest - shallowest exit (fp32): {100 * d['uar']:+.1f} points "
                 f"({100 * d['ci95'][0]:+.1f} to {100 * d['ci95'][1]:+.1f}, paired bootstrap over clips)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
