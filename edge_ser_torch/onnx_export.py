"""Cut a trained SelfDistilledSER into ONNX segments and write the model directory.

    encoder.onnx        waveform (1, S)  -> frames (1, T, R)   CNN + projection: 25 ms of audio per frame
    context.onnx        frames (1, T, R) -> hidden (1, T, R)   positional convolution (+ LayerNorm)
    blocks_AA_BB.onnx   hidden (1, T, R) -> hidden (1, T, R)   transformer layers AA+1..BB
    exit_BB.onnx        hidden (1, T, R) -> logits (1, C)      block M + pooling + L1 + L2

torch's dynamo exporter is used with a dynamic time axis; it reproduces these
graphs to ~1e-6, where the TorchScript exporter was measured far off. Export
verifies itself through the runtime (edge_ser.Classifier), so what is checked is
exactly what a device will run. It also checks whether the encoder gives the
same frames when run chunk by chunk (what a live stream does) and records the
verdict in the manifest: only then does the runtime run it while audio arrives.
"""
from __future__ import annotations

import copy
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

import edge_ser
from edge_ser.classifier import Classifier
from edge_ser.integrity import sha256_of
from edge_ser.manifest import (RUN_PRECISIONS, Exit, FileRef, Manifest, PrecisionRecord, Segment, StreamCheck, Streaming,
                               parse_provenance)
from edge_ser.policy import calibrate
from edge_ser.precision import fastest, within_loss
from edge_ser.stream import check_streaming

from .errors import ExportError
from .model import SelfDistilledSER

OPSET = 20  # opset 20 has Gelu: onnxruntime runs it (and BiasGelu) fused; at 18 the exporter spelt it out in Erf/Mul/Div
log = logging.getLogger(__name__)


@dataclass
class ExportOptions:
    verify: bool = True
    verify_seconds: tuple[float, ...] = (0.5, 1.0, 3.3, 7.0)  # odd lengths catch frame-count mistakes
    tolerance: float = 1e-4  # max abs diff of logits and exit-layer hidden states, fp32
    int8: bool = True
    int8_encoder: bool = True  # static per-channel QDQ on the CNN encoder and context (dynamic ConvInteger is slower)
    max_accuracy_loss: float = 0.01  # for the early-exit thresholds (UAR points as a fraction)
    max_precision_loss: float = 0.005  # dev UAR a variant may lose against fp32 at any exit to become the default
    default_precision: str | None = None  # None: the fastest such variant, timed here; or name one for the device
    monolithic: bool = False  # also write monolithic.onnx (all exits in one graph) for benchmarks
    stream_chunk_ms: tuple[float, ...] = (20.0, 50.0, 330.0, 1000.0)  # chunk sizes the streaming check feeds
    description: str = ""
    provenance: dict = field(default_factory=dict)


class ChannelInstanceNorm(nn.Module):
    """nn.GroupNorm with a group per channel (wav2vec2-base's first CNN layer) as one InstanceNormalization.

    Why: the exporter writes GroupNorm as an unscaled InstanceNormalization followed by Mul and Add, two more
    passes over the encoder's largest activation (3,200 frames/s x 512 channels at base size); ONNX's
    InstanceNormalization takes the per-channel scale and bias itself. Same arithmetic.
    """

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        return torch.instance_norm(x, self.norm.weight, self.norm.bias, None, None, True, 0.0, self.norm.eps, False)


def feature_encoder_for_export(feature_extractor: nn.Module) -> nn.Module:
    """A copy of the CNN feature encoder with per-channel GroupNorms as ChannelInstanceNorm (the model is untouched)."""
    features = copy.deepcopy(feature_extractor)
    for layer in features.conv_layers:
        norm = getattr(layer, "layer_norm", None)
        if isinstance(norm, nn.GroupNorm) and norm.affine and norm.num_groups == norm.num_channels:
            layer.layer_norm = ChannelInstanceNorm(norm)
    return features


class EncoderGraph(nn.Module):
    def __init__(self, model: SelfDistilledSER):
        super().__init__()
        self.backbone = model.backbone
        self.features = feature_encoder_for_export(model.backbone.hf.feature_extractor)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:  # (1, S) -> (1, T, R), as Backbone.frames
        return self.backbone.project(self.features(waveform))


class ContextGraph(nn.Module):
    def __init__(self, model: SelfDistilledSER):
        super().__init__()
        self.backbone = model.backbone

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # (1, T, R) -> (1, T, R)
        return self.backbone.context(frames)


class BlocksGraph(nn.Module):
    def __init__(self, model: SelfDistilledSER, start: int, end: int):
        super().__init__()
        self.backbone, self.start, self.end = model.backbone, start, end

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (1, T, R) -> (1, T, R)
        return self.backbone.run_layers(hidden, self.start, self.end)


class HeadGraph(nn.Module):
    def __init__(self, model: SelfDistilledSER, layer: int):
        super().__init__()
        self.head = model.heads[str(layer)]
        self.finish = model.backbone.finish if layer == model.teacher_layer else None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (1, T, R) -> (1, C)
        if self.finish is not None:
            hidden = self.finish(hidden)
        return self.head(hidden).logits


class MonolithicGraph(nn.Module):
    def __init__(self, model: SelfDistilledSER):
        super().__init__()
        self.model = model

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(out.logits for out in self.model(waveform).values())


def export_graph(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_names: list[str],
                 opset: int = OPSET) -> None:
    """Dynamo export with the time axis (dim 1) dynamic; weights inside the file."""
    time_dim = torch.export.Dim("samples" if example.dim() == 2 else "frames", min=2, max=2**24)
    with torch.no_grad():
        program = torch.onnx.export(
            module.eval(),
            (example,),
            dynamo=True,
            input_names=[input_name],
            output_names=output_names,
            dynamic_shapes={input_name: {1: time_dim}},
            opset_version=opset,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    program.save(str(path), external_data=False)


def _ref(directory: Path, name: str) -> FileRef:
    path = directory / name
    return FileRef(name, sha256_of(path), path.stat().st_size)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def export_segments(model: SelfDistilledSER, labels: list[str], out: Path, sample_rate: int, normalize: bool, name: str,
                    options: ExportOptions) -> Manifest:
    """Write the fp32 graphs and a manifest (no policy yet)."""
    model = model.eval()
    out.mkdir(parents=True, exist_ok=True)
    bb = model.backbone
    wave = torch.randn(1, sample_rate)  # 1 s example; the axis is dynamic
    with torch.no_grad():
        frames = bb.frames(wave)
        hidden = bb.context(frames)

    export_graph(EncoderGraph(model), wave, out / "encoder.onnx", "waveform", ["frames"])
    export_graph(ContextGraph(model), frames, out / "context.onnx", "frames", ["hidden"])
    cnn_params = _params(bb.hf.feature_extractor) + _params(bb.hf.feature_projection)
    context_params = sum(p.numel() for n, p in bb.hf.named_parameters() if not n.startswith("encoder.layers.")) - cnn_params
    chain = [Segment("encoder", "encoder", "waveform", "frames", cnn_params, {"fp32": _ref(out, "encoder.onnx")}),
             Segment("context", "context", "frames", "hidden", context_params, {"fp32": _ref(out, "context.onnx")})]
    exits = []
    previous = 0
    for layer in model.exit_layers:
        seg_name = f"blocks_{previous:02d}_{layer:02d}"
        export_graph(BlocksGraph(model, previous, layer), hidden, out / f"{seg_name}.onnx", "hidden", ["hidden_out"])
        params = sum(_params(bb.hf.encoder.layers[i]) for i in range(previous, layer))
        chain.append(Segment(seg_name, "blocks", "hidden", "hidden_out", params, {"fp32": _ref(out, f"{seg_name}.onnx")},
                             (previous, layer)))
        head_name = f"exit_{layer:02d}"
        export_graph(HeadGraph(model, layer), hidden, out / f"{head_name}.onnx", "hidden", ["logits"])
        head = Segment(head_name, "head", "hidden", "logits", _params(model.heads[str(layer)]),
                       {"fp32": _ref(out, f"{head_name}.onnx")})
        exits.append(Exit(layer, seg_name, head, model.path_parameters()[layer]))
        previous = layer
    if options.monolithic:
        export_graph(MonolithicGraph(model), wave, out / "monolithic.onnx", "waveform",
                     [f"logits_{a:02d}" for a in model.exit_layers])
    min_samples = next(n for n in range(1, 4 * sample_rate) if int(bb.frame_lengths(torch.tensor([n]))) >= 1)
    manifest = Manifest(
        name=name,
        description=options.description,
        sample_rate=sample_rate,
        normalize=normalize,
        min_samples=int(min_samples),
        samples_per_frame=int(np.prod(bb.config.conv_stride)),
        labels=list(labels),
        chain=chain,
        exits=exits,
        provenance=parse_provenance(options.provenance),
    )
    manifest.save(out)
    return manifest


def verify(model: SelfDistilledSER, out: Path, sample_rate: int, options: ExportOptions) -> dict:
    """Chained onnxruntime segments vs torch: logits at every exit and hidden states at every exit layer."""
    runtime = Classifier(out, precision="fp32", shared_pool=False)  # the quantiser opens its own sessions
    rng = np.random.default_rng(0)
    report = {}
    worst = 0.0
    for seconds in options.verify_seconds:
        samples = rng.standard_normal(int(seconds * sample_rate)).astype(np.float32) * 0.1
        x = runtime.runner.preprocess(samples)  # as the device will feed it (normalised or raw, per the manifest)
        with torch.no_grad():
            expected = model(torch.from_numpy(x))
            hidden_t = model.backbone.embed(torch.from_numpy(x))
        value, diffs, previous = x, {}, None
        for e in runtime.manifest.exits:
            for seg in runtime.runner.segments_between(previous, e):
                value = runtime.engine.run(seg, value)
            with torch.no_grad():
                hidden_t = model.backbone.run_layers(hidden_t, previous.layer if previous else 0, e.layer)
            logits = runtime.engine.run(e.head, value)
            diffs[e.layer] = {
                "logits": float(np.abs(logits - expected[e.layer].logits.numpy()).max()),
                "hidden": float(np.abs(value - hidden_t.numpy()).max()),
            }
            previous = e
        report[seconds] = diffs
        worst = max([worst] + [v for d in diffs.values() for v in d.values()])
    report["max_abs_diff"] = worst
    if worst > options.tolerance:
        raise ExportError(f"exported segments differ from torch by {worst:.2e} (> {options.tolerance:g}): {report}")
    return report


def record_streaming(out: Path, manifest: Manifest, precisions: list[str], options: ExportOptions) -> Manifest:
    """Check, per precision, that the encoder run chunk by chunk equals the whole-clip run; write the verdict."""
    checks, reason = {}, None
    for precision in precisions:
        check = check_streaming(Classifier(out, precision=precision, shared_pool=False).runner, options.stream_chunk_ms,
                                tolerance=options.tolerance)
        checks[precision] = StreamCheck(check["exact"], check["max_abs_diff"])
        reason = reason or check["reason"]
    manifest.streaming = Streaming(checks, options.tolerance, tuple(options.stream_chunk_ms), reason)
    manifest.save(out)
    exact = [p for p, check in checks.items() if check.exact]
    log.info(f"streaming encoder: exact at {', '.join(exact)}" if exact else f"streaming encoder: not exact ({reason})")
    return manifest


def runtime_dev_probabilities(out: Path, precision: str, dev_audio: list[np.ndarray]) -> list[np.ndarray]:
    """Per-exit (clips, C) probabilities of the exported model, through the runtime."""
    runtime = Classifier(out, precision=precision, shared_pool=False)
    per_clip = [runtime.exit_probabilities(a) for a in dev_audio]
    return [np.stack([p[e.layer] for p in per_clip]) for e in runtime.manifest.exits]


def exit_costs(manifest: Manifest, adaptive: bool = True) -> list[float]:
    """Parameter-count proxy of the compute to stop at each exit (heads on the way counted when adaptive)."""
    costs, heads = [], 0
    for e in manifest.exits:
        costs.append(e.path_parameters + heads)
        heads += e.head.parameters if adaptive else 0
    return costs


def full_depth_ms(out: Path, precisions: list[str]) -> dict[str, float]:
    """edge_ser.calibrate.time_full_depth (3 s clip) in a fresh process: the runtime's process-wide thread pool,
    as on a device, without creating one in this process (the quantiser and tests open sessions of their own)."""
    code = ("import json, sys; from edge_ser.calibrate import time_full_depth; "
            "print(json.dumps(time_full_depth(sys.argv[1], sys.argv[2].split(','))))")
    done = subprocess.run([sys.executable, "-c", code, str(out), ",".join(precisions)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ExportError(f"timing the precisions failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def uar_per_exit(probabilities: list[np.ndarray], truth: np.ndarray, manifest: Manifest) -> dict[int, float]:
    from edge_ser.policy import uar

    return {e.layer: uar(truth, p.argmax(axis=1)) for e, p in zip(manifest.exits, probabilities, strict=True)}


def export_model(
    model: SelfDistilledSER,
    labels: list[str],
    out: str | Path,
    *,
    name: str,
    sample_rate: int = 16000,
    normalize: bool = True,
    dev: tuple[list[np.ndarray], np.ndarray] | None = None,
    test: tuple[list[np.ndarray], np.ndarray] | None = None,
    options: ExportOptions | None = None,

) -> Manifest:
    """The whole export: graphs, verification, int8 variants and their accuracy, calibrated thresholds.

    dev: (audio clips at sample_rate, label indices) for int8 calibration, accuracy and thresholds;
         without it, the model ships fp32 only and with no early-exit policy.
    test: the same for the test UAR per exit recorded in the manifest.
    All accuracies are measured on the exported files through the runtime, not on the torch model.
    """
    options = options or ExportOptions()
    out = Path(out)
    if options.default_precision not in (None, "fp32") and (dev is None or not options.int8):
        raise ExportError(f"default precision {options.default_precision} needs int8 files, which the export writes "
                          "only with dev data (a corpus) and without --no-int8")
    options.provenance = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "edge_ser": edge_ser.__version__,
        "torch": str(torch.__version__),
        "family": model.backbone.family,
        "hidden_size": model.backbone.hidden_size,
        "layers": model.backbone.num_layers,
        "exit_block": model.config.block,
    } | options.provenance
    manifest = export_segments(model, labels, out, sample_rate, normalize, name, options)
    log.info(f"exported {len(manifest.chain)} chain segments and {len(manifest.exits)} heads to {out}")
    if options.verify:
        report = verify(model, out, sample_rate, options)
        manifest.provenance = replace(manifest.provenance, verify_max_abs_diff=report["max_abs_diff"])
        log.info(f"verified at {', '.join(f'{s:g} s' for s in options.verify_seconds)}: max abs diff {report['max_abs_diff']:.2e}")
        manifest.save(out)
    if dev is None:
        return record_streaming(out, manifest, ["fp32"], options)

    audio, truth = dev
    fp32 = runtime_dev_probabilities(out, "fp32", audio)
    manifest.precisions = {"fp32": PrecisionRecord(uar_per_exit(fp32, truth, manifest))}
    test_uar = uar_per_exit(runtime_dev_probabilities(out, "fp32", test[0]), test[1], manifest) if test else {}
    manifest.exits = [replace(e, dev_uar=manifest.precisions["fp32"].dev_uar[e.layer], test_uar=test_uar.get(e.layer))
                      for e in manifest.exits]
    if options.int8:
        from .quantize import quantize_model

        quantized = quantize_model(out, manifest, audio[:32], int8_encoder=options.int8_encoder)
        manifest.save(out)
        kinds = {s.name: s.kind for s in manifest.chain}
        variants = ("int8", "int8-blocks") if "encoder" in quantized else ("int8",)
        for variant in variants:
            probs = runtime_dev_probabilities(out, variant, audio)
            manifest.precisions[variant] = PrecisionRecord(
                uar_per_exit(probs, truth, manifest),
                tuple(q for q in quantized if RUN_PRECISIONS[variant][kinds[q]] == "int8"))
            log.info(f"{variant} dev UAR per exit {manifest.precisions[variant].dev_uar}")
        log.info(f"fp32 dev UAR per exit {manifest.precisions['fp32'].dev_uar}")
        ms = full_depth_ms(out, list(manifest.precisions))
        for precision, value in ms.items():
            manifest.precisions[precision] = replace(manifest.precisions[precision], full_depth_ms=value)
        manifest.max_precision_loss = options.max_precision_loss  # the rule a device's calibrate applies too
        if options.default_precision is None:
            verified = within_loss({p: r.dev_uar for p, r in manifest.precisions.items()}, options.max_precision_loss)
            manifest.default_precision = fastest({p: ms[p] for p in verified})
            manifest.provenance = replace(manifest.provenance, default_precision_rule=(
                f"fastest full-depth run of a 3 s clip on the export machine ({platform.machine()}, {os.cpu_count()} "
                f"cores) among the variants within {options.max_precision_loss:g} dev UAR of fp32 at every exit"))
        elif options.default_precision in manifest.precisions:
            manifest.default_precision = options.default_precision
            manifest.provenance = replace(manifest.provenance, default_precision_rule="set by the exporter")
        else:
            raise ExportError(f"default precision {options.default_precision!r} was not exported; "
                              f"exported: {', '.join(manifest.precisions)}")
        log.info(f"full depth, 3 s: {json.dumps({p: round(v, 1) for p, v in ms.items()})} ms; "
                 f"default precision {manifest.default_precision}")
    manifest.policy = calibrate(fp32, truth, [e.layer for e in manifest.exits], exit_costs(manifest),
                                options.max_accuracy_loss)
    manifest.save(out)
    record_streaming(out, manifest, list(manifest.precisions), options)
    rules = {k: v.patience if k == "patience" else v.threshold for k, v in manifest.policy.measures.items()}
    log.info(f"early-exit rules (max UAR loss {options.max_accuracy_loss:g}): {json.dumps(rules)}")
    return manifest
