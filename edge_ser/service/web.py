"""`edge-ser serve --http HOST:PORT`: a page that shows what the device hears, from the same process and model.

One page (plain HTML, CSS and JavaScript inside the package, found with importlib.resources: no build step,
nothing fetched at run time, so it works on a device with no internet) and three endpoints:

- GET /api/info: the model (labels, exits, parameters, UAR per exit and precision, the early-exit rule, the
  streaming verdict: what `edge-ser info` says), how this server runs it, and the device (what `edge-ser bench`
  reports about the machine, the precision calibrate chose).
- GET /ws: a WebSocket that speaks the service's own events (session.py) as JSON text frames, with audio-chunk
  payloads as binary frames of PCM in the format audio-start announced: the browser's microphone is one more
  client of the service, resampled on the server like any stream, under the same limits (message sizes,
  pending audio, idle time, the connection count) and the same fair scheduler. A closed tab ends its request
  as audio-stop would and releases its stream.
- POST /api/classify: a recording in the body (anything libsndfile reads, at most Limits.clip_seconds long):
  `edge-ser classify`'s result with its windows, and the probabilities at every exit of each window
  (Classifier.exit_probabilities), so the page can show where early exit stops and why.

With `serve --device NAME`, GET /ws/device streams the events of the device's own microphone to every page
that watches it (read-only). aiohttp serves all of it on the asyncio loop the Wyoming service already runs: one
library for HTTP and WebSockets, with message-size bounds built in, and no second server process.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import logging
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from urllib.parse import unquote

import numpy as np
from wyoming.event import Event

from ..audio import AudioError, decode, duration_seconds, window_bounds
from ..errors import BudgetError, EdgeSerError
from ..policy import certainty as certainty_of
from .protocol import ProtocolError
from .server import Connection, Service, _is_loopback
from .session import Session, Step, error

log = logging.getLogger("edge_ser.service")
PAGE = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
        "/style.css": ("style.css", "text/css"), "/worklet.js": ("worklet.js", "text/javascript")}
UPLOAD_BYTES = 64 * 2**20  # a recording sent for classification: 2 min of 48 kHz stereo float is 46 MB
UPLOADS_AT_ONCE = 2  # recordings held for classification at once: past it a page is told to retry (503), so that
# a burst of uploads cannot hold UPLOAD_BYTES each without end


class WebError(EdgeSerError, ValueError):
    """The page cannot be served as asked (a bad --http address, no aiohttp): one line."""


def parse_http(text: str, allow_remote: bool = False) -> tuple[str, int]:
    """HOST:PORT for --http (port 0: any free one); loopback unless allow_remote, as for the service."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise WebError(f"--http {text!r}: give HOST:PORT with a port from 0 (any free port) to 65535, "
                       "e.g. 127.0.0.1:8080")
    if not _is_loopback(host) and not allow_remote:
        raise WebError(f"--http {text!r}: {host} is reachable from other hosts and the page has no "
                       "authentication; bind 127.0.0.1 or pass --allow-remote")
    return host, int(port)


def page_file(name: str) -> bytes:
    return (importlib.resources.files("edge_ser.service") / "page" / name).read_bytes()


def event_json(event: Event) -> str:
    return json.dumps({"type": event.type, "data": event.data or {}}, allow_nan=False)


def parse_text_event(text: str) -> Event:
    """A text frame from the page: {"type": str, "data": {...}}; anything else is a protocol error (not fatal)."""
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError("a text message must be a JSON event {\"type\": ..., \"data\": {...}}", "bad-event") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str) or not isinstance(
            message.get("data", {}), dict):
        raise ProtocolError("a text message must be a JSON object with a string type and an object data",
                            "bad-event")
    return Event(type=message["type"], data=message.get("data") or {})


class WebConnection(Connection):
    """One page's WebSocket: the service's Connection over WebSocket frames (text: JSON events; binary: the
    audio-chunk payloads of the request audio-start opened)."""

    def __init__(self, service: Service, ws, name: str):
        super().__init__(service, None, None, name)
        self.ws = ws

    async def _receive(self) -> Event | None:
        from aiohttp import WSMsgType

        message = await self.ws.receive()
        if message.type == WSMsgType.TEXT:
            return parse_text_event(message.data)  # a malformed one: refused, the socket goes on
        if message.type == WSMsgType.BINARY:
            form = self.session.format
            data = {"rate": form.rate, "width": form.width, "channels": form.channels} if form else {}
            return Event(type="audio-chunk", data=data, payload=message.data)
        if message.type == WSMsgType.ERROR:  # e.g. a frame over the size limit
            raise ProtocolError(str(self.ws.exception()), "too-large", fatal=True)
        return None  # closing or closed

    async def _write(self, events: list[Event]) -> None:
        for event in events:
            if self.ws.closed:
                return
            await asyncio.wait_for(self.ws.send_str(event_json(event)), self.service.limits.idle_seconds)

    async def _abort(self) -> None:
        await self.ws.close()

    async def _close(self) -> None:
        await self.ws.close()


class DeviceMicrophone:
    """`serve --device NAME`: the device's own microphone as one more session, its events sent to every page
    watching /ws/device. Audio is read on a thread (PortAudio's callback) and handed to the loop."""

    def __init__(self, service: Service, device: str, chunk_seconds: float = 0.02):
        from ..listen import mic_chunks

        self.service, self.device = service, device
        self.rate, self._chunks = mic_chunks(device, service.classifier.manifest.sample_rate, chunk_seconds)
        self.watchers: set = set()
        self.session = Session(service.classifier, service.run, service.endpoint, service.limits, service.info)
        self.problem: str | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        arrived: asyncio.Queue = asyncio.Queue(maxsize=500)  # 10 s of 20 ms chunks: past it, audio is dropped

        def read() -> None:
            try:
                for chunk in self._chunks:
                    if self.service.stopping.is_set():
                        break
                    loop.call_soon_threadsafe(_put_or_drop, arrived, chunk)
            except EdgeSerError as err:
                self.problem = str(err)
                loop.call_soon_threadsafe(_put_or_drop, arrived, None)

        threading.Thread(target=read, name="edge-ser-microphone", daemon=True).start()
        await self._handle(self.session.on_event(Event("audio-start", {"rate": self.rate, "width": 4, "channels": 1})))
        while (chunk := await arrived.get()) is not None:
            pcm = (np.clip(chunk, -1.0, 1.0) * np.iinfo(np.int32).max).astype("<i4").tobytes()
            level = float(20 * np.log10(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)) + 1e-9))
            await self._broadcast([Event("level", {"dbfs": round(level, 1)})])
            await self._handle(self.session.on_event(Event("audio-chunk", {"rate": self.rate, "width": 4,
                                                                          "channels": 1}, payload=pcm)))
        if self.problem:
            await self._broadcast([error(self.problem, "device")])

    async def _handle(self, step: Step) -> None:
        await self._broadcast(step.reply)
        if step.job is not None:
            await self._broadcast(await self.service.scheduler.submit(self, step.job))

    async def _broadcast(self, events: list[Event]) -> None:
        for ws in list(self.watchers):
            for event in events:
                with contextlib.suppress(Exception):
                    await ws.send_str(event_json(event))


def _put_or_drop(queue: asyncio.Queue, item) -> None:
    with contextlib.suppress(asyncio.QueueFull):
        queue.put_nowait(item)


def model_info(service: Service) -> dict:
    """What the Model view shows: `edge-ser info`'s facts as data, how this server runs the model, the device."""
    from ..bench import device
    from ..precision import device_choice, verified_precisions

    classifier = service.classifier
    manifest = classifier.manifest
    precision = classifier.engine.precision
    exits = [{"layer": e.layer, "path_parameters": e.path_parameters, "dev_uar": e.dev_uar, "test_uar": e.test_uar,
              "dev_uar_by_precision": {p: r.dev_uar.get(e.layer) for p, r in manifest.precisions.items()},
              "megabytes": sum(s.file_for(precision).bytes for s in manifest.chain_to(e) + [e.head]) / 1e6}
             for e in manifest.exits]
    measure, rule = manifest.policy.rule() if manifest.policy else (None, None)
    exact = manifest.streaming.exact_at
    choice = device_choice(classifier.model_dir, manifest)
    profile = classifier.profile
    return {
        "model": {"name": manifest.name, "description": manifest.description, "labels": list(manifest.labels),
                  "sample_rate": manifest.sample_rate, "exits": exits, "default_precision": manifest.default_precision,
                  "verified_precisions": verified_precisions(manifest),
                  "early_exit": None if rule is None else {"measure": measure, **asdict(rule)},
                  "streaming": {"exact_at": exact, "encoder_streams": manifest.streams_exactly(precision),
                                "reason": manifest.streaming.reason},
                  "synthetic": manifest.provenance.synthetic},
        "server": {"precision": precision, "precision_from": classifier.precision_source,
                   "run": service.run.as_kwargs(), "detector": service.endpoint.resolved().detector,
                   "limits": {"clip_seconds": service.limits.clip_seconds, "clients": service.limits.clients,
                              "idle_seconds": service.limits.idle_seconds},
                   "device_microphone": service.web_device},
        "device": device() | {
            "precision_choice": None if choice is None else {"precision": choice.precision, "date": choice.date,
                                                             "full_depth_ms": choice.full_depth_ms},
            "profile": None if profile is None else {"precision": profile.precision, "device": profile.device,
                                                     "quantile": profile.quantile}},
    }


def classify_upload(service: Service, body: bytes, name: str) -> dict:
    """A job: the recording's result as `edge-ser classify` gives it, and each window's probabilities at every
    exit. Decoded from a temporary file (libsndfile reads it as it would a file on disk)."""
    classifier = service.classifier
    rate = classifier.manifest.sample_rate
    suffix = Path(name).suffix.lower()[:8] if Path(name).suffix.isascii() else ""
    with tempfile.NamedTemporaryFile(suffix=suffix) as held:
        held.write(body)
        held.flush()
        try:
            seconds = duration_seconds(held.name)
            if seconds > service.limits.clip_seconds:
                raise AudioError(f"the recording is {seconds:.1f} s long; this server classifies at most "
                                 f"{service.limits.clip_seconds:g} s (use the live view or edge-ser listen for long "
                                 "audio)")
            result = classifier.classify(held.name, options=service.run)
            samples = decode(held.name, rate)
        except AudioError as err:  # name the recording, not the temporary file it was decoded from
            raise AudioError(str(err).replace(held.name, name)) from None
    rule = classifier.stop_rule
    windows = []
    for start, end in window_bounds(samples.size, classifier.window_samples):
        if end - start < classifier.manifest.min_samples:
            continue
        probabilities = classifier.exit_probabilities(samples[start:end])
        so_far, stops_at, certainty = [], None, {}
        for layer, p in probabilities.items():  # the model's own stop rule, exit by exit (policy.StopRule)
            so_far.append(p)
            if rule is not None and rule.measure != "patience":
                certainty[str(layer)] = float(certainty_of(p[None, :], rule.measure)[0])
            if stops_at is None and rule is not None and rule.should_stop(so_far):
                stops_at = layer
        windows.append({"start": start / rate, "end": end / rate, "stops_at": stops_at, "certainty": certainty,
                        "exits": {str(layer): dict(zip(classifier.manifest.labels, map(float, p), strict=True))
                                  for layer, p in probabilities.items()}})
    data = result.to_dict()
    data["source"] = name
    stop = None if rule is None else {"measure": rule.measure, "threshold": rule.threshold, "patience": rule.patience}
    return {"result": data, "windows": windows, "stop_rule": stop}


def build_app(service: Service):
    """The aiohttp application: the page, /api/info, /api/classify, /ws (and /ws/device with a microphone)."""
    from aiohttp import web

    limits = service.limits
    count, uploads = [0], [0]  # pages connected so far; recordings being classified now

    async def page(request: web.Request) -> web.Response:
        name, kind = PAGE[request.path]
        return web.Response(body=page_file(name), content_type=kind, headers={
            "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:"})

    async def info(request: web.Request) -> web.Response:
        return web.json_response(model_info(service))

    async def classify(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > UPLOAD_BYTES:
            return web.json_response({"error": f"the recording is over {UPLOAD_BYTES // 2**20} MiB"}, status=413)
        if uploads[0] >= UPLOADS_AT_ONCE:
            return web.json_response({"error": f"{uploads[0]} recordings are being classified; try again shortly"},
                                     status=503, headers={"Retry-After": "1"})
        uploads[0] += 1
        try:
            return await classify_body(request)
        finally:
            uploads[0] -= 1

    async def classify_body(request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": f"the recording is over {UPLOAD_BYTES // 2**20} MiB"}, status=413)
        if not body:
            return web.json_response({"error": "send the recording as the request body"}, status=400)
        name = unquote(request.headers.get("X-Filename", "recording"))[:200]  # the page sends it URI-encoded

        def job():
            try:
                return [classify_upload(service, body, name)]
            except (AudioError, BudgetError) as err:
                return [{"error": str(err)}]

        outcome = (await service.scheduler.submit(object(), job))[0]  # a key of its own: one job, its own turn
        if not isinstance(outcome, dict):  # the scheduler answered with an error event (a bug in the job)
            return web.json_response({"error": (outcome.data or {}).get("text", "internal error")}, status=500)
        return web.json_response(outcome, status=422 if "error" in outcome else 200)

    async def socket(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=limits.payload_bytes, heartbeat=None)
        await ws.prepare(request)
        count[0] += 1
        name = f"page {count[0]}"
        why = service.busy()
        if why is not None:
            log.warning("%s: refused (%s)", name, why)
            await ws.send_str(event_json(error(f"{why}; try again later", "busy")))
            await ws.close()
            return ws
        await service.host(WebConnection(service, ws, name))
        return ws

    async def device_socket(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=4096, heartbeat=None)
        await ws.prepare(request)
        microphone = service.microphone
        if microphone is None:
            await ws.send_str(event_json(error("this server was started without --device", "no-device")))
            await ws.close()
            return ws
        microphone.watchers.add(ws)
        try:
            async for _ in ws:  # a watcher only listens; whatever it sends is ignored
                pass
        finally:
            microphone.watchers.discard(ws)
        return ws

    app = web.Application(client_max_size=UPLOAD_BYTES)
    for path in PAGE:
        app.router.add_get(path, page)
    app.router.add_get("/api/info", info)
    app.router.add_post("/api/classify", classify)
    app.router.add_get("/ws", socket)
    app.router.add_get("/ws/device", device_socket)
    return app


class WebFrontend:
    """`serve --http HOST:PORT [--device NAME]`: the page, started on the service's loop (Service.serve's frontends)."""

    def __init__(self, host: str, port: int, device: str | None = None):
        self.host, self.port, self.device = host, port, device
        self._runner = self._listening = None

    async def start(self, service: Service) -> None:
        self._runner, port = await start_web(service, self.host, self.port)
        service.http_bound = (self.host, port)
        if self.device is not None:
            service.web_device, service.microphone = self.device, DeviceMicrophone(service, self.device)
            self._listening = asyncio.create_task(service.microphone.run())

    async def stop(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
        if self._runner is not None:
            await self._runner.cleanup()


async def start_web(service: Service, host: str, port: int):
    """Start serving the page on the running loop; returns (runner, the port bound)."""
    try:
        from aiohttp import web
    except ImportError as err:
        raise WebError(f"--http needs the web extra ({err.name} is missing): pip install 'edge-ser[web]'") from None
    runner = web.AppRunner(build_app(service), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise WebError(f"cannot serve the page on {host}:{port}: {err.strerror}") from None
    bound = site._server.sockets[0].getsockname()[1]
    return runner, bound
