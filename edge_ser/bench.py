"""`edge-ser bench`: what a model costs on this device, in one shareable report.

Latency per exit and clip length (p50/p95 of fixed-exit runs, lengths and exits interleaved so a burst of load
spreads over all), real-time factor, cold start (a new process to its first result), peak resident memory of
a process that stops at each exit, the time to open each segment, budget compliance after a quick calibration,
and streaming latency where the model streams. Runtime only: no torch.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classifier import Classifier
from .options import OptionError

# Instruction-set features that decide int8 and fp16 speed (x86: AVX-512 VNNI, AMX; ARM: dotprod, fp16).
FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
            "neon", "asimd", "asimddp", "asimdhp", "fphp", "sve", "i8mm", "bf16")


@dataclass(frozen=True)
class BenchOptions:
    model: Path
    precisions: tuple[str, ...] = ("fp32", "int8")
    seconds: tuple[float, ...] = (1.0, 3.0, 10.0)
    repeats: int = 5
    public_keys: tuple[Path, ...] = ()  # a signed model: every Classifier (and probe process) checks it

    def __post_init__(self) -> None:
        if not self.precisions or not self.seconds:
            raise OptionError("bench needs at least one precision and one clip length")
        if any(not 0.1 <= s <= 60 for s in self.seconds):
            raise OptionError(f"--seconds must lie between 0.1 and 60, got {list(self.seconds)}")
        if not 1 <= self.repeats <= 100:
            raise OptionError(f"--repeats must be from 1 to 100, got {self.repeats}")


def device() -> dict:
    """The machine, as a buyer compares them."""
    import onnxruntime as ort
    import psutil

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and cpu in ("", platform.machine()):
                cpu = value.strip()
            if key.strip() in ("flags", "Features"):
                flags |= set(value.split())
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "features": [f for f in FEATURES if f in flags],
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "os": f"{platform.system()} {platform.release()}",
            "machine": platform.machine(), "python": platform.python_version(), "onnxruntime": ort.__version__,
            "providers": ort.get_available_providers()}


def latency(classifier: Classifier, seconds: tuple[float, ...], repeats: int, progress) -> dict:
    rng = np.random.default_rng(0)
    clips = {s: (0.1 * rng.standard_normal(int(s * classifier.manifest.sample_rate))).astype(np.float32) for s in seconds}
    layers = [e.layer for e in classifier.manifest.exits]
    times: dict[tuple[int, float], list[float]] = {(e, s): [] for e in layers for s in seconds}
    for _ in range(repeats + 1):  # the first round warms every shape up and is not kept
        for s in seconds:
            for layer in layers:
                ms = classifier.classify(clips[s], classifier.manifest.sample_rate, exit=layer).latency_ms
                if _ > 0:
                    times[(layer, s)].append(ms)
                progress()
    return {str(layer): {f"{s:g}": {"p50_ms": float(np.percentile(times[(layer, s)], 50)),
                                    "p95_ms": float(np.percentile(times[(layer, s)], 95)),
                                    "rtf": float(np.percentile(times[(layer, s)], 50) / (1000 * s))}
                         for s in seconds} for layer in layers}


# Peak resident memory: Linux's VmHWM belongs to the process's own address space; ru_maxrss would also count
# the parent's pages at fork (measured: a 200 MB bench process made a 90 MB child read 217 MB).
PROBE = """
import resource, sys, time
import numpy as np
from edge_ser import Classifier
c = Classifier(sys.argv[1], precision=sys.argv[2], public_key=sys.argv[4:] or None)
c.classify(np.zeros(48000, np.float32) + 0.01, 16000, exit=int(sys.argv[3]))
done = time.time()
try:
    kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
except OSError:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
print(done, kb)
"""


def process(model: Path, precision: str, layer: int, public_keys: tuple[Path, ...] = ()) -> tuple[float, float]:
    """(ms from starting a Python process to its first result, peak resident MB) for one 3 s clip at `layer`."""
    began = time.time()
    out = subprocess.run([sys.executable, "-c", PROBE, str(model), precision, str(layer), *map(str, public_keys)], capture_output=True,
                         text=True, check=True, timeout=300).stdout.split()
    return 1000 * (float(out[0]) - began), float(out[1]) / 1024


def load_times(model: Path, precision: str, public_keys: tuple[Path, ...] = ()) -> dict:
    classifier = Classifier(model, precision=precision, public_key=public_keys or None)
    out = {}
    for segment in classifier.manifest.chain + [e.head for e in classifier.manifest.exits]:
        start = time.perf_counter()
        classifier.engine.session(segment)
        out[segment.name] = 1000 * (time.perf_counter() - start)
    return out


def budgets(classifier: Classifier, repeats: int) -> dict:
    """Calibrate quickly, then run a 3 s clip under each exit's own predicted cost: is every budget met?"""
    from .calibrate import calibrate_profile

    classifier.profile = calibrate_profile(classifier, (1.0, 3.0, 6.0), repeats=3)
    clip = (0.1 * np.random.default_rng(1).standard_normal(3 * classifier.manifest.sample_rate)).astype(np.float32)
    rows = {}
    for layer, budget in classifier.plan(3.0, exit=classifier.manifest.exits[-1].layer).predicted_ms.items():
        runs = [classifier.classify(clip, classifier.manifest.sample_rate, exit=layer, budget_ms=budget)
                for _ in range(repeats)]
        rows[str(layer)] = {"budget_ms": budget, "met": sum(bool(r.budget_met) for r in runs) / len(runs),
                            "exit_reached": sum(r.exit_layer == layer for r in runs) / len(runs),
                            "worst_over_budget": max(r.latency_ms for r in runs) / budget}
    classifier.profile = None
    return rows


def streaming(classifier: Classifier, repeats: int) -> dict | None:
    """Latency after the end of a 3 s utterance, streamed in 20 ms chunks vs classified whole, per exit."""
    if not classifier.manifest.streams_exactly(classifier.engine.precision):
        return None
    rate = classifier.manifest.sample_rate
    clip = (0.1 * np.random.default_rng(2).standard_normal(3 * rate)).astype(np.float32)
    rows = {}
    for e in classifier.manifest.exits:
        whole, streamed = [], []
        for _ in range(repeats):
            whole.append(classifier.classify(clip, rate, exit=e.layer).latency_ms)
            stream = classifier.stream(rate, exit=e.layer, endpoint=None)
            for k in range(0, clip.size - 320, 320):
                stream.accept(clip[k : k + 320])
            streamed.append(stream.accept(clip[clip.size - 320 :], end_of_utterance=True)[0].latency_ms)
        rows[str(e.layer)] = {"whole_ms": float(np.median(whole)), "stream_ms": float(np.median(streamed))}
    return rows


def run_bench(options: BenchOptions) -> dict:
    from tqdm import tqdm

    report = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "device": device(),
              "model": str(options.model), "seconds": list(options.seconds),
              "repeats": options.repeats, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "precisions": {}}
    keys = options.public_keys or None
    first = Classifier(options.model, public_key=keys)
    steps = len(options.precisions) * ((options.repeats + 1) * len(options.seconds) * len(first.manifest.exits)
                                       + len(first.manifest.exits) + 3)
    bar = tqdm(total=steps, desc="bench", unit="step", file=sys.stderr, disable=not sys.stderr.isatty())
    for precision in options.precisions:
        classifier = Classifier(options.model, precision=precision, public_key=keys)
        entry = {"latency": latency(classifier, options.seconds, options.repeats, lambda: bar.update())}
        entry["process"] = {}
        for e in classifier.manifest.exits:
            cold_ms, peak_mb = process(options.model, precision, e.layer, options.public_keys)
            entry["process"][str(e.layer)] = {"cold_start_ms": cold_ms, "peak_rss_mb": peak_mb}
            bar.update()
        entry["load_ms"] = load_times(options.model, precision, options.public_keys)
        entry["budgets"] = budgets(classifier, options.repeats)
        bar.update()
        entry["streaming"] = streaming(classifier, options.repeats)
        bar.update(2)
        report["precisions"][precision] = entry
    bar.close()
    report["precision"] = precision_report(first, report)
    return report


def precision_report(classifier: Classifier, report: dict) -> dict:
    """Which precision runs on this device and why (edge_ser.precision), beside what this bench measured: the
    fastest verified precision at full depth on the longest clip it timed."""
    from .precision import device_choice, fastest, verified_precisions

    verified = verified_precisions(classifier.manifest)
    last = str(classifier.manifest.exits[-1].layer)
    length = max(report["seconds"])
    measured = {p: e["latency"][last][f"{length:g}"]["p50_ms"] for p, e in report["precisions"].items() if p in verified}
    choice = device_choice(classifier.model_dir, classifier.manifest)
    return {"runs_at": classifier.engine.precision, "chosen_by": classifier.precision_source,
            "manifest_default": classifier.manifest.default_precision, "verified": verified,
            "device_choice_ms": choice.full_depth_ms if choice else None,
            "fastest_benched": fastest(measured) if measured else None, "benched_seconds": length}


def markdown(reports: list[dict]) -> str:
    """One table per precision; several reports side by side (--compare)."""
    lines = []
    for i, r in enumerate(reports):
        d = r["device"]
        lines.append(f"**[{i + 1}]** {d['cpu']}, {d['cores']} cores, {d['memory_gb']} GB, {d['os']} {d['machine']}, "
                     f"Python {d['python']}, onnxruntime {d['onnxruntime']} ({', '.join(d['providers'])}); "
                     f"features: {', '.join(d['features']) or 'none listed'}; model {Path(r['model']).name}; {r['date']}")
        if r.get("precision"):
            lines.append(f"  {precision_line(r['precision'])}")
    precisions = sorted({p for r in reports for p in r["precisions"]})
    for precision in precisions:
        lines += ["", f"### {precision}", "",
                  "| device | exit | " + " | ".join(f"{s:g} s p50 / p95 ms (RTF)" for s in reports[0]["seconds"])
                  + " | cold start ms | peak MB | stream / whole ms (3 s) | budget met |",
                  "|---|---:|" + "---:|" * (len(reports[0]["seconds"]) + 4)]
        for i, r in enumerate(reports):
            entry = r["precisions"].get(precision)
            if entry is None:
                continue
            for layer, by_length in entry["latency"].items():
                cells = [f"{v['p50_ms']:.1f} / {v['p95_ms']:.1f} ({v['rtf']:.3f})" for v in by_length.values()]
                proc = entry["process"][layer]
                stream = (entry.get("streaming") or {}).get(layer)
                stream_cell = f"{stream['stream_ms']:.1f} / {stream['whole_ms']:.1f}" if stream else "-"
                budget = entry["budgets"].get(layer, {})
                lines.append(f"| [{i + 1}] | {layer} | " + " | ".join(cells) + f" | {proc['cold_start_ms']:.0f} | "
                             f"{proc['peak_rss_mb']:.0f} | {stream_cell} | {100 * budget.get('met', 0):.0f}% |")
    return "\n".join(lines)


WHY = {"asked": "asked for", "profile": "the device profile's", "device": "this device's choice (edge-ser calibrate)",
       "manifest": "the export machine's default (no edge-ser calibrate here yet)"}


def precision_line(p: dict) -> str:
    benched = (f"; fastest verified precision benched here at full depth on {p['benched_seconds']:g} s: "
               f"{p['fastest_benched']}" if p.get("fastest_benched") else "")
    return f"runs at {p['runs_at']}: {WHY.get(p['chosen_by'], p['chosen_by'])}{benched}"


def plot(report: dict, path: Path) -> Path | None:
    """Latency against clip length per exit, one panel per precision (matplotlib if installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    precisions = list(report["precisions"])
    fig, axes = plt.subplots(1, len(precisions), figsize=(5 * len(precisions), 3.5), squeeze=False)
    for ax, precision in zip(axes[0], precisions, strict=True):
        for layer, by_length in report["precisions"][precision]["latency"].items():
            xs = [float(s) for s in by_length]
            ax.plot(xs, [v["p50_ms"] for v in by_length.values()], marker="o", label=f"exit {layer}")
        ax.set(title=f"{precision}: p50 latency", xlabel="clip length (s)", ylabel="ms")
        ax.legend()
    fig.suptitle(f"{report['device']['cpu']} ({report['device']['cores']} cores)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=1, allow_nan=False))
