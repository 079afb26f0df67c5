"""Base-size (94M-parameter wav2vec2, random weights) export and runtime measurements.

1. export + verification against torch (segments and a monolithic graph);
2. full depth on a 3 s clip: segmented chain with one shared thread pool, the chain with
   per-session pools, the monolithic graph, and torch eager, each in its own process (thread pools
   are process-wide), in interleaved rounds; reported as ratios to the monolithic graph;
3. int8 vs fp32 per segment (interleaved in one process), and dynamic vs static int8 for the encoder;
4. peak resident memory of a classifier that stops at exit 3 vs one that runs to exit 12.

    python benchmarks/bench_base.py [--work benchmarks/.cache/base] [--rounds 3] [--repeats 8]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, machine, save  # noqa: E402

CLIP_SECONDS = 3.0


def clip(seconds: float = CLIP_SECONDS) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(int(seconds * 16000)).astype(np.float32) * 0.1


def export_base(work: Path) -> dict:
    import torch

    from edge_ser_torch.backbone import load_encoder
    from edge_ser_torch.config import ModelConfig
    from edge_ser_torch.model import SelfDistilledSER
    from edge_ser_torch.onnx_export import ExportOptions, export_model
    from edge_ser_torch.quantize import quantize_model
    from edge_ser.manifest import load_manifest

    torch.manual_seed(0)
    model = SelfDistilledSER(ModelConfig(), 7, encoder=load_encoder(None, "wav2vec2", {})).eval()
    start = time.perf_counter()
    options = ExportOptions(verify_seconds=(0.5, 1.0, 3.3, 7.0), monolithic=True, description="base, random weights")
    manifest = export_model(model, [f"c{i}" for i in range(7)], work, name="base-random", options=options)
    export_s = time.perf_counter() - start
    rng = np.random.default_rng(1)
    calibration = [rng.standard_normal(int(s * 16000)).astype(np.float32) * 0.1 for s in (1.0, 2.0, 3.0, 4.0)]
    start = time.perf_counter()
    quantize_model(work, manifest, calibration)
    manifest.save(work)
    quantize_s = time.perf_counter() - start
    m = load_manifest(work)
    return {
        "parameters_total": sum(p.numel() for p in model.parameters()),
        "path_parameters": {str(e.layer): e.path_parameters for e in m.exits},
        "export_seconds": export_s,
        "quantize_seconds": quantize_s,
        "verify_max_abs_diff": m.provenance["verify_max_abs_diff"],
    }


# ---- workers: one variant per process ------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: on Linux that survives exec, so a
    worker started by a big parent would report the parent's peak."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # other systems: kB on Linux/BSD


def worker(variant: str, work: Path, repeats: int) -> dict:
    audio = clip()
    if variant == "torch":
        import torch

        from edge_ser_torch.backbone import load_encoder
        from edge_ser_torch.config import ModelConfig
        from edge_ser_torch.model import SelfDistilledSER

        torch.manual_seed(0)
        model = SelfDistilledSER(ModelConfig(), 7, encoder=load_encoder(None, "wav2vec2", {})).eval()
        x = torch.from_numpy(audio)[None]

        def run():
            with torch.no_grad():
                model(x)
    elif variant == "monolithic":
        import onnxruntime as ort

        session = ort.InferenceSession(str(work / "monolithic.onnx"), providers=["CPUExecutionProvider"])
        x = audio[None]

        def run():
            session.run(None, {"waveform": x})
    elif variant.startswith("memory-exit"):
        from edge_ser import Classifier

        layer = int(variant.rsplit("-", 1)[1])
        before = peak_rss_mb()
        Classifier(work).classify(audio, 16000, exit=layer)
        return {"peak_mb": peak_rss_mb(), "import_peak_mb": before}
    else:
        from edge_ser import Classifier

        c = Classifier(work, shared_pool=variant == "chain-shared")

        def run():
            c.classify(audio, 16000, exit=12)
    times = interleaved({variant: run}, repeats)[variant]
    return {"ms": times.tolist()}


def run_worker(variant: str, work: Path, repeats: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", variant, "--work", str(work), "--repeats", str(repeats)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def int8_per_segment(work: Path, repeats: int) -> dict:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edge_ser.audio import normalize
    from edge_ser.manifest import load_manifest

    m = load_manifest(work)
    dynamic_encoder = work / "encoder.dynamic-int8.onnx"
    if not dynamic_encoder.exists():
        quantize_dynamic(work / "encoder.onnx", dynamic_encoder, weight_type=QuantType.QInt8)
    sessions = {}
    for seg in m.chain:
        for precision in ("fp32", "int8"):
            sessions[(seg.name, precision)] = ort.InferenceSession(str(work / seg.files[precision].file))
    sessions[("encoder", "dynamic-int8")] = ort.InferenceSession(str(dynamic_encoder))
    x = normalize(clip())[None]
    inputs = {}
    hidden = x
    for seg in m.chain:
        inputs[seg.name] = {seg.input: hidden}
        hidden = sessions[(seg.name, "fp32")].run(None, inputs[seg.name])[0]
    variants = {f"{name}|{p}": (lambda s=s, n=name: s.run(None, inputs[n])) for (name, p), s in sessions.items()}
    times = interleaved(variants, repeats)
    enc_fp32 = sessions[("encoder", "fp32")].run(None, inputs["encoder"])[0]
    errors = {}
    for p in ("int8", "dynamic-int8"):
        enc = sessions[("encoder", p)].run(None, inputs["encoder"])[0]
        errors[p] = float(np.mean(np.abs(enc - enc_fp32)) / np.mean(np.abs(enc_fp32)))
    rows = {}
    for seg in m.chain:
        fp32 = np.median(times[f"{seg.name}|fp32"])
        rows[seg.name] = {"fp32_ms": float(fp32), "int8_speedup": float(fp32 / np.median(times[f"{seg.name}|int8"]))}
    rows["encoder"]["dynamic_int8_speedup"] = float(
        np.median(times["encoder|fp32"]) / np.median(times["encoder|dynamic-int8"]))
    rows["encoder"]["mean_relative_error"] = errors
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / ".cache" / "base")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--only", choices=["memory"], help="run only this part (the export is reused)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.work, args.repeats)))
        return

    results: dict = {"clip_seconds": CLIP_SECONDS}
    if not (args.work / "manifest.yaml").exists() or not (args.work / "monolithic.onnx").exists():
        results["export"] = export_base(args.work)
        print(f"export: {json.dumps(results['export'])}")

    if args.only == "memory":
        previous = json.loads((Path(__file__).resolve().parent / "results" / "base.json").read_text())
        results = {k: v for k, v in previous.items() if k != "machine"}
        results["memory"] = {f"exit_{k}": run_worker(f"memory-exit-{k}", args.work, 1) for k in (3, 12)}
        print_memory(results["memory"])
        save("base", results)
        return

    variants = ["monolithic", "chain-shared", "chain-per-session", "torch"]
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):  # round-robin over processes: load bursts hit every variant alike
        for v in variants:
            times[v] += run_worker(v, args.work, args.repeats)["ms"]
    mono = np.median(times["monolithic"])
    results["full_depth"] = {v: {"median_ms": float(np.median(t)), "ratio_to_monolithic": float(np.median(t) / mono)}
                             for v, t in times.items()}
    results["int8"] = int8_per_segment(args.work, args.repeats * 2)
    results["memory"] = {f"exit_{k}": run_worker(f"memory-exit-{k}", args.work, 1) for k in (3, 12)}

    print(f"machine: {machine()}; base-size wav2vec2 (random weights), {CLIP_SECONDS:g} s clip, fp32")
    print("| full depth | median ms | / monolithic |\n|---|---:|---:|")
    for v, r in results["full_depth"].items():
        print(f"| {v} | {r['median_ms']:.0f} | {r['ratio_to_monolithic']:.2f} |")
    print("| segment | fp32 ms | int8 speed-up |\n|---|---:|---:|")
    for name, r in results["int8"].items():
        print(f"| {name} | {r['fp32_ms']:.1f} | {r['int8_speedup']:.2f}x |")
    enc = results["int8"]["encoder"]
    print(f"encoder: dynamic int8 (ConvInteger) speed-up {enc['dynamic_int8_speedup']:.2f}x; mean relative error "
          f"static QDQ {100 * enc['mean_relative_error']['int8']:.1f}%, dynamic {100 * enc['mean_relative_error']['dynamic-int8']:.1f}%")
    print_memory(results["memory"])
    save("base", results)


def print_memory(mem: dict) -> None:
    print(f"peak RSS, one 3 s clip: exit 3 {mem['exit_3']['peak_mb']:.0f} MB, exit 12 {mem['exit_12']['peak_mb']:.0f} MB "
          f"(after imports: {mem['exit_3']['import_peak_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
