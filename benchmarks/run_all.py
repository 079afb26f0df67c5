"""Regenerate every figure and plot the README shows, in one command: each step writes benchmarks/results/*.

    python benchmarks/run_all.py [--only base,adaptive] [--skip mutants] [--list]

Steps run one after another (never two timing runs at once: they would distort each other), each in its own
process, and a step that fails is reported at the end without stopping the rest. Needs the train extra
(torch for the base-size export and the torch baselines), espeak-ng for the live-audio speech (Debian package)
and, for the WebRTC comparison, webrtcvad-wheels. The synthetic corpus is generated first when it is missing
(data/corpus, not committed). Run it on an idle machine: timings are ratios, but a busy machine widens them.

Not regenerated here (each marked historical in the README, with its commit): training runs (the demo's own
training, sweep_depth.py's GPU grid, Table 2 and the truncation rows), which take from 30 minutes to hours.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CORPUS = ROOT / "data" / "corpus" / "manifest.csv"

# name -> (command, what it writes); in the order they run (cheap, demo-only steps first).
STEPS: dict[str, tuple[list[str], str]] = {
    "device-report": ([PY, "-m", "edge_ser.cli", "bench", "--out", "benchmarks/results/bench_demo.json"],
                      "bench_demo.json (+ .png where matplotlib is installed): edge-ser bench on the demo"),
    "estimate": ([PY, "benchmarks/bench_estimate.py"], "estimate.json: first-clip estimate error"),
    "no-speech": ([PY, "benchmarks/bench_no_speech.py"], "no_speech.json: the no-speech rule on corpus and noise"),
    "accuracy": ([PY, "benchmarks/bench_accuracy.py"], "accuracy.json: the demo's UAR per exit and precision"),
    "errors": ([PY, "benchmarks/bench_errors.py"], "errors.json: errors by difficulty"),
    "adaptive": ([PY, "benchmarks/bench_adaptive.py"], "adaptive.json + adaptive_tradeoff.png"),
    "budget": ([PY, "benchmarks/bench_budget.py"], "budget_fp32.json/.png + profile_demo_fp32.yaml"),
    "endpoint": ([PY, "benchmarks/bench_endpoint.py"], "endpoint.json: endpointing on espeak-ng speech"),
    "stream": ([PY, "benchmarks/bench_stream.py"], "stream.json: streaming latency, listen RTF, 1 h memory"),
    "memory": ([PY, "benchmarks/bench_memory.py"], "memory.json: RSS over 4,000 clips of every length, per session option"),
    "rooms": ([PY, "benchmarks/bench_rooms.py"], "rooms.json: voice-activity detectors in white, pink, babble, music"),
    "serve": ([PY, "benchmarks/bench_serve.py"], "serve.json: the service's price, streams served, memory, start-up"),
    "serve-energy": ([PY, "benchmarks/bench_serve.py", "--skip-base", "--vad", "energy", "--out", "serve_energy"],
                     "serve_energy.json: the same for the demo with the energy rule"),
    "base": ([PY, "benchmarks/bench_base.py"], "base.json + base_latency_by_length.png: engines, peak, memory"),
    "encoder": ([PY, "benchmarks/bench_encoder.py"], "encoder.json: encoder/context int8 forms, before and after #13"),
    "load": ([PY, "benchmarks/bench_load.py"], "load.json: cold start, optimising at load vs ahead (after base)"),
    "checked-load": ([PY, "benchmarks/bench_checked_load.py"],
                     "checked_load.json: loading only checked files, three ways, demo and base (after base)"),
    "heads": ([PY, "benchmarks/bench_heads.py"], "heads.json: exit head designs against base blocks (so after base)"),
    "mutants": ([PY, "scripts/named_mutants.py"], "named_mutants.json: the audit's one-line bugs"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated steps to run (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated steps to leave out")
    parser.add_argument("--list", action="store_true", help="list the steps and exit")
    parser.add_argument("--runtime-python", default=PY,
                        help="the Python of a runtime-only install (no torch) for the device report, as a device runs it")
    args = parser.parse_args()
    if args.list:
        for name, (_, writes) in STEPS.items():
            print(f"{name:<14} {writes}")
        return 0
    chosen = args.only.split(",") if args.only else list(STEPS)
    skip = {s for s in args.skip.split(",") if s}
    unknown = sorted((set(chosen) | skip) - set(STEPS))
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    steps = [s for s in chosen if s not in skip]

    if not CORPUS.exists() and {"no-speech", "accuracy", "errors", "adaptive"} & set(steps):
        print("generating the synthetic corpus (data/corpus) ...", flush=True)
        subprocess.run([PY, "-m", "edge_ser.cli", "corpus", str(CORPUS.parent)], cwd=ROOT, check=True)
    took, failed = {}, []
    for name in steps:
        command, writes = STEPS[name]
        if name == "device-report":
            command = [args.runtime_python] + command[1:]
        print(f"\n=== {name}: {writes}\n$ {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        if subprocess.run(command, cwd=ROOT).returncode != 0:
            failed.append(name)
        took[name] = time.perf_counter() - start
    print("\n" + "\n".join(f"{name:<14} {s / 60:5.1f} min{'  FAILED' if name in failed else ''}" for name, s in took.items()))
    print(f"total {sum(took.values()) / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
