"""Live audio, measured: latency after the end of an utterance (streaming vs the same utterance as a whole
clip), the real-time factor of `edge-ser listen` on a 10-minute recording, and memory over a 1-hour stream.

Latency: espeak-ng utterances (benchmarks/speech.py) fed to a push-to-talk stream in 20 ms chunks, the end
marked with the last chunk; Result.latency_ms is the work after the mark. The same samples go through
Classifier.classify; both figures are the runtime's own (samples to answer), interleaved, medians. Models:
the demo, and a base-size wav2vec2 (768 wide, 12 layers, random weights) with a layer-norm CNN and no
per-clip normalisation, exported here with exits 3/8/10 (the layout that streams exactly).

    apt-get install espeak-ng
    python benchmarks/bench_stream.py                  # ~15 minutes on 2 cores
    python benchmarks/bench_stream.py --skip-base      # the demo only
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402
from speech import RATE, lay_out, utterances  # noqa: E402

from edge_ser import Classifier  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASE_DIR = Path(__file__).resolve().parent / ".cache" / "base-stream"
CHUNK = 320  # 20 ms


def export_base_stream(out: Path, calibration: list[np.ndarray]) -> Path:
    """A base-size model that streams exactly: layer-norm CNN, raw waveform; fp32 + int8, streaming checked."""
    import torch

    from edge_ser.manifest import load_manifest
    from edge_ser_torch.backbone import load_encoder
    from edge_ser_torch.config import ModelConfig
    from edge_ser_torch.onnx_export import ExportOptions, export_model, record_streaming
    from edge_ser_torch.quantize import quantize_model

    if (out / "manifest.yaml").is_file() and "int8" in load_manifest(out).streaming.precisions:
        return out
    torch.manual_seed(0)
    overrides = {"feat_extract_norm": "layer", "conv_bias": True, "do_stable_layer_norm": True}
    from edge_ser_torch.model import SelfDistilledSER

    model = SelfDistilledSER(ModelConfig(), 7, encoder=load_encoder(None, "wav2vec2", overrides)).eval()
    labels = ["anger", "disgust", "fear", "guilt", "happiness", "sadness", "surprise"]
    manifest = export_model(model, labels, out, name="base-stream", normalize=False,
                            options=ExportOptions(int8=False, verify_seconds=(1.0, 3.3)))
    quantize_model(out, manifest, calibration)
    manifest.save(out)
    record_streaming(out, manifest, ["fp32", "int8"], ExportOptions())
    return out


def stream_latency(classifier: Classifier, utterance: np.ndarray, exit: int) -> float:
    stream = classifier.stream(RATE, exit=exit, endpoint=None)
    for offset in range(0, utterance.size - CHUNK, CHUNK):
        stream.accept(utterance[offset : offset + CHUNK])
    [result] = stream.accept(utterance[(utterance.size - 1) // CHUNK * CHUNK :], end_of_utterance=True)
    return result.latency_ms


def latency_table(model: Path, precision: str, clips: list[np.ndarray], repeats: int) -> dict:
    classifier = Classifier(model, precision=precision)
    assert classifier.manifest.streams_exactly(precision), f"{model} does not stream exactly at {precision}"
    rows = {}
    for e in classifier.manifest.exits:
        whole, streamed = [], []
        for _ in range(repeats):  # interleaved: a burst of load on the shared machine hits both
            for clip in clips:
                whole.append(classifier.classify(clip, RATE, exit=e.layer).latency_ms)
                streamed.append(stream_latency(classifier, clip, e.layer))
        rows[str(e.layer)] = {"whole_ms": float(np.median(whole)), "stream_ms": float(np.median(streamed)),
                              "ratio": float(np.median(streamed) / np.median(whole))}
        print(f"{model.name} {precision} exit {e.layer}: whole {rows[str(e.layer)]['whole_ms']:.1f} ms, "
              f"stream {rows[str(e.layer)]['stream_ms']:.1f} ms ({rows[str(e.layer)]['ratio']:.2f}x)", flush=True)
    return rows


def listen_rtf(model: Path, precision: str, raw: Path, seconds: float) -> dict:
    """`edge-ser listen -` on the raw recording, as fast as it reads: wall time / audio time, in its own process."""
    began = time.perf_counter()
    with open(raw, "rb") as source:
        done = subprocess.run([sys.executable, "-m", "edge_ser.cli", "listen", "-", "--model", str(model), "--json",
                               "--precision", precision, "--vad", "energy"],  # the model's share, not the detector's
                              stdin=source, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - began
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return {"wall_s": wall, "audio_s": seconds, "rtf": wall / seconds, "utterances": len(lines),
            "median_latency_ms": float(np.median([d["latency_ms"] for d in lines]))}


MEMORY_PROBE = """
import sys, numpy as np, psutil
from edge_ser import Classifier, EndpointOptions
audio = np.fromfile(sys.argv[2], dtype="<i2")
stream = Classifier(sys.argv[1], precision=sys.argv[3]).stream(16000, endpoint=EndpointOptions(detector="energy"))
process, rss, found = psutil.Process(), [], 0
for lap in range(int(sys.argv[4])):
    for offset in range(0, audio.size, 320):
        found += len(stream.accept(audio[offset : offset + 320]))
        if offset % (16000 * 60) == 0:
            rss.append(process.memory_info().rss / 2**20)
found += len(stream.flush())
print(found, " ".join(f"{r:.2f}" for r in rss))
"""


def stream_memory(model: Path, precision: str, raw: Path, laps: int) -> dict:
    """Resident memory, once a minute of audio, over `laps` passes of the recording in one stream."""
    began = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(model), str(raw), precision, str(laps)],
                         capture_output=True, text=True, check=True).stdout.split()
    rss = [float(x) for x in out[1:]]
    warm = rss[5]  # after 5 minutes of audio
    return {"minutes": len(rss), "utterances": int(out[0]), "rss_mb_per_minute": rss, "after_warmup_mb": warm,
            "max_after_warmup_mb": max(rss[5:]), "growth_after_warmup_mb": max(rss[5:]) - warm,
            "wall_s": time.perf_counter() - began}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-base", action="store_true", help="the demo only")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    demo = ROOT / "models" / "demo"
    clips = [c for c in utterances(12, seed=7) if 2.0 <= c.size / RATE <= 4.0][:4]
    data: dict = {"utterance_seconds": [c.size / RATE for c in clips], "chunk_ms": 20, "latency": {}}
    # export first: onnxruntime's quantiser opens sessions with their own threads, which it cannot do once the
    # runtime's process-wide pool exists
    base = None if args.skip_base else export_base_stream(BASE_DIR, clips)
    for precision in ("fp32", "int8"):
        data["latency"][f"demo {precision}"] = latency_table(demo, precision, clips, args.repeats)
    if base is not None:
        for precision in ("fp32", "int8"):
            data["latency"][f"base {precision}"] = latency_table(base, precision, clips, max(2, args.repeats // 2))

    recording = lay_out(utterances(150, seed=11), snr_db=20, seed=11)
    ten_minutes = np.resize(recording.audio, 600 * RATE)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "ten_minutes.raw"
        np.round(np.clip(ten_minutes, -1, 1) * 32767).astype("<i2").tofile(raw)
        data["listen_rtf"] = {p: listen_rtf(demo, p, raw, 600.0) for p in ("fp32", "int8")}
        print("listen RTF:", {p: round(v["rtf"], 4) for p, v in data["listen_rtf"].items()}, flush=True)
        data["memory_1h"] = stream_memory(demo, "fp32", raw, laps=6)
        print(f"1 h stream: {data['memory_1h']['after_warmup_mb']:.1f} MB after 5 min, growth after that "
              f"{data['memory_1h']['growth_after_warmup_mb']:+.2f} MB", flush=True)
    save("stream", data)


if __name__ == "__main__":
    main()
