"""What loading only checked files costs (issue #21): the old way (hash the file by path, then let onnxruntime
open the path again, which leaves a window for a swapped file) against the engine's two exact ways: the open
descriptor (hash through it, hand onnxruntime /proc/self/fd/N, refuse if it was written meanwhile: Linux) and
the checked bytes (read once, hash, build the session from those bytes: the fallback where there is no /proc).

Per model and precision, every file a run at that precision opens is opened each way, interleaved, with the
engine's session options; and the growth of the peak resident memory of a fresh process that opens them all
each way (three rounds, the ways interleaved). Beside them, what a signed model adds before its first load:
hashing every file the run can open up front (edge_ser.signing.require_files; the signature itself is one
Ed25519 check of a few KiB).

    python benchmarks/bench_checked_load.py [--base DIR] [--repeats 5]

The base-size export (default: benchmarks/.cache/base, made by bench_base.py, else .cache/base-stream) is not
made here; without one only the demo runs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, save  # noqa: E402

WAYS = ("hash_then_path", "open_descriptor", "checked_bytes")
PEAK = """
import sys
from pathlib import Path
import edge_ser.integrity
from edge_ser.engine import Engine
from edge_ser.integrity import sha256_of
from edge_ser.manifest import load_manifest
model, precision, way = sys.argv[1:4]
manifest = load_manifest(model)
engine = Engine(model, manifest, precision, shared_pool=False)
if way == "checked_bytes":
    edge_ser.integrity.PROC_FD = Path("/nonexistent")
def high_water_kib():  # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
before, kept = high_water_kib(), []
for segment in manifest.chain + [e.head for e in manifest.exits]:
    if way != "hash_then_path":
        engine.session(segment)
    else:
        path = engine.directory / segment.file_for(precision).file
        sha256_of(path)
        kept.append(engine.open_session(path, engine._options()))  # held, as the engine holds its sessions
print((high_water_kib() - before) / 1024)
"""


def peak_mb(model: Path, precision: str, way: str) -> float:
    """Growth of the peak resident set (MiB) of a fresh process opening every segment one way."""
    done = subprocess.run([sys.executable, "-c", PEAK, str(model), precision, way], capture_output=True, text=True,
                          check=True)
    return float(done.stdout.strip().splitlines()[-1])


def measure(model: Path, precision: str, repeats: int) -> dict:
    from edge_ser.engine import Engine
    import edge_ser.integrity
    from edge_ser.integrity import checked_model, model_files, sha256_of, verify_files
    from edge_ser.manifest import load_manifest

    manifest = load_manifest(model)
    engine = Engine(model, manifest, precision, shared_pool=False)
    options = engine._options()
    files = model_files(manifest, precision)

    def by_path():
        for ref in files:
            path = model / ref.file
            sha256_of(path)
            engine.open_session(path, options)

    def checked(by_fd: bool):
        def load():
            edge_ser.integrity.PROC_FD = proc if by_fd else Path("/nonexistent")
            try:
                for ref in files:
                    with checked_model(model, ref) as source:
                        engine.open_session(source, options)
            finally:
                edge_ser.integrity.PROC_FD = proc
        return load

    proc = edge_ser.integrity.PROC_FD
    times = interleaved({"hash_then_path": by_path, "open_descriptor": checked(True), "checked_bytes": checked(False)},
                        repeats, warmup=1)
    peaks: dict[str, list[float]] = {way: [] for way in WAYS}
    for _ in range(3):
        for way in WAYS:
            peaks[way].append(peak_mb(model, precision, way))
    upfront = interleaved({"check": lambda: verify_files(model, manifest, precision)}, 3, warmup=1)["check"]
    row = {"files": len(files), "megabytes": sum(r.bytes for r in files) / 1e6,
           "signed_upfront_check_ms": float(np.median(upfront))}  # what a signed model adds before its first load
    for way in WAYS:
        row[f"{way}_ms"] = float(np.median(times[way]))
        row[f"{way}_peak_mb"] = float(np.median(peaks[way]))
    for way in WAYS[1:]:
        row[f"{way}_ratio"] = row[f"{way}_ms"] / row["hash_then_path_ms"]
        row[f"{way}_peak_ratio"] = row[f"{way}_peak_mb"] / max(row["hash_then_path_peak_mb"], 1e-9)
    return row


def main() -> None:
    from edge_ser.classifier import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=Path(__file__).resolve().parent / ".cache" / "base-stream")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    models = {"demo": DEFAULT_MODEL} | ({"base": args.base} if (args.base / "manifest.yaml").is_file() else {})
    rows = {}
    for name, model in models.items():
        for precision in ("fp32", "int8"):
            row = measure(model, precision, args.repeats)
            rows[f"{name} {precision}"] = row
            print(f"{name} {precision}: {row['files']} files, {row['megabytes']:.1f} MB; "
                  + "; ".join(f"{way} {row[f'{way}_ms']:.1f} ms, peak +{row[f'{way}_peak_mb']:.1f} MiB" for way in WAYS))
    save("checked_load", {"repeats": args.repeats, "models": {k: str(v) for k, v in models.items()}, "rows": rows})
    print(json.dumps({k: {w: round(v[f"{w}_ratio"], 2) for w in WAYS[1:]} for k, v in rows.items()}))


if __name__ == "__main__":
    main()
