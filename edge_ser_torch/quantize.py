"""int8 variants of an exported model directory.

- Transformer blocks: dynamic int8 on MatMul only (weights int8, activations
  quantised on the fly); the attention and FFN matmuls dominate their cost.
- CNN encoder: static per-channel QDQ with calibration audio, except the first
  convolution. Dynamic quantisation would turn its Convs into ConvInteger, which
  onnxruntime runs far slower than fp32 Conv on x86; static QDQ keeps fused int8
  kernels (QLinearConv ran the 512-channel layers at ~680 G multiply-adds/s here).
  The first convolution sees the raw waveform and has one input channel: cheap in
  fp32, while quantising it adds a quantise/dequantise pair on its 3,200 frames/s
  output. Kept fp32, the base-size encoder ran 1.2x faster with less error on its
  frames (5.5% against 6.3% mean relative error; benchmarks/results/encoder.json).
- Context (the positional convolution): static per-channel QDQ, calibrated on the
  fp32 encoder's frames of the same audio; ~3x faster than fp32 at base size.
- Heads stay fp32: they are small, and the LSTM/GRU ops gain little.
Accuracy per exit of each variant is measured by the caller on dev data.
(benchmarks/bench_encoder.py measures these choices against the alternatives.)
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_ser.audio import encoder_input
from edge_ser.integrity import sha256_of
from edge_ser.manifest import FileRef, Manifest, Segment

STATIC_KINDS = ("encoder", "context")  # static QDQ, calibrated on the inputs the segment sees in the fp32 chain


class _InputsReader(CalibrationDataReader):
    """Calibration inputs for one segment: what the fp32 chain before it gives for each clip."""

    def __init__(self, inputs: list[np.ndarray], input_name: str):
        self._items = iter([{input_name: x} for x in inputs])

    def get_next(self):
        return next(self._items, None)


def chain_inputs(directory: Path, manifest: Manifest, clips: list[np.ndarray], upto: int) -> list[np.ndarray]:
    """Each clip preprocessed exactly as the runtime does, run through the fp32 segments before chain[upto]."""
    values = [encoder_input(c, manifest.normalize) for c in clips]
    for seg in manifest.chain[:upto]:
        session = ort.InferenceSession(str(directory / seg.files["fp32"].file), providers=["CPUExecutionProvider"])
        values = [session.run(None, {seg.input: v})[0] for v in values]
    return values


def _preprocessed(source: Path, work: Path) -> Path:
    """Shape inference + graph clean-up that onnxruntime's quantiser recommends."""
    target = work / source.name
    try:
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    except Exception:  # pre-processing is an optimisation; quantise the original if it fails
        return source
    return target


def first_conv(path: Path) -> list[str]:
    """The name of the graph's first Conv (nodes are stored in topological order), as a list for nodes_to_exclude."""
    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"][:1]


def quantize_static_segment(source: Path, target: Path, inputs: list[np.ndarray], input_name: str,
                            exclude: list[str]) -> None:
    """Static per-channel QDQ: int8 weights per output channel, uint8 activations with calibrated ranges."""
    quantize_static(source, target, _InputsReader(inputs, input_name), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"], nodes_to_exclude=exclude)


def _with_int8(segment: Segment, ref: FileRef) -> Segment:
    return Segment(segment.name, segment.kind, segment.input, segment.output, segment.parameters,
                   segment.files | {"int8": ref}, segment.layers)


def quantize_model(directory: Path, manifest: Manifest, calibration: list[np.ndarray], int8_encoder: bool = True) -> list[str]:
    """Write *.int8.onnx beside the fp32 files, add them to `manifest` (in place); returns what was quantised.

    int8_encoder=False keeps the encoder and context fp32 (the static, calibrated ones); so does an empty
    calibration list.
    """
    from edge_ser.engine import global_pool_threads

    from .errors import ExportError

    if global_pool_threads() is not None:
        raise ExportError("quantize before running the runtime with its shared thread pool in this process (or in "
                           "another process): onnxruntime's quantiser opens sessions with threads of their own, "
                           "which onnxruntime refuses once a process-wide pool exists")
    done = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for i, seg in enumerate(manifest.chain):
            fp32 = directory / seg.files["fp32"].file
            target = fp32.with_name(fp32.stem + ".int8.onnx")
            if seg.kind == "blocks":
                quantize_dynamic(_preprocessed(fp32, work), target, op_types_to_quantize=["MatMul"],
                                 weight_type=QuantType.QInt8, per_channel=False)
            elif seg.kind in STATIC_KINDS and int8_encoder and calibration:
                source = _preprocessed(fp32, work)
                exclude = first_conv(source) if seg.kind == "encoder" else []
                quantize_static_segment(source, target, chain_inputs(directory, manifest, calibration, i), seg.input, exclude)
            else:
                continue
            manifest.chain[i] = _with_int8(seg, FileRef(target.name, sha256_of(target), target.stat().st_size))
            done.append(seg.name)
    return done
