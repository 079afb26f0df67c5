"""Base size (94M-parameter wav2vec2 layout, random weights): the runtime against the alternatives a buyer asks for.

1. export + verification against torch (segments and a monolithic graph), int8 files;
2. engines at every exit, each in its own process (thread pools are process-wide), in interleaved rounds,
   3 s clip: the runtime at fp32 / int8 / int8-blocks (one shared thread pool, its default), int8 with
   onnxruntime's SkipLayerNormalization rewrite left in (the runtime leaves it out on CPU), the runtime's
   segments with per-session thread pools, one monolithic ONNX graph (full depth only: it computes every exit),
   torch eager fp32 and torch's own dynamic int8 (Linear layers); ratios to torch eager fp32;
3. int8 against fp32 per segment (interleaved in one process), dynamic against static int8 for the encoder;
4. the fraction of this machine's practical peak each segment reaches: multiply-adds counted from the graph
   (benchmarks/graph_macs.py) per second, against the best of several matrix-multiply shapes run by
   onnxruntime in the same run (fp32 MatMul; int8 MatMulInteger);
5. latency against clip length (0.5 to 30 s) per exit, fp32 and int8, as a plot;
6. peak resident memory of a process that stops at exit 3 against one that runs to exit 12.

    python benchmarks/bench_base.py [--work benchmarks/.cache/base] [--rounds 3] [--repeats 6]
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
from common import RESULTS, interleaved, machine, save  # noqa: E402
from graph_macs import graph_macs, matmul_peak  # noqa: E402

CLIP_SECONDS = 3.0
LENGTHS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)
ENGINES = ["runtime-fp32", "runtime-int8", "runtime-int8-skiplayernorm-fused", "runtime-int8-blocks",
           "runtime-fp32-per-session-pools",
           "monolithic-fp32", "torch-eager-fp32", "torch-dynamic-int8"]
BASELINE = "torch-eager-fp32"


def clip(seconds: float = CLIP_SECONDS) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(int(seconds * 16000)).astype(np.float32) * 0.1


def base_model():
    import torch

    from edge_ser_torch.backbone import load_encoder
    from edge_ser_torch.config import ModelConfig
    from edge_ser_torch.model import SelfDistilledSER

    torch.manual_seed(0)
    return SelfDistilledSER(ModelConfig(), 7, encoder=load_encoder(None, "wav2vec2", {})).eval()


def export_base(work: Path) -> dict:
    from edge_ser.manifest import load_manifest
    from edge_ser_torch.onnx_export import ExportOptions, export_model
    from edge_ser_torch.quantize import quantize_model

    model = base_model()
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
        "verify_max_abs_diff": m.provenance.verify_max_abs_diff,
    }


# ---- workers: one engine per process -------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: on Linux that survives exec, so a
    worker started by a big parent would report the parent's peak."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # other systems: kB on Linux/BSD


def engine_runs(engine: str, work: Path, layers: list[int]) -> dict[int, object]:
    """One callable per exit layer that classifies the 3 s clip with `engine`, stopping at that exit."""
    audio = clip()
    if engine.startswith("torch"):
        import torch

        model = base_model()
        if engine == "torch-dynamic-int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        x = torch.from_numpy(audio)[None]

        def torch_run(layer):
            with torch.no_grad():
                return model(x, up_to=layer)
        return {layer: (lambda layer=layer: torch_run(layer)) for layer in layers}
    if engine == "monolithic-fp32":
        import onnxruntime as ort

        session = ort.InferenceSession(str(work / "monolithic.onnx"), providers=["CPUExecutionProvider"])
        return {layers[-1]: lambda: session.run(None, {"waveform": audio[None]})}
    from edge_ser import Classifier
    from edge_ser import engine as runtime_engine

    if engine.endswith("-skiplayernorm-fused"):  # onnxruntime's default rewrites, which the runtime leaves out on CPU
        runtime_engine.CPU_DISABLED_OPTIMIZERS = ()
    precision = engine.removeprefix("runtime-").removesuffix("-per-session-pools").removesuffix("-skiplayernorm-fused")
    c = Classifier(work, precision=precision, shared_pool=not engine.endswith("per-session-pools"))
    return {layer: (lambda layer=layer: c.classify(audio, 16000, exit=layer)) for layer in layers}


def worker(engine: str, work: Path, repeats: int) -> dict:
    from edge_ser.manifest import load_manifest

    layers = [e.layer for e in load_manifest(work).exits]
    if engine.startswith("memory-exit"):
        from edge_ser import Classifier

        before = peak_rss_mb()
        Classifier(work, precision="fp32").classify(clip(), 16000, exit=int(engine.rsplit("-", 1)[1]))
        return {"peak_mb": peak_rss_mb(), "import_peak_mb": before}
    runs = engine_runs(engine, work, layers)
    times = interleaved({str(layer): fn for layer, fn in runs.items()}, repeats)
    return {"ms": {layer: t.tolist() for layer, t in times.items()}}


def run_worker(engine: str, work: Path, repeats: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", engine, "--work", str(work), "--repeats", str(repeats)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"worker {engine} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def engines_per_exit(work: Path, rounds: int, repeats: int) -> dict:
    times: dict[str, dict[str, list[float]]] = {}
    for _ in range(rounds):  # round-robin over processes: load bursts hit every engine alike
        for engine in ENGINES:
            for layer, ms in run_worker(engine, work, repeats)["ms"].items():
                times.setdefault(engine, {}).setdefault(layer, []).extend(ms)
    base = {layer: float(np.median(ms)) for layer, ms in times[BASELINE].items()}
    return {engine: {layer: {"median_ms": float(np.median(ms)), "speedup_over_torch_eager": base[layer] / float(np.median(ms))}
                     for layer, ms in per_exit.items()} for engine, per_exit in times.items()}


# ---- one process: per segment ----------------------------------------------------------------


def segment_inputs(work: Path) -> tuple[dict, dict]:
    """The input each chain segment sees on the 3 s clip (from the fp32 chain), and the manifest's segments."""
    from edge_ser import Classifier

    c = Classifier(work, precision="fp32", shared_pool=False)
    value = c.runner.preprocess(clip())
    inputs = {}
    for seg in c.manifest.chain:
        inputs[seg.name] = value
        value = c.engine.run(seg, value)
    return inputs, {seg.name: seg for seg in c.manifest.chain}


def per_segment(work: Path, repeats: int) -> dict:
    """int8 against fp32 per segment, dynamic against static int8 for the encoder, and each segment's multiply-adds
    per second as a fraction of the practical peak of its precision."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    inputs, segments = segment_inputs(work)
    dynamic_encoder = work / "encoder.dynamic-int8.onnx"
    if not dynamic_encoder.exists():
        quantize_dynamic(work / "encoder.onnx", dynamic_encoder, weight_type=QuantType.QInt8)
    options = ort.SessionOptions()  # per-session pools, all graph optimisations: each segment alone
    options.log_severity_level = 3
    sessions = {}
    for name, seg in segments.items():
        for precision in ("fp32", "int8"):
            if precision in seg.files:  # the context segment has no int8 file: a run at int8 uses its fp32 one
                sessions[(name, precision)] = ort.InferenceSession(str(work / seg.files[precision].file), options)
    sessions[("encoder", "dynamic-int8")] = ort.InferenceSession(str(dynamic_encoder), options)
    feeds = {key: {s.get_inputs()[0].name: inputs[key[0]]} for key, s in sessions.items()}
    variants = {f"{name}|{p}": (lambda s=s, f=feeds[(name, p)]: s.run(None, f)) for (name, p), s in sessions.items()}
    times = interleaved(variants, repeats)
    peak = matmul_peak(repeats)
    enc_fp32 = sessions[("encoder", "fp32")].run(None, feeds[("encoder", "fp32")])[0]
    rows = {}
    for name, seg in segments.items():
        macs = graph_macs(work / seg.files["fp32"].file, inputs[name])
        fp32_ms = float(np.median(times[f"{name}|fp32"]))
        rows[name] = {"macs": macs, "fp32_ms": fp32_ms, "fp32_gmacs_per_s": macs / fp32_ms / 1e6,
                      "fp32_fraction_of_peak": macs / fp32_ms / 1e6 / peak["fp32"]["best_gmacs_per_s"]}
        if f"{name}|int8" in times:
            int8_ms = float(np.median(times[f"{name}|int8"]))
            rows[name] |= {"int8_ms": int8_ms, "int8_speedup": fp32_ms / int8_ms, "int8_gmacs_per_s": macs / int8_ms / 1e6,
                           "int8_fraction_of_peak": macs / int8_ms / 1e6 / peak["int8"]["best_gmacs_per_s"]}
    rows["encoder"]["dynamic_int8_speedup"] = rows["encoder"]["fp32_ms"] / float(np.median(times["encoder|dynamic-int8"]))
    rows["encoder"]["mean_relative_error"] = {}
    for p in ("int8", "dynamic-int8"):
        enc = sessions[("encoder", p)].run(None, feeds[("encoder", p)])[0]
        rows["encoder"]["mean_relative_error"][p] = float(np.mean(np.abs(enc - enc_fp32)) / np.mean(np.abs(enc_fp32)))
    return {"segments": rows, "peak": peak}


def latency_by_length(work: Path, repeats: int) -> dict:
    """ms per exit (path to it + its own head) for clips of 0.5 to 30 s, per precision: medians per segment."""
    from edge_ser import Classifier
    from edge_ser.calibrate import time_segments

    out = {}
    for precision in ("fp32", "int8"):
        c = Classifier(work, precision=precision)
        timings, prep = time_segments(c, LENGTHS, repeats, np.random.default_rng(0))

        def median(samples, seconds):
            return float(np.median([ms for s, ms in samples if s == seconds]))
        out[precision] = {}
        for e in c.manifest.exits:
            path = [seg.name for seg in c.manifest.chain_to(e)] + [e.head.name]
            out[precision][str(e.layer)] = [median(prep, s) + sum(median(timings[n], s) for n in path) for s in LENGTHS]
    return {"seconds": list(LENGTHS), "ms": out}


def plot_lengths(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (precision, per_exit) in zip(axes, data["ms"].items(), strict=True):
        for layer, ms in per_exit.items():
            ax.plot(data["seconds"], ms, marker="o", markersize=3, label=f"exit {layer}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"base size, {precision}")
        ax.set_xlabel("clip length (s)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms, median)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"latency against clip length per exit ({machine()})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / ".cache" / "base")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.work, args.repeats)))
        return

    results: dict = {"clip_seconds": CLIP_SECONDS}
    if not (args.work / "manifest.yaml").exists() or not (args.work / "monolithic.onnx").exists():
        results["export"] = export_base(args.work)
    else:  # reuse the export: what its manifest says (the export's own time is known only when it runs here)
        from edge_ser.manifest import load_manifest

        m = load_manifest(args.work)
        results["export"] = {"reused": str(args.work), "path_parameters": {str(e.layer): e.path_parameters for e in m.exits},
                             "verify_max_abs_diff": m.provenance.verify_max_abs_diff}
    print(f"export: {json.dumps(results['export'])}")
    parts = {"engines": lambda: engines_per_exit(args.work, args.rounds, args.repeats),
             "per_segment": lambda: per_segment(args.work, args.repeats * 2),
             "latency_by_length": lambda: latency_by_length(args.work, 3),
             "memory": lambda: {f"exit_{k}": run_worker(f"memory-exit-{k}", args.work, 1) for k in (3, 12)}}
    for name, measure in parts.items():
        results[name] = measure()
        save("base", results)  # after every part: a later failure keeps what was measured
    plot_lengths(results["latency_by_length"], RESULTS / "base_latency_by_length.png")
    print(f"machine: {machine()}; base size (random weights), {CLIP_SECONDS:g} s clip")
    print(tables(results))


def tables(results: dict) -> str:
    """The README's base-size tables, from a results file."""
    engines = results["engines"]
    layers = list(engines[BASELINE])
    lines = ["| engine | " + " | ".join(f"exit {layer}" for layer in layers) + " |",
             "|---|" + "---:|" * len(layers)]
    for engine, per_exit in engines.items():
        cells = [f"{per_exit[layer]['median_ms']:.0f} ms ({per_exit[layer]['speedup_over_torch_eager']:.2f}x)"
                 if layer in per_exit else "-" for layer in layers]
        lines.append(f"| {engine} | " + " | ".join(cells) + " |")
    seg = results["per_segment"]
    peak = seg["peak"]
    lines += ["", f"practical peak: fp32 {peak['fp32']['best_gmacs_per_s']:.0f} G multiply-adds/s "
              f"({peak['fp32']['best_shape']}), int8 {peak['int8']['best_gmacs_per_s']:.0f} G/s ({peak['int8']['best_shape']})", "",
              "| segment | G multiply-adds | fp32 ms | int8 ms | int8 speed-up | fp32 share of peak | int8 share of peak |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in seg["segments"].items():
        int8 = (f"{r['int8_ms']:.1f} | {r['int8_speedup']:.2f}x" if "int8_ms" in r else "- | -")
        share = f"{100 * r['int8_fraction_of_peak']:.0f}%" if "int8_ms" in r else "-"
        lines.append(f"| {name} | {r['macs'] / 1e9:.2f} | {r['fp32_ms']:.1f} | {int8} | {100 * r['fp32_fraction_of_peak']:.0f}% | {share} |")
    enc = seg["segments"]["encoder"]
    lines.append(f"\nencoder: dynamic int8 (ConvInteger) {enc['dynamic_int8_speedup']:.2f}x; mean relative error static QDQ "
                 f"{100 * enc['mean_relative_error']['int8']:.1f}%, dynamic {100 * enc['mean_relative_error']['dynamic-int8']:.1f}%")
    mem = results["memory"]
    lines.append(f"peak RSS, one 3 s clip: exit 3 {mem['exit_3']['peak_mb']:.0f} MB, exit 12 {mem['exit_12']['peak_mb']:.0f} MB "
                 f"(after imports: {mem['exit_3']['import_peak_mb']:.0f} MB)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
