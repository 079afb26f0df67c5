"""Latency budgets with a calibrated device profile: how often is the budget met, and how deep do runs go?

Calibrates the model on this machine, then classifies N synthetic clips of 1-10 s, each under a
budget drawn between that clip's first and last exit's predicted cost (so that every clip must
choose), in two modes: the deepest exit that fits, and adaptive early exit under the budget.

Whether the planner chose well is checked against measurement, not against its own plan: each clip is also
run to every exit without a budget (3 runs, median), and the deepest exit whose measured latency stayed within
the budget is what the planner should have chosen. Shallower than that is caution (the 99th-percentile margin),
deeper is a miss waiting to happen.

    python benchmarks/bench_budget.py [--model models/demo] [--clips 200] [--precision fp32]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

from edge_ser import Classifier  # noqa: E402
from edge_ser.calibrate import calibrate_profile, describe_profile  # noqa: E402
from edge_ser_torch.synth import STYLES, make_speakers, synthesize  # noqa: E402  (numpy only)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/demo"))
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--repeats", type=int, default=10, help="calibration runs per clip length")
    args = parser.parse_args()

    c = Classifier(args.model, precision=args.precision)
    c.profile = calibrate_profile(c, seconds=(1.0, 2.5, 5.0, 7.5, 10.0), repeats=args.repeats)
    print(describe_profile(c.profile, (1.0, 5.5, 10.0)))
    c.profile.save(Path(__file__).resolve().parent / "results" / f"profile_{c.manifest.name}_{args.precision}.yaml")
    layers = [e.layer for e in c.manifest.exits]

    rng = np.random.default_rng(0)
    speakers = make_speakers(8, rng)
    styles = list(STYLES.values())
    rows = []
    for i in range(args.clips):
        seconds = float(rng.uniform(1.0, 10.0))
        audio = synthesize(styles[i % len(styles)], speakers[i % len(speakers)], seconds, 20.0, rng)
        # This clip's budget: somewhere between its first and its last exit's predicted cost.
        predicted = c.plan(seconds, exit=layers[-1]).predicted_ms
        budget = predicted[layers[0]] + rng.uniform(0.1, 0.9) * (predicted[layers[-1]] - predicted[layers[0]])
        measured = {layer: float(np.median([c.classify(audio, 16000, exit=layer).latency_ms for _ in range(3)]))
                    for layer in layers}
        deepest = max((layer for layer in layers if measured[layer] <= budget), default=0)
        for mode, exit_ in (("deepest-fit", layers[-1]), ("adaptive", "auto")):
            r = c.classify(audio, 16000, budget_ms=budget, exit=exit_)
            rows.append((mode, seconds, r.exit_layer, r.latency_ms, r.budget_met, r.stopped_by, budget, deepest,
                         predicted[r.exit_layer]))

    summary = {"clips": args.clips, "precision": args.precision, "repeats": args.repeats,
               "fit_error": {name: cost.fit_error for name, cost in c.profile.segments.items()},
               "high_ratio": {name: cost.high_ratio for name, cost in c.profile.segments.items()}}
    print("| mode | budget met | chosen = deepest measured to fit | shallower | deeper | exits used ("
          + "/".join(map(str, layers)) + ") | median ms / budget | worst ms / budget |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for mode in ("deepest-fit", "adaptive"):
        sel = [r for r in rows if r[0] == mode]
        met = np.mean([r[4] for r in sel])
        chosen = {"equal": float(np.mean([r[2] == r[7] for r in sel])),
                  "shallower": float(np.mean([r[2] < r[7] for r in sel])),
                  "deeper": float(np.mean([r[2] > r[7] for r in sel]))}
        exits = {layer: sum(r[2] == layer for r in sel) for layer in layers}
        ratio = np.array([r[3] / r[6] for r in sel])
        summary[mode] = {"met": float(met), "exits": exits, "median_latency_over_budget": float(np.median(ratio)),
                         "max_latency_over_budget": float(ratio.max())}
        if mode == "deepest-fit":  # the adaptive rule stops early by design: no deepest exit to compare with
            summary[mode]["chosen_vs_deepest_measured_to_fit"] = chosen
            summary[mode]["mean_exit_chosen"] = float(np.mean([r[2] for r in sel]))
            summary[mode]["mean_deepest_exit_measured_to_fit"] = float(np.mean([r[7] for r in sel]))
        cells = (f"{100 * chosen['equal']:.1f}% | {100 * chosen['shallower']:.1f}% | {100 * chosen['deeper']:.1f}%"
                 if mode == "deepest-fit" else "- | - | -")
        print(f"| {mode} | {100 * met:.1f}% | {cells} | {'/'.join(map(str, exits.values()))} "
              f"| {np.median(ratio):.2f} | {ratio.max():.2f} |")
    summary["missed"] = [{"mode": r[0], "seconds": r[1], "exit": r[2], "latency_ms": r[3], "budget_ms": r[6],
                          "predicted_ms": r[8], "stopped_by": r[5]} for r in rows if not r[4]]
    for m in summary["missed"]:
        print(f"  missed: {m['mode']}, {m['seconds']:.1f} s, exit {m['exit']}, {m['latency_ms']:.1f} ms vs budget "
              f"{m['budget_ms']:.1f} ms (predicted {m['predicted_ms']:.1f} ms), stopped by {m['stopped_by']}")
    print(f"machine: {machine()}")
    save(f"budget_{args.precision}", summary)
    plot(rows, c, Path(__file__).resolve().parent / "results" / f"budget_{args.precision}.png")


def plot(rows, c: Classifier, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    palette = ["tab:green", "tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]
    colours = {e.layer: palette[i % len(palette)] for i, e in enumerate(c.manifest.exits)}
    for ax, mode in zip(axes, ("deepest-fit", "adaptive"), strict=True):
        for layer, colour in colours.items():
            sel = [r for r in rows if r[0] == mode and r[2] == layer]
            ax.scatter([r[1] for r in sel], [r[3] / r[6] for r in sel], s=10, color=colour, label=f"exit {layer}")
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="budget")
        ax.set_title(mode)
        ax.set_xlabel("clip length (s)")
    axes[0].set_ylabel("latency / the clip's budget")
    axes[1].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{c.manifest.name}: {len(rows) // 2} clips, each budget between its first and last exit ({machine()})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
