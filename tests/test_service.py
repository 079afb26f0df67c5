"""`edge-ser serve` over real sockets: the protocol end to end, many clients, hostile clients, SIGTERM, the C client.

The server runs as a user starts it (a subprocess of the edge-ser command, on the shipped demo model), except
where a test must hold the model still (backpressure, fairness): there the Service runs in this process.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from wyoming.event import Event

from edge_ser import EndpointOptions
from edge_ser.service.protocol import Limits, encode_event

SAMPLES = Path(__file__).resolve().parent.parent / "models" / "demo" / "samples"
ENERGY = EndpointOptions(detector="energy")
CLIENT_DIR = Path(__file__).resolve().parent.parent / "clients" / "c"


def speech_scene(order=(0, 1), rate=16000) -> np.ndarray:
    """Demo sentences with quiet between them, as float32 at `rate`: one utterance per sentence."""
    import soxr

    clips = [sf.read(SAMPLES / name, dtype="float32")[0] for name in ("easy_high-rising.wav", "hard_pressed.wav")]
    rng = np.random.default_rng(0)
    gap = lambda s: (0.001 * rng.standard_normal(int(s * 16000))).astype(np.float32)  # noqa: E731
    scene = np.concatenate([gap(0.6)] + [part for i in order for part in (clips[i], gap(1.2))])
    return scene if rate == 16000 else soxr.resample(scene, 16000, rate).astype(np.float32)


def pcm(samples: np.ndarray, width: int = 2) -> bytes:
    scale = 32767 if width == 2 else 2147483647
    return np.round(np.clip(samples, -1, 1) * scale).astype("<i2" if width == 2 else "<i4").tobytes()


def read_one(file) -> Event | None:
    """The next event on a binary file object, or None at its end."""
    line = file.readline()
    if not line:
        return None
    header = json.loads(line)
    data = header.get("data") or {}
    if header.get("data_length"):
        data.update(json.loads(file.read(header["data_length"])))
    payload = file.read(header["payload_length"]) if header.get("payload_length") else None
    return Event(header["type"], data, payload)


def as_served(samples: np.ndarray, width: int = 2) -> np.ndarray:
    """The samples as the server decodes the PCM it is sent: quantised to `width` bytes and scaled back."""
    sent = np.frombuffer(pcm(samples, width), "<i2" if width == 2 else "<i4")
    return sent.astype(np.float32) / np.iinfo(sent.dtype).max


class Client:
    """A plain blocking Wyoming client on a real socket (what any language could write from the README)."""

    def __init__(self, address, timeout: float = 30.0):
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.file = self.sock.makefile("rb")

    def send(self, kind: str, data: dict | None = None, payload: bytes | None = None) -> None:
        self.sock.sendall(encode_event(Event(type=kind, data=data or {}, payload=payload)))

    def receive(self) -> Event | None:
        return read_one(self.file)

    def until_done(self) -> list[Event]:
        events = []
        while (event := self.receive()) is not None:
            events.append(event)
            if event.type == "emotion-stop":
                break
        return events

    def stream(self, samples: np.ndarray, rate: int, width: int = 2, chunk_s: float = 0.02, mode: str | None = None):
        if mode:
            self.send("classify", {"mode": mode})
        fmt = {"rate": rate, "width": width, "channels": 1}
        self.send("audio-start", fmt)
        step = max(1, round(chunk_s * rate))
        for i in range(0, samples.size, step):
            self.send("audio-chunk", fmt, pcm(samples[i : i + step], width))
        self.send("audio-stop")
        return self.until_done()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def start_server(*args, cwd=None) -> tuple[subprocess.Popen, str]:
    """`edge-ser serve ARGS --vad energy` as a subprocess; returns it once it says where it is ready. The energy
    detector: the demo's synthetic sentences are what it is sure of (detectors are compared in bench_rooms)."""
    process = subprocess.Popen([sys.executable, "-m", "edge_ser.cli", "serve", *map(str, args), "--vad", "energy"],
                               cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if "ready on " in line:
            return process, line.split("ready on ", 1)[1].strip()
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"the server did not start: {process.stderr.read()}")


def address_of(uri: str):
    if uri.startswith("unix://"):
        return uri[len("unix://") :]
    host, port = uri[len("tcp://") :].rsplit(":", 1)
    return (host, int(port))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One unix-socket server shared by the module's tests (each abuse must leave it serving the others)."""
    path = tmp_path_factory.mktemp("sock") / "edge-ser.sock"
    process, uri = start_server("--uri", f"unix://{path}", "--idle-timeout", "1.5s", "--max-clip", "5s")
    yield address_of(uri)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def tcp_server():
    process, uri = start_server("--uri", "tcp://127.0.0.1:0")
    yield uri
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def classifier():
    from edge_ser import Classifier

    return Classifier(shared_pool=False)  # no process-wide pool: a later test may still export (quantise) here


def in_process(classifier, samples: np.ndarray, rate: int, chunk_s: float = 0.02):
    stream = classifier.stream(rate, endpoint=ENERGY)
    results = []
    step = max(1, round(chunk_s * rate))
    for i in range(0, samples.size, step):
        results += stream.accept(samples[i : i + step])
    return results + stream.flush()


def results_of(events: list[Event]) -> list[dict]:
    return [e.data for e in events if e.type == "emotion"]


# ---- the protocol --------------------------------------------------------------------------------


def test_describe_is_answered_with_info_naming_the_model(server):
    client = Client(server)
    client.send("describe")
    info = client.receive()
    assert info.type == "info"
    model = info.data["emotion"][0]["models"][0]
    assert model["name"] == "demo" and model["labels"][0] == "breathy-slow" and model["exits"] == [3, 8, 10, 12]
    assert info.data["emotion"][0]["endpoint"]["detector"] == "energy"  # as the server was started
    client.send("ping", {"text": "x"})
    assert client.receive() == Event("pong", {"text": "x"})


def test_a_stream_gets_voice_events_then_one_result_per_utterance_then_stop(server, classifier):
    scene = speech_scene()
    client = Client(server)
    events = client.stream(scene, 16000)
    kinds = [e.type for e in events]
    assert kinds == ["voice-started", "voice-stopped", "emotion", "voice-started", "voice-stopped", "emotion",
                     "emotion-stop"], kinds
    expected = in_process(classifier, as_served(scene), 16000)
    got = results_of(events)
    assert [r["label"] for r in got] == [r.label for r in expected]
    for served, local in zip(got, expected, strict=True):
        assert served["start"] == pytest.approx(local.start) and served["end"] == pytest.approx(local.end)
        assert served["exit_layer"] == local.exit_layer
        for label, p in local.probabilities.items():
            assert served["probabilities"][label] == pytest.approx(p, abs=1e-6)
    assert events[0].data["timestamp"] == round(1000 * got[0]["start"])
    assert events[1].data["timestamp"] == round(1000 * got[0]["end"])


def test_several_clients_at_once_each_get_what_an_in_process_stream_gives(server, classifier):
    cases = [((0, 1), 16000, 2), ((1, 0), 8000, 2), ((1, 0), 44100, 4), ((0, 1), 22050, 4)]
    outcomes: dict[int, list[Event]] = {}

    def run(i):
        order, rate, width = cases[i]
        outcomes[i] = Client(server).stream(speech_scene(order, rate), rate, width=width, chunk_s=0.05)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i, (order, rate, width) in enumerate(cases):
        expected = in_process(classifier, as_served(speech_scene(order, rate), width), rate, 0.05)
        got = results_of(outcomes[i])
        assert [(r["label"], r["exit_layer"]) for r in got] == [(r.label, r.exit_layer) for r in expected], (rate, width)
        assert [r["end"] for r in got] == pytest.approx([r.end for r in expected])


def test_push_to_talk_ends_utterances_where_the_client_says(server):
    scene = speech_scene()
    client = Client(server)
    client.send("classify", {"mode": "push-to-talk"})
    fmt = {"rate": 16000, "width": 2, "channels": 1}
    client.send("audio-start", fmt)
    client.send("audio-chunk", fmt, pcm(scene[:32000]))
    client.send("voice-stopped")
    client.send("audio-chunk", fmt, pcm(scene[32000:56000]))
    client.send("audio-stop")
    events = client.until_done()
    got = results_of(events)
    assert [(r["start"], r["end"], r["ended_by"]) for r in got] == [(0.0, 2.0, "marked"), (2.0, 3.5, "marked")]
    assert not [e for e in events if e.type.startswith("voice-")]  # no detector: no voice events


def test_a_clip_request_is_classified_as_the_classify_command_would(server, classifier):
    audio = sf.read(SAMPLES / "hard_pressed.wav", dtype="int16")[0]
    events = Client(server).stream(audio.astype(np.float32) / 32767, 16000, mode="clip")
    assert [e.type for e in events] == ["emotion", "emotion-stop"]
    local = classifier.classify(audio, 16000)
    assert events[0].data["label"] == local.label and events[0].data["exit_layer"] == local.exit_layer
    assert events[0].data["speech"] is True and "start" not in events[0].data


def test_a_clip_past_the_limit_is_refused_and_the_connection_goes_on(server):
    client = Client(server)
    events = client.stream(np.zeros(16000 * 5 + 320, np.float32), 16000, chunk_s=0.5, mode="clip")  # limit 5 s
    assert [e.type for e in events] == ["error", "emotion-stop"] and events[0].data["code"] == "too-large"
    exactly = client.stream(np.zeros(16000 * 5, np.float32), 16000, chunk_s=0.5, mode="clip")  # exactly the limit
    assert [e.type for e in exactly] == ["emotion", "emotion-stop"]


# ---- hostile clients: each gets an error or a closed connection; the others go on -------------------


def served(server) -> bool:
    client = Client(server)
    client.send("describe")
    ok = client.receive().type == "info"
    client.close()
    return ok


@pytest.mark.parametrize("header, code", [
    ({"type": "audio-chunk", "payload_length": 10_000_000_000}, "too-large"),
    ({"type": "audio-chunk", "data_length": 1 << 20}, "too-large"),
    ({"type": "audio-chunk", "payload_length": -5}, "bad-event"),
    ({"data": {}}, "bad-event"),
])
def test_a_header_claiming_too_much_or_nonsense_is_refused_before_reading_it(server, header, code):
    client = Client(server)
    client.sock.sendall(json.dumps(header).encode() + b"\n" + b"\0" * 1000)
    error = client.receive()
    assert error.type == "error" and error.data["code"] == code, error
    assert client.receive() is None  # closed: the byte stream can no longer be framed
    assert served(server)


@pytest.mark.parametrize("raw, code", [
    (b"{not json\n", "bad-event"),
    (b"x" * 20_000 + b"\n", "too-large"),  # a header line past 16 KiB
    (b'{"type": "describe", "data_length": 4}\n[1]\n', "bad-event"),
])
def test_malformed_input_is_one_error_then_a_closed_connection(server, raw, code):
    client = Client(server)
    client.sock.sendall(raw)
    error = client.receive()
    assert error.type == "error" and error.data["code"] == code
    assert client.receive() is None
    assert served(server)


def test_protocol_slips_are_errors_and_the_stream_goes_on(server, classifier):
    scene = speech_scene((0,))
    client = Client(server)
    client.send("transcribe-please")  # an unknown type
    client.send("audio-chunk", {"rate": 16000, "width": 2, "channels": 1}, b"\0\0")  # before audio-start
    fmt = {"rate": 16000, "width": 2, "channels": 1}
    client.send("audio-start", {"rate": 16000, "width": 3, "channels": 1})  # a width PCM does not have
    client.send("audio-start", fmt)
    half = scene.size // 2
    client.send("audio-chunk", fmt, pcm(scene[:half]))
    client.send("audio-chunk", fmt, b"\1\2\3")  # not a whole number of samples
    client.send("audio-chunk", {"rate": 8000, "width": 2, "channels": 1}, pcm(scene[:800]))  # the rate changes
    client.send("audio-chunk", fmt, pcm(scene[half:]))
    client.send("audio-stop")
    events = client.until_done()
    codes = [e.data["code"] for e in events if e.type == "error"]
    assert codes == ["unknown-event", "unexpected-event", "bad-audio", "bad-audio", "bad-audio"]
    assert [r["label"] for r in results_of(events)] == [r.label for r in in_process(classifier, as_served(scene), 16000)]


def test_a_client_that_sends_nothing_is_timed_out(server):
    client = Client(server)
    began = time.monotonic()
    error = client.receive()
    assert error.type == "error" and error.data["code"] == "timeout"
    assert 1.4 < time.monotonic() - began < 10
    assert client.receive() is None


def test_a_client_that_vanishes_mid_utterance_releases_its_stream(server):
    fmt = {"rate": 16000, "width": 2, "channels": 1}
    for _ in range(3):
        client = Client(server)
        client.send("audio-start", fmt)
        client.send("audio-chunk", fmt, pcm(speech_scene((0,))[:30000]))
        client.sock.close()  # gone, mid-utterance
    assert served(server)


def test_the_unix_socket_is_for_owner_and_group_only(server):
    mode = stat.S_IMODE(os.stat(server).st_mode)
    assert mode & 0o007 == 0 and mode & 0o660 == 0o660, oct(mode)


# ---- the server as a process: tcp, limits, remote binding, SIGTERM -----------------------------------


def test_tcp_binds_loopback_and_refuses_other_hosts_without_the_option():
    r = subprocess.run([sys.executable, "-m", "edge_ser.cli", "serve", "--uri", "tcp://0.0.0.0:10700"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--allow-remote" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "edge_ser.cli", "serve", "--uri", "ftp://x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unix:///PATH" in r.stderr


def test_tcp_serves_and_more_clients_than_the_limit_are_turned_away_then_sigterm_finishes_utterances():
    process, uri = start_server("--uri", "tcp://127.0.0.1:0", "--max-clients", "2")
    try:
        address = address_of(uri)
        first, second = Client(address), Client(address)
        first.send("describe")
        second.send("describe")
        assert first.receive().type == "info" and second.receive().type == "info"
        third = Client(address)  # one more than the limit
        assert third.receive().data["code"] == "busy" and third.receive() is None
        fmt = {"rate": 16000, "width": 2, "channels": 1}
        before = {}
        for client in (first, second):  # each mid-utterance when the server is told to stop
            client.send("audio-start", fmt)
            client.send("audio-chunk", fmt, pcm(speech_scene((1,))[:40000]))
            client.send("describe")  # a round trip: its info comes after everything sent before it was taken in
            before[client] = []
            while (event := client.receive()).type != "info":
                before[client].append(event)
        process.send_signal(signal.SIGTERM)
        for client in (first, second):
            events = before[client] + client.until_done()
            got = results_of(events)
            assert [e.type for e in events] == ["voice-started", "voice-stopped", "emotion", "emotion-stop"]
            assert len(got) == 1 and got[0]["ended_by"] == "marked"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_stdio_serves_one_client_on_standard_input_and_output():
    scene = speech_scene((0,))
    fmt = {"rate": 16000, "width": 2, "channels": 1}
    request = b"".join(encode_event(Event(t, d, p)) for t, d, p in [
        ("audio-start", fmt, None), ("audio-chunk", fmt, pcm(scene)), ("audio-stop", {}, None)])
    r = subprocess.run([sys.executable, "-m", "edge_ser.cli", "serve", "--uri", "stdio://", "--vad", "energy"],
                       input=request,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = io.BytesIO(r.stdout)
    types = [e.type for e in iter(lambda: read_one(out), None)]
    assert types == ["voice-started", "voice-stopped", "emotion", "emotion-stop"]


# ---- in this process: the scheduler and backpressure ------------------------------------------------


def test_clients_take_turns_a_flood_from_one_delays_another_by_one_job_at_most():
    from edge_ser.service.server import FairScheduler

    ran: list[str] = []

    async def main():
        scheduler = FairScheduler()
        worker = asyncio.create_task(scheduler.run())
        futures = [scheduler.submit("flood", lambda i=i: ran.append(f"flood{i}") or []) for i in range(6)]
        futures.append(scheduler.submit("quiet", lambda: ran.append("quiet") or []))
        futures += [scheduler.submit("third", lambda: ran.append("third") or [])]
        await asyncio.gather(*futures)
        worker.cancel()
        scheduler.close()

    asyncio.run(main())
    assert ran[:4] == ["flood0", "quiet", "third", "flood1"], ran
    assert [r for r in ran if r.startswith("flood")] == [f"flood{i}" for i in range(6)]  # one client's in order


class InProcess:
    """A Service on a unix socket in a thread of this process (to hold its model still, or set its limits)."""

    def __init__(self, classifier, path: Path, limits: Limits):
        from edge_ser.service import Service
        from edge_ser.service.server import Address

        self.service = Service(classifier, endpoint=ENERGY, limits=limits)
        self.loop = asyncio.new_event_loop()
        serving = self.service.serve(Address("unix", path=path))
        # a daemon: a server a broken test left stuck must not keep the test process from ending
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(serving,), daemon=True)
        self.thread.start()
        while not path.exists():
            time.sleep(0.01)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.service.stop)
        self.thread.join(30)


def flood(sock: socket.socket, message: bytes, most: int) -> int:
    """Write `message` over and over without reading, until the peer has taken nothing for a second, has closed,
    or `most` bytes are written; the bytes written (whole messages and a part)."""
    sock.setblocking(False)
    written, stalled_since = 0, time.monotonic()
    while time.monotonic() - stalled_since < 1.0 and written < most:
        offset = written % len(message)
        try:
            written += sock.send(message[offset:])
            stalled_since = time.monotonic()
        except BlockingIOError:
            time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            break
    sock.setblocking(True)
    return written


def test_a_client_faster_than_the_model_is_slowed_not_buffered(tmp_path, classifier, monkeypatch):
    from edge_ser.service.session import Session

    gate = threading.Event()
    accepted = []
    original = Session._accept

    def slow_accept(self, samples, end=False):
        gate.wait(30)
        accepted.append(samples.size)
        return original(self, samples, end)

    monkeypatch.setattr(Session, "_accept", slow_accept)
    server = InProcess(classifier, tmp_path / "s.sock", Limits(pending_bytes=64 * 1024))
    client = Client(str(tmp_path / "s.sock"))
    fmt = {"rate": 16000, "width": 2, "channels": 1}
    client.send("audio-start", fmt)
    chunk = encode_event(Event("audio-chunk", fmt, pcm(np.zeros(16000, np.float32))))  # 32 kB: 1 s of audio
    try:
        written = flood(client.sock, chunk, 400 * len(chunk))
        assert written < 100 * len(chunk), f"the server read {written} bytes while the model held still"
        gate.set()
        rest = (-written) % len(chunk)
        client.sock.sendall(chunk[len(chunk) - rest :])
        client.send("audio-stop")
        events = client.until_done()
        assert events[-1].type == "emotion-stop"
        assert sum(accepted) == 16000 * (written + rest) // len(chunk)  # nothing lost
    finally:
        gate.set()
        server.stop()


def test_a_flood_of_small_events_behind_a_busy_model_is_bounded_and_a_non_reader_closed(tmp_path, classifier,
                                                                                      monkeypatch):
    from edge_ser.service.session import Session

    gate = threading.Event()
    original = Session._accept
    monkeypatch.setattr(Session, "_accept", lambda self, samples, end=False: gate.wait(30) and original(self, samples, end))
    server = InProcess(classifier, tmp_path / "s.sock", Limits(pending_bytes=64 * 1024, idle_seconds=1.0))
    client = Client(str(tmp_path / "s.sock"))
    try:
        fmt = {"rate": 16000, "width": 2, "channels": 1}
        client.send("audio-start", fmt)
        client.send("audio-chunk", fmt, pcm(np.zeros(320, np.float32)))  # the model holds this one still
        describe = encode_event(Event("describe")) * 100
        written = flood(client.sock, describe, 20 << 20)  # each answer is ~1 kB: 20 MB asks for 500 MB of replies
        assert written < 4 << 20, f"the server read {written} bytes of requests while the model held still"
        gate.set()  # now the answers flow, and the client reads none of them: it is closed
        began = time.monotonic()
        with pytest.raises((ConnectionError, AssertionError, json.JSONDecodeError)):
            while True:  # what it had sent, then the end
                assert client.receive() is not None
        assert time.monotonic() - began < 10
        assert served(str(tmp_path / "s.sock"))
    finally:
        gate.set()
        server.stop()


def test_a_client_waiting_for_a_slow_answer_is_not_idle(tmp_path, classifier, monkeypatch):
    original = classifier.classify
    monkeypatch.setattr(classifier, "classify", lambda *a, **k: time.sleep(1.5) or original(*a, **k))
    server = InProcess(classifier, tmp_path / "s.sock", Limits(idle_seconds=0.5))
    try:
        client = Client(str(tmp_path / "s.sock"))
        events = client.stream(speech_scene((0,)), 16000, chunk_s=1.0, mode="clip")
        assert [e.type for e in events] == ["emotion", "emotion-stop"]  # 1.5 s of work, though idle after 0.5 s
        began = time.monotonic()
        assert client.receive().data["code"] == "timeout"  # nothing pending and nothing sent: idle
        assert 0.4 < time.monotonic() - began < 5
    finally:
        server.stop()


def test_a_clip_at_a_high_rate_is_held_at_the_models_rate(classifier):
    from edge_ser.options import RunOptions
    from edge_ser.service.session import Session

    session = Session(classifier, RunOptions(), ENERGY, Limits(), Event("info"))
    session.on_event(Event("classify", {"mode": "clip"}))
    fmt = {"rate": 96000, "width": 2, "channels": 2}
    session.on_event(Event("audio-start", fmt))
    tone = np.sin(2 * np.pi * 220 * np.arange(96000) / 96000).astype(np.float32) * 0.3
    session.on_event(Event("audio-chunk", fmt, pcm(np.repeat(tone, 2))))  # 1 s of stereo at 96 kHz
    held = sum(c.size for c in session.clip)
    assert 15000 <= held <= 16000  # 16 kHz (soxr holds back its filter's delay until the end)
    step = session.on_event(Event("audio-stop"))
    [result, done] = step.job()
    assert result.type == "emotion" and result.data["seconds"] == pytest.approx(1.0, abs=1e-3)
    assert done.type == "emotion-stop"


# ---- the C client ------------------------------------------------------------------------------------


def _c_toolchain() -> str | None:
    if shutil.which(os.environ.get("CC", "cc")) is None or shutil.which("make") is None:
        return "no C compiler or make"
    if not any(Path(p, "cjson", "cJSON.h").exists() for p in ("/usr/include", "/usr/local/include")):
        return "cJSON headers missing (apt-get install libcjson-dev)"
    return None


@pytest.fixture(scope="module")
def c_listen(tmp_path_factory) -> Path:
    missing = _c_toolchain()
    if missing:
        pytest.skip(missing)
    build = tmp_path_factory.mktemp("c")
    shutil.copytree(CLIENT_DIR, build / "c")
    r = subprocess.run(["make", "-C", str(build / "c"), "CFLAGS=-O2 -Wall -Wextra -std=c99"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning" not in r.stdout + r.stderr, r.stdout + r.stderr
    return build / "c" / "build" / "listen"


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_the_c_client_prints_what_listen_prints_for_the_same_bytes(server, tcp_server, c_listen, transport):
    raw = pcm(speech_scene((0, 1, 0)))
    uri = f"unix://{server}" if transport == "unix" else tcp_server
    c = subprocess.run([str(c_listen), "--uri", uri], input=raw, capture_output=True, timeout=120)
    assert c.returncode == 0, c.stderr
    py = subprocess.run([sys.executable, "-m", "edge_ser.cli", "listen", "-", "--json", "--vad", "energy"], input=raw,
                        capture_output=True, timeout=120)
    assert py.returncode == 0, py.stderr
    served = [json.loads(line) for line in c.stdout.decode().splitlines()]
    local = [json.loads(line) for line in py.stdout.decode().splitlines()]
    assert len(served) == 3
    assert [(r["label"], r["start"], r["end"], r["exit_layer"]) for r in served] == \
        [(r["label"], r["start"], r["end"], r["exit_layer"]) for r in local]


def test_the_c_client_marks_push_to_talk_and_reports_refusals(server, c_listen):
    raw = pcm(speech_scene((0,))) + b"\x01"  # ends mid-sample
    c = subprocess.run([str(c_listen), "--uri", f"unix://{server}", "--mode", "push-to-talk"], input=raw,
                       capture_output=True, timeout=120)
    assert c.returncode == 1 and "mid-sample" in c.stderr.decode()
    results = [json.loads(line) for line in c.stdout.decode().splitlines()]
    assert len(results) == 1 and results[0]["ended_by"] == "marked" and results[0]["start"] == 0.0
    silent = subprocess.run([str(c_listen), "--uri", f"unix://{server}", "--mode", "clip"], input=b"\0\0" * 100,
                            capture_output=True, timeout=120)  # 6 ms: shorter than the model's shortest input
    assert silent.returncode == 1 and "refused" in silent.stderr.decode() and silent.stdout == b""


def test_the_c_client_says_what_went_wrong_in_one_line(c_listen, tmp_path):
    r = subprocess.run([str(c_listen), "--uri", f"unix://{tmp_path}/nobody.sock"], input=b"", capture_output=True,
                       timeout=30)
    assert r.returncode != 0 and r.stderr.decode().count("\n") == 1 and "nobody.sock" in r.stderr.decode()
    r = subprocess.run([str(c_listen), "--uri", "http://x"], input=b"", capture_output=True, timeout=30)
    assert r.returncode == 2 and "unix://" in r.stderr.decode()


def test_the_systemd_unit_runs_serve_with_flags_it_has_and_sandboxes_it():
    import configparser
    import shlex

    from edge_ser.cli import build_parser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(Path(__file__).resolve().parent.parent / "deploy" / "edge-ser.service")
    service = unit["Service"]
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/edge-ser") and command[1] == "serve"
    args = build_parser().parse_args(command[1:])  # every flag in the unit exists
    assert args.uri.startswith("unix:///run/edge-ser/")
    assert service["Restart"] == "on-failure" and service["RuntimeDirectory"] == "edge-ser"
    assert service["DynamicUser"] == "yes" and service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict" and service["PrivateTmp"] == "yes"


def test_uploads_past_the_bound_are_told_to_retry_and_those_held_finish(classifier, monkeypatch):
    """The page's recordings share the model's one worker with every stream: past UPLOADS_AT_ONCE held at once,
    another is answered 503 at once (before its body is read), and the held ones still get their results."""
    pytest.importorskip("aiohttp")
    import urllib.error
    import urllib.request

    import edge_ser.service.web as web
    from edge_ser.service import Service

    gate, entered = threading.Event(), []
    real = web.classify_upload

    def held(service, body, name):  # the model, held still on the first recording
        entered.append(name)
        gate.wait(30)
        return real(service, body, name)

    monkeypatch.setattr(web, "classify_upload", held)
    service = Service(classifier, endpoint=ENERGY)
    loop = asyncio.new_event_loop()
    serving = service.serve(None, frontends=[web.WebFrontend("127.0.0.1", 0)])
    threading.Thread(target=loop.run_until_complete, args=(serving,), daemon=True).start()
    while service.http_bound is None:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{service.http_bound[1]}/api/classify"
    body = (SAMPLES / "easy_high-rising.wav").read_bytes()

    def post(name: str) -> tuple[int, dict]:
        request = urllib.request.Request(url, data=body, method="POST", headers={"X-Filename": name})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read())

    answers: dict[str, tuple[int, dict]] = {}
    first = [threading.Thread(target=lambda n=n: answers.update({n: post(n)})) for n in ("a.wav", "b.wav")]
    for thread in first:
        thread.start()
    while not entered:
        time.sleep(0.01)
    time.sleep(0.5)  # the second is held too, queued behind the first
    status, refusal = post("c.wav")
    assert status == 503 and "recordings are being classified; try again" in refusal["error"]
    gate.set()
    for thread in first:
        thread.join(60)
    assert {n: (code, data["result"]["label"]) for n, (code, data) in answers.items()} == {
        "a.wav": (200, "high-rising"), "b.wav": (200, "high-rising")}
    loop.call_soon_threadsafe(service.stop)
