"""Cold start at base size: opening each segment with onnxruntime's graph optimisation at load, against opening a
copy optimised once ahead of time (what an export could ship so that a device skips the work at boot).

Issue #13 asks for a faster cold start; this measures the room before anything changes. Each variant opens every
int8 segment of the base export (bench_base.py makes it), interleaved, in this process (sessions of their own),
and the runtime's sha256 check of each file (which it does before opening it) is timed beside them.

    python benchmarks/bench_load.py [--work benchmarks/.cache/base] [--repeats 5]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402


def open_ms(path: Path, level, threads: int = 0) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    start = time.perf_counter()
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return 1000 * (time.perf_counter() - start)


def main() -> None:
    import onnxruntime as ort

    from edge_ser.integrity import sha256_of
    from edge_ser.manifest import load_manifest

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / ".cache" / "base")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    m = load_manifest(args.work)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seg in m.chain:
            source = args.work / seg.file_for("int8").file
            optimised = Path(tmp) / f"{seg.name}.optimised.onnx"
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.optimized_model_filepath = str(optimised)
            options.log_severity_level = 3
            ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
            at_load, ahead, hashing = [], [], []
            for _ in range(args.repeats):  # interleaved
                at_load.append(open_ms(source, ort.GraphOptimizationLevel.ORT_ENABLE_ALL))
                ahead.append(open_ms(optimised, ort.GraphOptimizationLevel.ORT_DISABLE_ALL))
                start = time.perf_counter()
                sha256_of(source)  # the runtime checks every file against the manifest before it opens it
                hashing.append(1000 * (time.perf_counter() - start))
            rows[seg.name] = {"file": source.name, "optimise_at_load_ms": float(np.median(at_load)),
                              "optimised_ahead_ms": float(np.median(ahead)),
                              "ratio": float(np.median(ahead) / np.median(at_load)),
                              "sha256_ms": float(np.median(hashing)), "megabytes": source.stat().st_size / 1e6}
            print(f"{seg.name:<14} at load {rows[seg.name]['optimise_at_load_ms']:7.1f} ms, optimised ahead "
                  f"{rows[seg.name]['optimised_ahead_ms']:7.1f} ms ({rows[seg.name]['ratio']:.2f}x)")
    total_load = sum(r["optimise_at_load_ms"] for r in rows.values())
    total_ahead = sum(r["optimised_ahead_ms"] for r in rows.values())
    total_sha = sum(r["sha256_ms"] for r in rows.values())
    print(f"all int8 segments: {total_load:.0f} ms -> {total_ahead:.0f} ms ({total_ahead / total_load:.2f}x); "
          f"their sha256 checks {total_sha:.0f} ms")
    save("load", {"precision": "int8", "repeats": args.repeats, "segments": rows, "total_at_load_ms": total_load,
                  "total_optimised_ahead_ms": total_ahead, "ratio": total_ahead / total_load,
                  "total_sha256_ms": total_sha})


if __name__ == "__main__":
    main()
