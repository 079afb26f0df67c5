"""What checking an exit costs at base size: CNN, LSTM and GRU exit heads (768 features) vs transformer layers.

Each head is exported alone with the project's exporter path (HeadGraph) and timed in onnxruntime
on the hidden states of a 3 s clip (149 frames), interleaved with a 3-layer fp32 and int8 block of
the base-size export made by bench_base.py (run that first).

    python benchmarks/bench_heads.py
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, machine, save  # noqa: E402


def main() -> None:
    import onnxruntime as ort
    import torch

    from edge_ser_torch.config import ModelConfig
    from edge_ser_torch.model import SelfDistilledSER
    from edge_ser_torch.onnx_export import HeadGraph, export_graph

    base = Path(__file__).resolve().parent / ".cache" / "base"
    frames = 149  # 3 s at 16 kHz through wav2vec2's CNN
    hidden = np.random.default_rng(0).standard_normal((1, frames, 768)).astype(np.float32)
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for block in ("cnn", "lstm", "gru"):
            torch.manual_seed(0)
            config = ModelConfig(backbone={"num_hidden_layers": 4}, exit_layers=[3], block=block)
            model = SelfDistilledSER(config, 7).eval()
            path = Path(tmp) / f"{block}.onnx"
            export_graph(HeadGraph(model, 3), torch.from_numpy(hidden), path, "hidden", ["logits"])
            sessions[f"{block} head"] = ort.InferenceSession(str(path))
        for precision, name in (("fp32", "blocks_00_03.onnx"), ("int8", "blocks_00_03.int8.onnx")):
            if (base / name).exists():
                sessions[f"3 layers {precision}"] = ort.InferenceSession(str(base / name))
        times = interleaved({k: (lambda s=s: s.run(None, {"hidden": hidden})) for k, s in sessions.items()}, 30)
    result = {k: float(np.median(v)) for k, v in times.items()}
    print(f"machine: {machine()}; 3 s clip ({frames} frames), median of 30 interleaved runs")
    print("| graph | ms | / 3 int8 layers |\n|---|---:|---:|")
    ref = result.get("3 layers int8")
    for k, v in result.items():
        print(f"| {k} | {v:.2f} | {v / ref:.2f} |" if ref else f"| {k} | {v:.2f} | - |")
    save("heads", {"median_ms": result, "over_3_int8_layers": {k: v / ref for k, v in result.items()} if ref else None})


if __name__ == "__main__":
    main()
