"""int8 variants of an exported model directory.

- Transformer blocks: dynamic int8 on MatMul only (weights int8, activations
  quantised on the fly); the attention and FFN matmuls dominate their cost.
- CNN encoder: static per-channel QDQ with calibration audio. Dynamic
  quantisation would turn its Convs into ConvInteger, which onnxruntime runs far
  slower than fp32 Conv on x86; static QDQ keeps fused int8 kernels.
- Heads stay fp32: they are small, and the LSTM/GRU ops gain little.
Accuracy per exit of each variant is measured by the caller on dev data.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_ser.audio import normalize
from edge_ser.engine import sha256_of
from edge_ser.manifest import FileRef, Manifest, Segment


class _WaveformReader(CalibrationDataReader):
    """Calibration inputs preprocessed exactly as the runtime will feed the encoder (normalised or raw)."""

    def __init__(self, clips: list[np.ndarray], input_name: str, normalized: bool):
        self._items = iter([{input_name: (normalize(c) if normalized else c.astype(np.float32))[None, :]} for c in clips])

    def get_next(self):
        return next(self._items, None)


def _preprocessed(source: Path, work: Path) -> Path:
    """Shape inference + graph clean-up that onnxruntime's quantiser recommends."""
    target = work / source.name
    try:
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    except Exception:  # pre-processing is an optimisation; quantise the original if it fails
        return source
    return target


def _with_int8(segment: Segment, ref: FileRef) -> Segment:
    return Segment(segment.name, segment.kind, segment.input, segment.output, segment.parameters,
                   segment.files | {"int8": ref}, segment.layers)


def quantize_model(directory: Path, manifest: Manifest, calibration: list[np.ndarray], int8_encoder: bool = True) -> list[str]:
    """Write *.int8.onnx beside the fp32 files, add them to `manifest` (in place); returns what was quantised."""
    done = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for i, seg in enumerate(manifest.chain):
            fp32 = directory / seg.files["fp32"].file
            target = fp32.with_name(fp32.stem + ".int8.onnx")
            if seg.kind == "blocks":
                quantize_dynamic(_preprocessed(fp32, work), target, op_types_to_quantize=["MatMul"],
                                 weight_type=QuantType.QInt8, per_channel=False)
            elif seg.kind == "encoder" and int8_encoder and calibration:
                quantize_static(_preprocessed(fp32, work), target, _WaveformReader(calibration, seg.input, manifest.normalize),
                                quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                op_types_to_quantize=["Conv", "MatMul", "Gemm"])
            else:
                continue
            manifest.chain[i] = _with_int8(seg, FileRef(target.name, sha256_of(target), target.stat().st_size))
            done.append(seg.name)
    return done
