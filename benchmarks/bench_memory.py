"""Memory over a long run of clips of every length, and what the session option that keeps it flat costs.

onnxruntime keeps a memory pattern per input shape (`enable_mem_pattern`), and audio has a shape per length.
Soak: 4,000 classifications of the demo on clips of random length (0.5-4 s, random quiet noise) at random
exits, in a fresh process per variant, resident memory at runs 500 / 1,000 / 2,000 / 3,000 / 4,000:
  runtime: the sessions as the runtime opens them (memory patterns off);
  patterns on: the same with onnxruntime's default (memory patterns on), as the runtime did before;
  arena off: patterns on and `enable_cpu_mem_arena` off, the other knob users ask for.
Serve: one client streams 4,000 utterances of random length (0.5-4 s, cut from the demo's samples) through
`edge-ser serve` as push-to-talk, as fast as the server takes them; the server's resident memory at the same
checkpoints (in results).
Speed: full-depth classification of a 3 s clip with patterns off and on, interleaved in one process (30 rounds,
medians), on the demo and on the base-size export (bench_stream.py's base-stream, int8).

    python benchmarks/bench_memory.py              # ~3 minutes on 2 cores
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, save  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASE_DIR = Path(__file__).resolve().parent / ".cache" / "base-stream"
CHECKPOINTS = (500, 1000, 2000, 3000, 4000)
RUNS = CHECKPOINTS[-1]

VARIANT = """
import sys
from edge_ser.engine import Engine

def patch(variant):
    original = Engine._options
    def options(self):
        o = original(self)
        if variant in ("patterns on", "arena off"):
            o.enable_mem_pattern = True
        if variant == "arena off":
            o.enable_cpu_mem_arena = False
        return o
    Engine._options = options
"""

SOAK = VARIANT + """
import numpy as np, psutil
from edge_ser import Classifier
patch(sys.argv[1])
checkpoints = {int(n) for n in sys.argv[2].split(",")}
rng = np.random.default_rng(0)
classifier = Classifier(precision="int8")
exits = [e.layer for e in classifier.manifest.exits]
process, rss = psutil.Process(), []
for run in range(1, max(checkpoints) + 1):
    clip = (0.01 * rng.standard_normal(int(rng.uniform(0.5, 4.0) * 16000))).astype(np.float32)
    classifier.classify(clip, 16000, exit=int(rng.choice(exits)))
    if run in checkpoints:
        rss.append(process.memory_info().rss / 2**20)
print(" ".join(f"{r:.2f}" for r in rss))
"""


def soak(variant: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", SOAK, variant, ",".join(map(str, CHECKPOINTS))], capture_output=True,
                         text=True, check=True)
    return [float(x) for x in out.stdout.split()]


async def serve_soak(path: Path, server_pid: int) -> list[float]:
    """Stream CHECKPOINTS[-1] utterances through the server at `path`; its RSS after each checkpoint's result."""
    import asyncio
    import json

    import psutil
    import soundfile as sf
    from wyoming.event import Event

    from edge_ser.service.protocol import encode_event

    samples = ROOT / "models" / "demo" / "samples"
    source = np.concatenate([sf.read(f, dtype="int16")[0] for f in sorted(samples.glob("*.wav"))])
    fmt = {"rate": 16000, "width": 2, "channels": 1}
    rng = np.random.default_rng(2)
    reader, writer = await asyncio.open_unix_connection(str(path))
    server, rss, checkpoints = psutil.Process(server_pid), [], set(CHECKPOINTS)

    async def results() -> None:
        count = 0
        while count < RUNS:
            header = json.loads(await reader.readline())
            if header.get("data_length"):
                await reader.readexactly(header["data_length"])
            count += header["type"] == "emotion"
            if header["type"] == "emotion" and count in checkpoints:
                rss.append(server.memory_info().rss / 2**20)

    listening = asyncio.create_task(results())
    writer.write(encode_event(Event("classify", {"mode": "push-to-talk"})) + encode_event(Event("audio-start", fmt)))
    for _ in range(RUNS):
        length = int(rng.uniform(0.5, 4.0) * 16000)
        start = int(rng.integers(0, source.size - length))
        writer.write(encode_event(Event("audio-chunk", fmt, source[start : start + length].tobytes()))
                     + encode_event(Event("voice-stopped")))
        await writer.drain()
    await listening
    writer.close()
    return rss


def serve_memory() -> list[float]:
    import asyncio
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "soak.sock"
        server = subprocess.Popen([sys.executable, "-m", "edge_ser.cli", "serve", "--uri", f"unix://{path}",
                                   "--precision", "int8"], stderr=subprocess.PIPE, text=True)
        try:
            while "ready on" not in server.stderr.readline():
                pass
            return asyncio.run(serve_soak(path, server.pid))
        finally:
            server.terminate()
            server.wait(timeout=60)


def speed(model: Path, precision: str, rounds: int) -> dict:
    """ms for a 3 s clip at full depth, patterns off (the runtime) and on, interleaved in this process."""
    sys.path.insert(0, str(ROOT))
    from edge_ser import Classifier
    from edge_ser.engine import Engine

    original = Engine._options

    class PatternsOn(Engine):
        def _options(self):
            options = original(self)
            options.enable_mem_pattern = True
            return options

    runtime = Classifier(model, precision=precision)
    patterns = Classifier(model, precision=precision)
    patterns.engine = PatternsOn(model, patterns.manifest, precision)  # the same files and pool, patterns on
    clip = (0.1 * np.random.default_rng(1).standard_normal(48000)).astype(np.float32)
    last = runtime.manifest.exits[-1].layer
    times = interleaved({"runtime": lambda: runtime.classify(clip, 16000, exit=last),
                         "patterns on": lambda: patterns.classify(clip, 16000, exit=last)}, rounds)
    med = {name: float(np.median(t)) for name, t in times.items()}
    return {"runtime_ms": med["runtime"], "patterns_on_ms": med["patterns on"],
            "ratio": med["runtime"] / med["patterns on"], "rounds": rounds}


def main() -> None:
    data: dict = {"runs": RUNS, "checkpoints": CHECKPOINTS, "soak_rss_mb": {}, "speed": {}}
    for variant in ("runtime", "patterns on", "arena off"):
        rss = soak(variant)
        data["soak_rss_mb"][variant] = rss
        print(f"{variant:<12} RSS at runs {CHECKPOINTS}: {rss} MB; growth from 1,000 to {RUNS}: "
              f"{rss[-1] - rss[1]:+.1f} MB", flush=True)
    data["soak_growth_mb"] = {v: rss[-1] - rss[1] for v, rss in data["soak_rss_mb"].items()}
    data["serve_rss_mb"] = serve_memory()
    print(f"serve        RSS at utterances {CHECKPOINTS}: {data['serve_rss_mb']} MB", flush=True)
    data["speed"]["demo int8"] = speed(ROOT / "models" / "demo", "int8", 30)
    if (BASE_DIR / "manifest.yaml").is_file():
        data["speed"]["base int8"] = speed(BASE_DIR, "int8", 30)
    for name, row in data["speed"].items():
        print(f"{name}: patterns off {row['runtime_ms']:.2f} ms, on {row['patterns_on_ms']:.2f} ms "
              f"({row['ratio']:.3f}x)", flush=True)
    save("memory", data)


if __name__ == "__main__":
    main()
