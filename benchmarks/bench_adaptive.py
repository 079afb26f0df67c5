"""Adaptive early exit against full depth and fixed exits on the demo model's held-out test speakers.

Everything runs through the runtime, at fp32 and int8. Per clip, the full-depth run, the adaptive run and a
run at every fixed exit are timed in one interleaved round (the order rotates from clip to clip, so neither
policy always runs on warm caches), `--repeats` rounds; each clip's figure is its median. Time is
reported as the median over clips of adaptive / full (and the ratio of mean times), parameters as the share
of the full-depth path's parameters used (a machine-independent proxy).

The trade-off curve sweeps the stop rule's threshold (max_prob and entropy) over the observed certainties and
simulates each with the runtime's own rule (edge_ser.policy.simulate) on the clips' per-exit probabilities:
UAR against compute, where a clip that stops at exit k costs its measured fixed-exit time at k plus the
heads checked on the way; the fixed exits and the calibrated threshold are marked.

    python benchmarks/bench_adaptive.py [--model models/demo] [--corpus data/corpus/manifest.csv] [--repeats 3]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, save  # noqa: E402

from edge_ser import Classifier  # noqa: E402
from edge_ser.audio import decode  # noqa: E402
from edge_ser.calibrate import time_segments  # noqa: E402
from edge_ser.policy import StopRule, certainty, simulate, uar  # noqa: E402

THRESHOLDS = 60  # points on each trade-off curve


def measure(c: Classifier, clips: list[np.ndarray], repeats: int) -> dict:
    """Per clip: median ms of each policy (full, auto, each fixed exit), the adaptive exit and predictions."""
    layers = [e.layer for e in c.manifest.exits]
    policies = ["full", "auto"] + [f"exit {layer}" for layer in layers[:-1]]
    ms = {p: np.zeros((len(clips), repeats)) for p in policies}
    labels = c.manifest.labels
    out = {"auto_exit": [], "auto_pred": []}
    for i, audio in enumerate(clips):
        for r in range(repeats):
            shift = (i + r) % len(policies)
            for p in policies[shift:] + policies[:shift]:
                exit_ = layers[-1] if p == "full" else "auto" if p == "auto" else int(p.split()[1])
                result = c.classify(audio, c.manifest.sample_rate, exit=exit_)
                ms[p][i, r] = result.latency_ms
                if p == "auto" and r == 0:
                    out["auto_exit"].append(result.exit_layer)
                    out["auto_pred"].append(labels.index(result.label))
    out["ms"] = {p: np.median(t, axis=1) for p, t in ms.items()}
    return out


def head_ms(c: Classifier, seconds: float) -> list[float]:
    """Median ms of each exit head on a clip of the corpus's mean length (the adaptive rule checks every head
    on its way; a fixed-exit run checks only its own)."""
    timings, _ = time_segments(c, (seconds,), 20, np.random.default_rng(0))
    return [float(np.median([ms for _, ms in timings[e.head.name]])) for e in c.manifest.exits]


def curve(probabilities: list[np.ndarray], truth: np.ndarray, fixed_ms: list[float], head_ms: list[float]) -> dict:
    """(compute share, UAR) for a sweep of thresholds per certainty measure, simulated with the runtime's rule."""
    full = fixed_ms[-1]
    # stopping at exit k costs the path to k plus the heads checked before it
    stop_cost = [fixed_ms[k] + sum(head_ms[:k]) for k in range(len(fixed_ms))]
    out = {}
    for measure in ("max_prob", "entropy"):
        values = np.concatenate([certainty(p, measure) for p in probabilities[:-1]])
        points = []
        for t in np.unique(np.quantile(values, np.linspace(0, 1, THRESHOLDS))):
            stops = simulate(probabilities, StopRule(measure, float(t)))
            predicted = np.array([probabilities[s][i].argmax() for i, s in enumerate(stops)])
            points.append({"threshold": float(t), "uar": uar(truth, predicted),
                           "time_share": float(np.mean(np.asarray(stop_cost)[stops]) / full)})
        out[measure] = points
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/demo"))
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus/manifest.csv"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rows = [r for r in csv.DictReader(open(args.corpus)) if r["split"] == args.split]
    results = {}
    for precision in ("fp32", "int8"):
        c = Classifier(args.model, precision=precision)
        labels = c.manifest.labels
        layers = [e.layer for e in c.manifest.exits]
        params = {e.layer: e.path_parameters for e in c.manifest.exits}
        heads = {e.layer: e.head.parameters for e in c.manifest.exits}
        clips = [decode(args.corpus.parent / r["path"], c.manifest.sample_rate) for r in rows]
        truth = np.array([labels.index(r["label"]) for r in rows])
        per_exit = [c.exit_probabilities(x) for x in clips]
        probabilities = [np.stack([p[layer] for p in per_exit]) for layer in layers]
        m = measure(c, clips, args.repeats)
        exits = np.array(m["auto_exit"])
        used = [params[k] + sum(h for layer, h in heads.items() if layer < k) for k in exits]
        fixed_ms = [float(np.mean(m["ms"][f"exit {layer}"])) for layer in layers[:-1]] + [float(np.mean(m["ms"]["full"]))]
        heads_ms = head_ms(c, float(np.mean([x.size for x in clips])) / c.manifest.sample_rate)
        rule = c.stop_rule
        results[precision] = {
            "clips": len(rows),
            "repeats": args.repeats,
            "rule": {"measure": rule.measure, "threshold": rule.threshold},
            "full_uar": uar(truth, probabilities[-1].argmax(axis=1)),
            "adaptive_uar": uar(truth, np.array(m["auto_pred"])),
            "fixed_exit_uar": {str(layer): uar(truth, p.argmax(axis=1)) for layer, p in zip(layers, probabilities, strict=True)},
            "fixed_exit_time_share": {str(layer): ms / fixed_ms[-1] for layer, ms in zip(layers, fixed_ms, strict=True)},
            "mean_exit": float(np.mean(exits)),
            "exit_histogram": {str(k): int(np.sum(exits == k)) for k in layers},
            "time_ratio_median_over_clips": float(np.median(m["ms"]["auto"] / m["ms"]["full"])),
            "time_ratio_of_means": float(np.mean(m["ms"]["auto"]) / np.mean(m["ms"]["full"])),
            "param_share": float(np.mean(used) / params[layers[-1]]),
            "median_ms_full": float(np.median(m["ms"]["full"])),
            "median_ms_adaptive": float(np.median(m["ms"]["auto"])),
            "head_ms": heads_ms,
            "curve": curve(probabilities, truth, fixed_ms, heads_ms),
        }
    print(f"machine: {machine()}; {args.split} split, {len(rows)} clips; rule: {c.stop_rule}")
    print(table(results))
    save("adaptive", results)
    plot(results, RESULTS / "adaptive_tradeoff.png")


def table(results: dict) -> str:
    layers = list(next(iter(results.values()))["exit_histogram"])
    lines = ["| precision | full-depth UAR | adaptive UAR | mean exit | exits used (" + "/".join(layers) + ") "
             "| time, adaptive / full (median over clips) | parameters used / full |", "|---|---:|---:|---:|---|---:|---:|"]
    for p, r in results.items():
        hist = "/".join(str(v) for v in r["exit_histogram"].values())
        lines.append(f"| {p} | {100 * r['full_uar']:.1f}% | {100 * r['adaptive_uar']:.1f}% | {r['mean_exit']:.1f} | {hist} "
                     f"| {r['time_ratio_median_over_clips']:.2f} | {r['param_share']:.2f} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(10, 4), sharey=True)
    for ax, (precision, r) in zip(np.atleast_1d(axes), results.items(), strict=True):
        for measure, points in r["curve"].items():
            pts = sorted(points, key=lambda q: q["time_share"])
            ax.plot([q["time_share"] for q in pts], [100 * q["uar"] for q in pts], marker=".", label=f"adaptive, {measure}")
        shares, uars = r["fixed_exit_time_share"], r["fixed_exit_uar"]
        ax.scatter([shares[k] for k in shares], [100 * uars[k] for k in shares], color="black", zorder=3, label="fixed exits")
        for k in shares:
            ax.annotate(f"exit {k}", (shares[k], 100 * uars[k]), fontsize=7, xytext=(3, -9), textcoords="offset points")
        ax.scatter([r["time_ratio_of_means"]], [100 * r["adaptive_uar"]], marker="*", s=120, color="tab:red", zorder=4,
                   label="calibrated rule (measured)")
        ax.set_title(f"{precision}: {r['clips']} test clips")
        ax.set_xlabel("time / full depth (mean over clips)")
        ax.grid(True, alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("UAR (%)")
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"adaptive early exit, threshold sweep ({machine()})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
