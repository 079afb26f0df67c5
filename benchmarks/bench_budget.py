"""Latency budgets with a calibrated device profile: how often is the budget met, and how deep do runs go?

Calibrates the model on this machine, picks a budget between the first and the last exit's
predicted cost for a mid-length clip, then classifies N synthetic clips of 1-10 s under it.

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
    parser.add_argument("--budget-ms", type=float, help="default: midway between exit 1 and the last exit at 5.5 s")
    args = parser.parse_args()

    c = Classifier(args.model, precision=args.precision)
    c.profile = calibrate_profile(c, seconds=(1.0, 2.5, 5.0, 7.5, 10.0), repeats=5)
    print(describe_profile(c.profile, (1.0, 5.5, 10.0)))
    last = c.manifest.exits[-1].layer
    plan = c.plan(5.5, exit=last)
    first_ms, last_ms = plan.predicted_ms[c.manifest.exits[0].layer], plan.predicted_ms[last]
    budget = args.budget_ms or (first_ms + last_ms) / 2
    print(f"budget {budget:.1f} ms: between exit {c.manifest.exits[0].layer} ({first_ms:.1f} ms) and exit {last} "
          f"({last_ms:.1f} ms) for 5.5 s (high-quantile predictions)")

    rng = np.random.default_rng(0)
    speakers = make_speakers(8, rng)
    styles = list(STYLES.values())
    rows = []
    for i in range(args.clips):
        seconds = float(rng.uniform(1.0, 10.0))
        audio = synthesize(styles[i % len(styles)], speakers[i % len(speakers)], seconds, 20.0, rng)
        for mode, exit_ in (("deepest-fit", last), ("adaptive", "auto")):
            r = c.classify(audio, 16000, budget_ms=budget, exit=exit_)
            rows.append((mode, seconds, r.exit_layer, r.latency_ms, r.budget_met, r.stopped_by))

    summary = {"budget_ms": budget, "clips": args.clips, "precision": args.precision}
    print("| mode | budget met | exits used | median ms | max ms |")
    print("|---|---:|---|---:|---:|")
    for mode in ("deepest-fit", "adaptive"):
        sel = [r for r in rows if r[0] == mode]
        met = np.mean([r[4] for r in sel])
        exits = {e.layer: sum(r[2] == e.layer for r in sel) for e in c.manifest.exits}
        ms = np.array([r[3] for r in sel])
        summary[mode] = {"met": float(met), "exits": exits, "median_ms": float(np.median(ms)), "max_ms": float(ms.max())}
        print(f"| {mode} | {100 * met:.1f}% | {'/'.join(map(str, exits.values()))} | {np.median(ms):.1f} | {ms.max():.1f} |")
    short = [r[2] for r in rows if r[0] == "deepest-fit" and r[1] < 3]
    long = [r[2] for r in rows if r[0] == "deepest-fit" and r[1] > 8]
    print(f"mean exit for clips < 3 s: {np.mean(short):.1f}; > 8 s: {np.mean(long):.1f} (longer clips cost more, so go less deep)")
    print(f"machine: {machine()}")
    save(f"budget_{args.precision}", summary)
    plot(rows, budget, c, Path(__file__).resolve().parent / "results" / f"budget_{args.precision}.png")


def plot(rows, budget: float, c: Classifier, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    colours = dict(zip([e.layer for e in c.manifest.exits], ["tab:green", "tab:blue", "tab:orange", "tab:red"]))
    for ax, mode in zip(axes, ("deepest-fit", "adaptive")):
        for layer, colour in colours.items():
            sel = [r for r in rows if r[0] == mode and r[2] == layer]
            ax.scatter([r[1] for r in sel], [r[3] for r in sel], s=10, color=colour, label=f"exit {layer}")
        ax.axhline(budget, color="black", linestyle="--", linewidth=1, label=f"budget {budget:.0f} ms")
        ax.set_title(mode)
        ax.set_xlabel("clip length (s)")
    axes[0].set_ylabel("latency, samples to answer (ms)")
    axes[1].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{c.manifest.name}: {len(rows) // 2} clips under one budget ({machine()})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
