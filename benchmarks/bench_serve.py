"""The service, measured: what the socket costs per utterance, how many real-time streams one machine serves,
the server's memory, and its start-up time to the first result.

- Price of the service: espeak-ng utterances (benchmarks/speech.py) streamed in 20 ms chunks as push-to-talk,
  then the end marked. In process: the wall time of the Stream.accept call that marks the end. Through
  `edge-ser serve` on a unix socket: from sending the mark (voice-stopped) to receiving the emotion event, after
  a ping round trip has shown that every chunk before it was taken in. Rounds alternate between the two, each
  side in its own process (onnxruntime's threads of one never spin against the other's).
- Streams served: K clients (one asyncio process) each stream the same 30 s recording (utterances with pauses,
  pink noise at 20 dB SNR) in real time in 100 ms chunks, started 0-1 s apart, in listen mode (the server's
  endpointer, with serve's default detector unless --vad names another). Latency after the end of an
  utterance, as a client sees it: from sending the chunk in which the
  server could decide the end (end + endpoint delay) to receiving its result. "Nothing lost": every client gets
  as many results as a lone stream does. The capacity is the largest K whose p95 stays within 2x of K=1's p95.
- Memory: the server's resident memory (psutil, sampled every 100 ms) at its peak during each K.
- Start-up: from launching `edge-ser serve` to "ready", and to the first result of a 1 s clip sent at once.

Models: the demo (default precision), and a base-size export (bench_stream.py's base-stream, int8, which
streams its encoder exactly; random weights, so no early exit: every utterance runs to exit 12).

    apt-get install espeak-ng
    python benchmarks/bench_serve.py                # ~12 minutes on 2 cores
    python benchmarks/bench_serve.py --skip-base
    python benchmarks/bench_serve.py --skip-base --vad energy --out serve_energy    # the cheapest detector
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402
from speech import RATE, lay_out, utterances  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo"
BASE_DIR = Path(__file__).resolve().parent / ".cache" / "base-stream"
MARK_CHUNK = 320  # 20 ms: the price-of-the-service runs
LOAD_CHUNK = 1600  # 100 ms: the capacity runs

sys.path.insert(0, str(ROOT))
from edge_ser.service.protocol import Limits, encode_event  # noqa: E402
from wyoming.event import Event  # noqa: E402

FORMAT = {"rate": RATE, "width": 2, "channels": 1}


def pcm(samples: np.ndarray) -> bytes:
    return np.round(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def event_bytes(kind: str, data: dict | None = None, payload: bytes | None = None) -> bytes:
    return encode_event(Event(type=kind, data=data or {}, payload=payload))


class Server:
    """`edge-ser serve` in its own process, on a unix socket."""

    vad = "auto"  # the endpointer's detector (--vad)

    def __init__(self, model: Path, precision: str | None, socket_path: Path):
        self.path = socket_path
        self.launched = time.perf_counter()
        extra = (["--precision", precision] if precision else []) + ["--vad", self.vad]
        self.process = subprocess.Popen([sys.executable, "-m", "edge_ser.cli", "serve", "--model", str(model),
                                         "--uri", f"unix://{socket_path}", "--max-clients", "256", *extra],
                                        stderr=subprocess.PIPE, text=True)
        line = ""
        while "ready on" not in line:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                raise SystemExit(f"the server did not start: {self.process.stderr.read()}")
        self.ready_s = time.perf_counter() - self.launched
        threading.Thread(target=self.process.stderr.read, daemon=True).start()  # keep its stderr flowing

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    line = await reader.readline()
    if not line:
        return None
    header = json.loads(line)
    data = header.get("data") or {}
    if header.get("data_length"):
        data.update(json.loads(await reader.readexactly(header["data_length"])))
    if header.get("payload_length"):
        await reader.readexactly(header["payload_length"])
    return Event(header["type"], data)


# ---- the price of the service -----------------------------------------------------------------------

IN_PROCESS = """
import json, sys, time
import numpy as np
from edge_ser import Classifier
clips = np.load(sys.argv[2], allow_pickle=True)
classifier = Classifier(sys.argv[1], precision=sys.argv[3] or None)
out = []
for clip in clips:
    stream = classifier.stream(16000, endpoint=None)
    last = (clip.size - 1) // 320 * 320
    for offset in range(0, last, 320):
        stream.accept(clip[offset : offset + 320])
    began = time.perf_counter()
    [result] = stream.accept(clip[last:], end_of_utterance=True)
    out.append({"wall_ms": 1000 * (time.perf_counter() - began), "latency_ms": result.latency_ms,
                "label": result.label})
print(json.dumps(out))
"""


async def socket_marks(path: Path, clips: list[np.ndarray]) -> list[dict]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    out = []
    for clip in clips:
        writer.write(event_bytes("classify", {"mode": "push-to-talk"}) + event_bytes("audio-start", FORMAT))
        last = (clip.size - 1) // MARK_CHUNK * MARK_CHUNK
        for offset in range(0, last + 1, MARK_CHUNK):
            writer.write(event_bytes("audio-chunk", FORMAT, pcm(clip[offset : offset + MARK_CHUNK])))
        writer.write(event_bytes("ping", {"text": "sync"}))
        await writer.drain()
        while (await read_event(reader)).type != "pong":
            pass
        began = time.perf_counter()
        writer.write(event_bytes("voice-stopped"))
        await writer.drain()
        while (event := await read_event(reader)).type != "emotion":
            pass
        out.append({"wall_ms": 1000 * (time.perf_counter() - began), "latency_ms": event.data["latency_ms"],
                    "label": event.data["label"]})
        writer.write(event_bytes("audio-stop"))
        while (await read_event(reader)).type != "emotion-stop":
            pass
    writer.close()
    return out


def price_of_service(model: Path, precision: str | None, clips: list[np.ndarray], rounds: int, tmp: Path) -> dict:
    clip_file = tmp / "clips.npy"
    array = np.empty(len(clips), dtype=object)
    array[:] = clips
    np.save(clip_file, array, allow_pickle=True)
    server = Server(model, precision, tmp / "price.sock")
    local, served = [], []
    try:
        for _ in range(rounds):  # alternated: a burst of load on the shared machine hits both
            done = subprocess.run([sys.executable, "-c", IN_PROCESS, str(model), str(clip_file), precision or ""], capture_output=True,
                                  text=True, check=True)
            local += json.loads(done.stdout)
            served += asyncio.run(socket_marks(server.path, clips))
    finally:
        server.stop()
    assert [r["label"] for r in local] == [r["label"] for r in served], "the service answered otherwise"
    med = lambda rows, key: float(np.median([r[key] for r in rows]))  # noqa: E731
    row = {"utterances": len(local), "in_process_ms": med(local, "wall_ms"), "served_ms": med(served, "wall_ms"),
           "served_model_ms": med(served, "latency_ms"), "in_process_model_ms": med(local, "latency_ms")}
    row["price_ms"] = row["served_ms"] - row["in_process_ms"]
    row["ratio"] = row["served_ms"] / row["in_process_ms"]
    print(f"{model.name}: after the mark, in process {row['in_process_ms']:.1f} ms, through the socket "
          f"{row['served_ms']:.1f} ms ({row['ratio']:.2f}x)", flush=True)
    return row


# ---- streams served ---------------------------------------------------------------------------------


async def one_stream(path: Path, audio: np.ndarray, delay: float) -> dict:
    await asyncio.sleep(delay)
    reader, writer = await asyncio.open_unix_connection(str(path))
    sent_at: list[float] = []
    latencies: list[float] = []
    results = 0

    async def receive() -> None:
        nonlocal results
        while (event := await read_event(reader)) is not None:
            if event.type == "emotion":
                results += 1
                decided = event.data["end"] + event.data["endpoint_delay_ms"] / 1000
                chunk = min(max(0, -(-round(decided * RATE) // LOAD_CHUNK) - 1), len(sent_at) - 1)  # the one it ends
                latencies.append(1000 * (time.perf_counter() - sent_at[chunk]))
            if event.type == "emotion-stop":
                return

    listener = asyncio.create_task(receive())
    writer.write(event_bytes("audio-start", FORMAT))
    began = time.perf_counter()
    for offset in range(0, audio.size, LOAD_CHUNK):
        await asyncio.sleep(max(0.0, began + offset / RATE - time.perf_counter()))  # real time
        writer.write(event_bytes("audio-chunk", FORMAT, pcm(audio[offset : offset + LOAD_CHUNK])))
        sent_at.append(time.perf_counter())
        await writer.drain()
    writer.write(event_bytes("audio-stop"))
    await writer.drain()
    await listener
    writer.close()
    return {"results": results, "latencies_ms": latencies}


async def many_streams(path: Path, audio: np.ndarray, clients: int, server: Server) -> dict:
    peak = [server.rss_mb()]
    running = True

    async def watch() -> None:
        while running:
            peak.append(server.rss_mb())
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    rng = np.random.default_rng(clients)
    outcomes = await asyncio.gather(*(one_stream(path, audio, float(rng.uniform(0, 1))) for _ in range(clients)))
    running = False
    await watcher
    return {"results_per_client": [o["results"] for o in outcomes],
            "latencies_ms": [ms for o in outcomes for ms in o["latencies_ms"]], "peak_rss_mb": max(peak)}


def served_by(path: Path, audio: np.ndarray, clients: int, server: Server, samples: int) -> dict:
    """K clients at once, the run repeated until `samples` utterance latencies are in (p95 needs a few dozen)."""
    runs = []
    while sum(len(r["latencies_ms"]) for r in runs) < samples:
        runs.append(asyncio.run(many_streams(path, audio, clients, server)))
    latencies = np.array([ms for r in runs for ms in r["latencies_ms"]])
    return {"clients": clients, "runs": len(runs), "utterances": int(latencies.size),
            "results_per_client": sorted({n for r in runs for n in r["results_per_client"]}),
            "p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95)),
            "max_ms": float(latencies.max()), "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def capacity(model: Path, precision: str | None, audio: np.ndarray, counts: list[int], tmp: Path, name: str) -> dict:
    server = Server(model, precision, tmp / f"{name}.sock")
    rows = []
    try:
        idle_mb = server.rss_mb()
        lone = asyncio.run(many_streams(server.path, audio, 1, server))  # warm-up: opens every segment once
        expected = lone["results_per_client"][0]
        for clients in counts:
            row = served_by(server.path, audio, clients, server, samples=40)
            row["nothing_lost"] = row["results_per_client"] == [expected]
            row["p95_vs_one"] = row["p95_ms"] / (rows[0]["p95_ms"] if rows else row["p95_ms"])
            row["p50_vs_one"] = row["p50_ms"] / (rows[0]["p50_ms"] if rows else row["p50_ms"])
            rows.append(row)
            print(f"{name}: {clients:>2} streams: p50 {row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms "
                  f"({row['p95_vs_one']:.2f}x one), results per client {row['results_per_client']} (lone stream "
                  f"{expected}), peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
            if row["p95_vs_one"] > 4:
                break  # far past capacity: more would only queue
    finally:
        server.stop()
    served = [r["clients"] for r in rows if r["p95_vs_one"] <= 2.0 and r["nothing_lost"]]
    return {"idle_rss_mb": idle_mb, "results_per_stream": expected, "rows": rows,
            "capacity_streams": max(served) if served else 0}


# ---- start-up -----------------------------------------------------------------------------------------


async def first_result(path: Path, clip: np.ndarray) -> None:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(event_bytes("classify", {"mode": "clip"}) + event_bytes("audio-start", FORMAT)
                 + event_bytes("audio-chunk", FORMAT, pcm(clip)) + event_bytes("audio-stop"))
    await writer.drain()
    while (await read_event(reader)).type != "emotion":
        pass
    writer.close()


def start_up(model: Path, precision: str | None, clip: np.ndarray, repeats: int, tmp: Path) -> dict:
    ready, first = [], []
    for i in range(repeats):
        server = Server(model, precision, tmp / f"start{i}.sock")
        asyncio.run(first_result(server.path, clip))
        first.append(time.perf_counter() - server.launched)
        ready.append(server.ready_s)
        server.stop()
    return {"ready_s": float(np.median(ready)), "first_result_s": float(np.median(first)), "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-base", action="store_true", help="the demo only")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of the price measurement")
    parser.add_argument("--clients", default="1,2,4,8,16,32,64,128", help="stream counts to try (stops past 4x)")
    parser.add_argument("--vad", default="auto", help="the server's voice-activity detector (default: serve's own)")
    parser.add_argument("--out", default="serve", help="results file name in benchmarks/results (default serve)")
    args = parser.parse_args()
    from edge_ser.endpoint import EndpointOptions

    Server.vad = args.vad
    counts = [int(c) for c in args.clients.split(",")]
    clips = [c for c in utterances(16, seed=5) if 1.5 <= c.size / RATE <= 4.0][:8]
    recording = lay_out(utterances(8, seed=21), snr_db=20, seed=21)
    audio = np.resize(recording.audio, 30 * RATE)
    models: dict[str, tuple[Path, str | None]] = {"demo": (DEMO, None)}  # the demo at its default precision
    if not args.skip_base:
        from bench_stream import export_base_stream

        models["base int8"] = (export_base_stream(BASE_DIR, clips), "int8")
    data: dict = {"clip_seconds": [c.size / RATE for c in clips], "recording_seconds": 30, "load_chunk_ms": 100,
                  "vad": EndpointOptions(detector=args.vad).resolved().detector,
                  "limits": {"pending_bytes": Limits().pending_bytes}, "cores": os.cpu_count(), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, precision) in models.items():
            row: dict = {"precision": precision or "default"}
            row["start_up"] = start_up(model, precision, clips[0][:RATE], 3, Path(tmp))
            print(f"{name}: ready {row['start_up']['ready_s']:.2f} s, first result {row['start_up']['first_result_s']:.2f} s",
                  flush=True)
            row["price"] = price_of_service(model, precision, clips, args.rounds, Path(tmp))
            row["capacity"] = capacity(model, precision, audio, counts, Path(tmp), name.replace(" ", "-"))
            data["models"][name] = row
    save(args.out, data)


if __name__ == "__main__":
    main()
