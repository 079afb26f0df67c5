"""Base size: the CNN encoder and context as exported before and after issue #13, and the alternative not kept.

Each variant is an ONNX file of the same random base-size model (bench_base's), timed in one process with the
runtime's shared thread pool, round-robin, on a 3 s clip; error = mean |variant - fp32| / mean |fp32| of the
output frames on four noise clips (not the calibration clips). Variants:

- opset 18 vs 20: at 18 the exporter spells GELU out in Erf/Mul/Div; opset 20 has a Gelu op onnxruntime fuses;
- static QDQ int8 of every convolution (as shipped before) vs keeping the first, waveform-facing one fp32;
- the issue's suggestion: the strided convolutions as frames-times-kernel MatMuls (exact in fp32), so that
  dynamic int8 (MatMulInteger) runs them -- measured here, not kept (see the README);
- the context (positional convolution) fp32 vs static QDQ int8;
- then, on the whole base export (bench_base.py's), int8 against fp32 at every exit.

    python benchmarks/bench_encoder.py [--rounds 15] [--base benchmarks/.cache/base]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_base import base_model, clip  # noqa: E402
from common import interleaved, save  # noqa: E402


def conv_frames(x, kernel: int, stride: int):
    """(B, T, C) -> (B, T_out, kernel*C): the input rows each output frame sees, tap-major."""
    import torch

    batch, length, channels = x.shape
    count = (length - kernel) // stride + 1
    if kernel % stride == 0:  # wav2vec2's 10/5 and 2/2 layers: reshaped windows side by side, no gather
        blocks = kernel // stride
        rows = x[:, : stride * (count + blocks - 1)].reshape(batch, count + blocks - 1, stride * channels)
        return rows if blocks == 1 else torch.cat([rows[:, j : j + count] for j in range(blocks)], dim=-1)
    return torch.cat([x[:, j : j + stride * (count - 1) + 1 : stride] for j in range(kernel)], dim=-1)


def matmul_encoder(model):
    """The model's encoder with each Conv1d as frames @ W (time-major); the per-channel GroupNorm over time."""
    import torch
    from torch import nn

    class ConvAsMatMul(nn.Module):
        def __init__(self, conv: nn.Conv1d):
            super().__init__()
            self.kernel, self.stride = conv.kernel_size[0], conv.stride[0]
            out_channels, in_channels, kernel = conv.weight.shape
            self.weight = nn.Parameter(conv.weight.detach().permute(2, 1, 0).reshape(kernel * in_channels, out_channels))
            self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

        def forward(self, x):
            out = torch.matmul(conv_frames(x, self.kernel, self.stride), self.weight)
            return out if self.bias is None else out + self.bias

    class NormOverTime(nn.Module):
        def __init__(self, norm: nn.GroupNorm):
            super().__init__()
            self.norm = norm

        def forward(self, x):
            mean = x.mean(dim=1, keepdim=True)
            var = (x - mean).pow(2).mean(dim=1, keepdim=True)
            return (x - mean) * torch.rsqrt(var + self.norm.eps) * self.norm.weight + self.norm.bias

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            layers = model.backbone.hf.feature_extractor.conv_layers
            self.convs = nn.ModuleList(ConvAsMatMul(layer.conv) for layer in layers)
            self.norms = nn.ModuleList(NormOverTime(layer.layer_norm) if isinstance(getattr(layer, "layer_norm", None), nn.GroupNorm)
                                       else getattr(layer, "layer_norm", nn.Identity()) for layer in layers)
            self.activations = nn.ModuleList(layer.activation for layer in layers)
            self.backbone = model.backbone

        def forward(self, waveform):
            x = waveform[:, :, None]
            for conv, norm, activation in zip(self.convs, self.norms, self.activations, strict=True):
                x = activation(norm(conv(x)))
            hidden = self.backbone.hf.feature_projection(x)
            return hidden[0] if isinstance(hidden, tuple) else hidden

    return Encoder().eval()


def build(work: Path) -> dict[str, Path]:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edge_ser_torch.onnx_export import ContextGraph, EncoderGraph, export_graph
    from edge_ser_torch.quantize import _preprocessed, first_conv, quantize_static_segment

    model = base_model()
    files: dict[str, Path] = {}
    rng = np.random.default_rng(1)
    calibration = [rng.standard_normal(int(s * 16000)).astype(np.float32)[None] * 0.1 for s in (1.0, 2.0, 3.0, 4.0)]
    for opset in (18, 20):
        fp32 = work / f"encoder-{opset}.onnx"
        export_graph(EncoderGraph(model), torch.randn(1, 16000), fp32, "waveform", ["frames"], opset=opset)
        files[f"encoder fp32, opset {opset}"] = fp32
        pre = _preprocessed(fp32, work / "pre")
        for label, exclude in (("every conv", []), ("waveform conv fp32", first_conv(pre))):
            target = work / f"encoder-{opset}-{len(exclude)}.int8.onnx"
            quantize_static_segment(pre, target, calibration, "waveform", exclude)
            files[f"encoder int8 QDQ {label}, opset {opset}"] = target
    mm = work / "encoder-matmul.onnx"
    export_graph(matmul_encoder(model), torch.randn(1, 16000), mm, "waveform", ["frames"])
    files["encoder as MatMuls fp32, opset 20"] = mm
    quantize_dynamic(_preprocessed(mm, work / "pre"), work / "encoder-matmul.int8.onnx", op_types_to_quantize=["MatMul"],
                     weight_type=QuantType.QInt8)
    files["encoder as MatMuls dynamic int8, opset 20"] = work / "encoder-matmul.int8.onnx"
    context = work / "context.onnx"
    export_graph(ContextGraph(model), torch.randn(1, 50, model.backbone.hidden_size), context, "frames", ["hidden"])
    files["context fp32"] = context
    with torch.no_grad():
        frames = [EncoderGraph(model)(torch.from_numpy(c)).numpy() for c in calibration]
    quantize_static_segment(_preprocessed(context, work / "pre"), work / "context.int8.onnx", frames, "frames", [])
    files["context int8 QDQ"] = work / "context.int8.onnx"
    return files


def measure(files: dict[str, Path], rounds: int) -> dict:
    import onnxruntime as ort

    ort.capi._pybind_state.set_global_thread_pool_sizes(2, 1)  # as the runtime: one process-wide pool

    def session(path: Path) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.use_per_session_threads = False
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    sessions = {name: session(path) for name, path in files.items()}
    wave = clip()[None]
    hidden = sessions["encoder fp32, opset 20"].run(None, {"waveform": wave})[0]
    feeds = {name: {"waveform": wave} if name.startswith("encoder") else {"frames": hidden} for name in files}
    rng = np.random.default_rng(7)
    error_clips = [rng.standard_normal(int(s * 16000)).astype(np.float32)[None] * 0.1 for s in (1.5, 2.5, 3.0, 6.0)]
    reference = {"encoder": [sessions["encoder fp32, opset 20"].run(None, {"waveform": c})[0] for c in error_clips]}
    reference["context"] = [sessions["context fp32"].run(None, {"frames": f})[0] for f in reference["encoder"]]

    def error(name: str) -> float:
        kind = name.split()[0]
        inputs = error_clips if kind == "encoder" else reference["encoder"]
        key = "waveform" if kind == "encoder" else "frames"
        outs = [sessions[name].run(None, {key: x})[0] for x in inputs]
        return float(np.mean([np.abs(o - r).mean() / np.abs(r).mean() for o, r in zip(outs, reference[kind], strict=True)]))

    times = interleaved({name: (lambda s=s, f=feeds[name]: s.run(None, f)) for name, s in sessions.items()}, rounds)
    results = {}
    for name in files:
        base = "encoder fp32, opset 18" if name.startswith("encoder") else "context fp32"
        results[name] = {"ms": float(np.median(times[name])), "speedup": float(np.median(times[base]) / np.median(times[name])),
                         "versus": base, "mean_relative_error": error(name), "bytes": files[name].stat().st_size}
    return results


def exit_errors(work: Path) -> dict:
    """int8 against fp32 at every exit of the whole base export (bench_base.py's), on the same four noise clips:
    mean relative error of the hidden states at the exit layer, largest probability difference, labels agreeing.
    Random weights: the heads' probabilities are near uniform, so the hidden states say more than the labels."""
    from edge_ser import Classifier
    from edge_ser.policy import softmax

    runs = {p: Classifier(work, precision=p) for p in ("fp32", "int8")}
    rng = np.random.default_rng(7)
    clips = [rng.standard_normal(int(s * 16000)).astype(np.float32) * 0.1 for s in (1.5, 2.5, 3.0, 6.0)]
    outputs: dict[str, list[dict]] = {p: [] for p in runs}
    for precision, classifier in runs.items():
        for samples in clips:
            value, previous, per_exit = classifier.runner.preprocess(samples), None, {}
            for e in classifier.manifest.exits:
                for seg in classifier.runner.segments_between(previous, e):
                    value = classifier.engine.run(seg, value)
                per_exit[e.layer] = (value, softmax(classifier.engine.run(e.head, value)[0]))
                previous = e
            outputs[precision].append(per_exit)
    rows = {}
    for layer in outputs["fp32"][0]:
        pairs = [(f[layer], q[layer]) for f, q in zip(outputs["fp32"], outputs["int8"], strict=True)]
        rows[str(layer)] = {
            "hidden_mean_relative_error": float(np.mean([np.abs(q[0] - f[0]).mean() / np.abs(f[0]).mean() for f, q in pairs])),
            "max_probability_difference": float(max(np.abs(q[1] - f[1]).max() for f, q in pairs)),
            "labels_agree": int(sum(int(q[1].argmax() == f[1].argmax()) for f, q in pairs)), "clips": len(pairs)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--base", type=Path, default=Path(__file__).resolve().parent / ".cache" / "base",
                        help="bench_base.py's export, for the int8 error at every exit (skipped if absent)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "pre").mkdir()
        results = measure(build(work), args.rounds)
    for name, r in results.items():
        print(f"{name:48s} {r['ms']:7.1f} ms  {r['speedup']:.2f}x vs {r['versus']}  error {100 * r['mean_relative_error']:.1f}%")
    exits = exit_errors(args.base) if (args.base / "manifest.yaml").is_file() else {}
    for layer, r in exits.items():
        print(f"exit {layer}: int8 hidden states {100 * r['hidden_mean_relative_error']:.1f}% off fp32, probabilities within "
              f"{r['max_probability_difference']:.4f}, labels agree on {r['labels_agree']} of {r['clips']} clips")
    path = save("encoder", {"clip_seconds": 3.0, "threads": 2, "rounds": args.rounds,
                            "variants": results, "exits_int8_vs_fp32": exits})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
