"""`edge-ser serve`: one process, one model, many clients, over Wyoming on a local socket.

Every connection gets its own Session (its own stream); all of them share one Classifier, so one
onnxruntime thread pool and sessions opened once. The event loop only reads, checks and writes; the model
runs on one worker thread (onnxruntime's pool already uses every core for one run), fed by a round-robin
scheduler: each client's jobs run in the order they came, and clients take turns, so a client that sends
faster than real time delays another's utterance by at most one of its jobs. A client whose unclassified
audio and unsent replies pass Limits.pending_bytes is not read until they are done: its socket fills and its
writes wait (backpressure), instead of the server buffering without end; one that does not read its replies
for Limits.idle_seconds is closed.

SIGTERM and Ctrl-C stop accepting, end every open request as if its client had sent audio-stop (the
utterance in progress is classified and sent, then emotion-stop), close the connections and return.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import stat
import sys
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from wyoming.event import Event
from wyoming.info import Info

from .. import __version__
from ..classifier import Classifier
from ..endpoint import DEFAULT_ENDPOINT, EndpointOptions
from ..errors import EdgeSerError
from ..options import RunOptions
from .protocol import Limits, ProtocolError, encode_event, read_event
from .session import Session, Step, error

log = logging.getLogger("edge_ser.service")
SOCKET_MODE = 0o660  # owner and group: add the apps' users to the service's group
STEP_BYTES = 1024  # what one queued step counts for in Limits.pending_bytes besides its audio (its objects)


class ServiceError(EdgeSerError, ValueError):
    """The service cannot start as asked (a bad URI, a socket path in use): one line."""


@dataclass(frozen=True)
class Address:
    scheme: str  # unix | tcp | stdio
    path: Path | None = None
    host: str | None = None
    port: int | None = None


def parse_uri(uri: str, allow_remote: bool = False) -> Address:
    """unix:///path/to/socket, tcp://HOST:PORT (loopback unless allow_remote) or stdio://."""
    parts = urlparse(uri)
    if parts.scheme == "stdio":
        return Address("stdio")
    if parts.scheme == "unix":
        path = parts.path or parts.netloc
        if not path:
            raise ServiceError(f"--uri {uri!r}: a unix URI needs a socket path, e.g. unix:///run/edge-ser/edge-ser.sock")
        return Address("unix", path=Path(path))
    if parts.scheme == "tcp":
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port = None, None
        if not host or port is None:
            raise ServiceError(f"--uri {uri!r}: a tcp URI needs a host and a port from 0 (any free port) to 65535, "
                               "e.g. tcp://127.0.0.1:10700")
        if not _is_loopback(host) and not allow_remote:
            raise ServiceError(f"--uri {uri!r}: {host} is reachable from other hosts and Wyoming has no "
                               "authentication; bind 127.0.0.1 or pass --allow-remote")
        return Address("tcp", host=host, port=port)
    raise ServiceError(f"--uri {uri!r}: use unix:///PATH, tcp://HOST:PORT or stdio://")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def info_event(classifier: Classifier, run: RunOptions, endpoint: EndpointOptions, limits: Limits) -> Event:
    """The answer to `describe`: Wyoming's info (no ASR, TTS ... programs) plus an `emotion` program that says
    what this server classifies and how."""
    manifest = classifier.manifest
    data = Info().event().data
    data["emotion"] = [{
        "name": "edge-ser",
        "description": "speech emotion recognition with early exits",
        "version": __version__,
        "installed": True,
        "attribution": {"name": "edge-ser", "url": ""},
        "models": [{
            "name": manifest.name,
            "description": manifest.description,
            "labels": list(manifest.labels),
            "exits": [e.layer for e in manifest.exits],
            "precision": classifier.engine.precision,
            "sample_rate": manifest.sample_rate,
            "streams_encoder": manifest.streams_exactly(classifier.engine.precision),
        }],
        "modes": ["listen", "push-to-talk", "clip"],
        "run": run.as_kwargs(),
        "endpoint": {"detector": endpoint.resolved().detector, "min_speech_ms": endpoint.min_speech_ms,
                     "min_silence_ms": endpoint.min_silence_ms, "max_utterance_s": endpoint.max_utterance_s},
        "limits": {"payload_bytes": limits.payload_bytes, "clip_seconds": limits.clip_seconds,
                   "idle_seconds": limits.idle_seconds},
    }]
    return Event(type="info", data=data)


class FairScheduler:
    """Runs jobs one at a time on one worker thread; each key's jobs in order, keys in turn (round robin)."""

    def __init__(self) -> None:
        self._queues: dict[object, deque] = {}
        self._turns: deque = deque()  # keys with jobs waiting, in the order they get their next turn
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="edge-ser-model")

    def submit(self, key: object, job: Callable[[], list[Event]]) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(key, deque())
        if not queue:
            self._turns.append(key)
        queue.append((job, future))
        self._wake.set()
        return future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            if not self._turns:
                self._wake.clear()
                continue
            key = self._turns.popleft()
            queue = self._queues[key]
            job, future = queue.popleft()
            if queue:
                self._turns.append(key)
            else:
                del self._queues[key]
            try:
                events = await loop.run_in_executor(self._executor, job)
            except Exception as err:  # a bug in a job must not stop the service: its client hears of it
                log.exception("a job failed")
                events = [error(f"internal error: {type(err).__name__}: {err}", "internal")]
            if not future.cancelled():
                future.set_result(events)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class Connection:
    """One client: reads events, hands jobs to the scheduler, writes replies and results in order.

    The transport is three hooks: _receive (the next event), _write (a step's events) and _close; this class is
    a Wyoming socket's, web.WebConnection a page's WebSocket. Everything else (backpressure, idle clients, the
    order of replies, ending an open request) is one piece of code for both."""

    def __init__(self, service: Service, reader: asyncio.StreamReader | None, writer: asyncio.StreamWriter | None,
                 name: str):
        self.service, self.reader, self.writer, self.name = service, reader, writer, name
        self.session = Session(service.classifier, service.run, service.endpoint, service.limits, service.info)
        self.outbox: asyncio.Queue = asyncio.Queue()  # (events or a job's future of them, cost), in order; None ends
        self.pending = 0  # the cost of steps whose output is not yet written (Connection.take)
        self.room = asyncio.Event()
        self.room.set()

    async def serve(self) -> None:
        sender = asyncio.create_task(self._send())
        try:
            if await self._read():
                self.take(self.session.finish())  # the server is stopping: end the open request as audio-stop would
        finally:  # a client that left mid-request: its session and stream go with this object, unclassified
            self.outbox.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sender, self.service.limits.idle_seconds)
            await self._close()
            log.info("%s: closed", self.name)

    async def _read(self) -> bool:
        """Read events until the client leaves or breaks the protocol (False), or the server stops (True).

        A client is idle, and closed, when no whole event has come for Limits.idle_seconds while it has nothing
        pending: one waiting for a long clip's answer is not idle. An event half read stays half read while the
        timer restarts (cancelling it would lose the part already taken from the socket)."""
        limits = self.service.limits
        stop = asyncio.ensure_future(self.service.stopping.wait())
        reading: asyncio.Future | None = None
        try:
            while True:
                await self._wait_for_room(stop)
                if stop.done():
                    return True
                reading = reading or asyncio.ensure_future(self._receive())
                done, _ = await asyncio.wait({reading, stop}, timeout=limits.idle_seconds,
                                             return_when=asyncio.FIRST_COMPLETED)
                if reading not in done:
                    if stop.done():
                        return True
                    if self.pending:
                        continue  # its answers are still being worked out or written: not idle
                    self.take(Step(reply=[error(f"no event for {limits.idle_seconds:g} s; closing", "timeout")]))
                    return False
                try:
                    event = reading.result()
                except ProtocolError as err:
                    if not err.fatal:  # a message refused, the connection goes on
                        self.take(Step(reply=[error(str(err), err.code)]))
                        reading = None
                        continue
                    self.take(Step(reply=[error(f"{err}; closing", err.code)]))
                    return False
                except (ConnectionError, OSError):
                    return False
                reading = None
                if event is None:
                    return False
                self.take(self.session.on_event(event))
        finally:
            stop.cancel()
            if reading is not None:
                reading.cancel()

    async def _wait_for_room(self, stop: asyncio.Future) -> None:
        """Backpressure: while this client's audio waits for the model, do not read more of it."""
        if self.room.is_set():
            return
        room = asyncio.ensure_future(self.room.wait())
        await asyncio.wait({stop, room}, return_when=asyncio.FIRST_COMPLETED)
        room.cancel()

    def take(self, step: Step) -> None:
        """Queue a step's reply and job, in order. Its cost (audio bytes, plus STEP_BYTES for the step itself, so
        that a flood of tiny events is bounded too) counts as held until its output has been written."""
        cost = step.cost + STEP_BYTES
        self.pending += cost
        if self.pending >= self.service.limits.pending_bytes:
            self.room.clear()
        output: list[Event] | asyncio.Future = step.reply
        if step.job is not None:
            future = self.service.scheduler.submit(self, step.job)
            if step.reply:
                self.outbox.put_nowait((step.reply, 0))
            output = future
        self.outbox.put_nowait((output, cost))

    async def _send(self) -> None:
        limits = self.service.limits
        while (item := await self.outbox.get()) is not None:
            output, cost = item
            events = await output if isinstance(output, asyncio.Future) else output
            try:
                await self._write(events)
            except (TimeoutError, asyncio.TimeoutError):
                log.warning("%s: does not read its results; closing", self.name)
                await self._abort()
            except (ConnectionError, OSError, RuntimeError):
                pass  # the client has gone: its output is dropped, its cost released
            self.pending -= cost
            if self.pending < limits.pending_bytes:
                self.room.set()

    # ---- the transport: a Wyoming socket -------------------------------------------------------

    async def _receive(self) -> Event | None:
        """The next event, None when the client has left; ProtocolError (fatal) for a malformed one."""
        return await read_event(self.reader, self.service.limits)

    async def _write(self, events: list[Event]) -> None:
        """Send a step's events; TimeoutError when the client does not take them (not read for idle_seconds, or
        more than unsent_bytes waiting)."""
        if self.writer.is_closing():
            return
        for event in events:
            self.writer.write(encode_event(event))
        if self.writer.transport.get_write_buffer_size() > self.service.limits.unsent_bytes:
            raise TimeoutError
        await asyncio.wait_for(self.writer.drain(), self.service.limits.idle_seconds)

    async def _abort(self) -> None:
        self.writer.transport.abort()

    async def _close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class Service:
    """The long-running server: one Classifier, one scheduler, connections up to Limits.clients."""

    def __init__(self, classifier: Classifier, run: RunOptions | None = None,
                 endpoint: EndpointOptions | None = None, limits: Limits | None = None):
        self.classifier = classifier
        self.run, self.limits = run or RunOptions(), limits or Limits()
        self.endpoint = endpoint or DEFAULT_ENDPOINT
        run, limits = self.run, self.limits
        classifier.runner.plan(1.0, run)  # an exit the model lacks fails here
        self.info = info_event(classifier, run, self.endpoint, limits)
        self.connections: set[Connection] = set()
        self.stopping = asyncio.Event()
        self.scheduler: FairScheduler | None = None
        self.bound: Address | None = None  # where it listens, once it does (a tcp port 0 resolved)
        self.http_bound: tuple[str, int] | None = None  # where a frontend serves the page, once it does (web.py)
        self.web_device: str | None = None  # serve --device: the microphone the page can watch
        self.microphone = None  # its DeviceMicrophone (web.py), while serving
        self._count = 0

    def busy(self) -> str | None:
        """Why a new client cannot be served now, or None when it can (for every way in: socket, page)."""
        if self.stopping.is_set():
            return "the server is stopping"
        if len(self.connections) >= self.limits.clients:
            return f"this server serves at most {self.limits.clients} clients at once"
        return None

    async def host(self, connection: Connection) -> None:
        """Serve an admitted connection to its end, counted among the clients meanwhile."""
        self.connections.add(connection)
        log.info("%s: connected", connection.name)
        try:
            await connection.serve()
        finally:
            self.connections.discard(connection)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._count += 1
        name = f"client {self._count}"
        why = self.busy()
        if why is not None:
            log.warning("%s: refused (%s)", name, why)
            with contextlib.suppress(ConnectionError, OSError):
                writer.write(encode_event(error(f"{why}; try again later", "busy")))
                await writer.drain()
            writer.close()
            return
        await self.host(Connection(self, reader, writer, name))

    async def serve(self, address: Address | None, ready: Callable[[], None] | None = None,
                    frontends: Sequence = ()) -> None:
        """Serve until stop() (or SIGTERM/SIGINT when run by run_service); returns once every client is closed.
        address: the Wyoming socket (None: the frontends alone); frontends: more ways in on the same loop and
        scheduler, each with `async start(service)` and `async stop()` (web.WebFrontend: the page)."""
        self.scheduler = FairScheduler()
        worker = asyncio.create_task(self.scheduler.run())
        server = None
        started: list = []
        try:
            for frontend in frontends:
                await frontend.start(self)
                started.append(frontend)
            if address is not None and address.scheme == "stdio":
                reader, writer = await _stdio_streams(self.limits)
                if ready:
                    ready()
                await self._client(reader, writer)
                return
            if address is not None:
                server = await self._listen(address)
                if address.scheme == "tcp":  # port 0: the one the system chose
                    address = Address("tcp", host=address.host, port=server.sockets[0].getsockname()[1])
                self.bound = address
                log.info("serving %s on %s", self.classifier.manifest.name, _describe(address))
            if ready:
                ready()
            await self.stopping.wait()
            if server is not None:
                server.close()
            while self.connections:
                await asyncio.sleep(0.01)
        finally:
            if server is not None:
                server.close()
                if address.scheme == "unix":
                    with contextlib.suppress(OSError):
                        address.path.unlink()
            for frontend in reversed(started):
                await frontend.stop()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            self.scheduler.close()

    def stop(self) -> None:
        self.stopping.set()

    async def _listen(self, address: Address) -> asyncio.AbstractServer:
        limit = self.limits.header_bytes + 1
        if address.scheme == "tcp":
            try:
                return await asyncio.start_server(self._client, address.host, address.port, limit=limit)
            except OSError as err:
                raise ServiceError(f"cannot listen on tcp://{address.host}:{address.port}: {err.strerror}") from None
        path = address.path
        _clear_stale_socket(path)
        old = os.umask(0o777 & ~SOCKET_MODE)  # the socket is born owner-and-group only: no moment open to all
        try:
            return await asyncio.start_unix_server(self._client, str(path), limit=limit)
        except OSError as err:
            raise ServiceError(f"cannot listen on unix://{path}: {err.strerror}") from None
        finally:
            os.umask(old)


def _describe(address: Address) -> str:
    if address.scheme == "stdio":
        return "stdio://"
    return f"unix://{address.path}" if address.scheme == "unix" else f"tcp://{address.host}:{address.port}"


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket left by a server that died; refuse a live one, or a path that is not a socket."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ServiceError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody answers: a stale socket
        return
    finally:
        probe.close()
    raise ServiceError(f"{path}: another server is listening there")


async def _stdio_streams(limits: Limits) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limits.header_bytes + 1)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout.buffer)
    return reader, asyncio.StreamWriter(transport, protocol, None, loop)


def run_service(service: Service, address: Address | None, frontends: Sequence = ()) -> int:
    """Serve until SIGTERM or Ctrl-C, then finish every client's request and return 0."""

    def ready() -> None:
        if address is not None:
            print(f"edge-ser: ready on {_describe(service.bound or address)}", file=sys.stderr, flush=True)
        if service.http_bound is not None:
            host, port = service.http_bound
            print(f"edge-ser: page on http://{f'[{host}]' if ':' in host else host}:{port}/", file=sys.stderr,
                  flush=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(signum) != signal.SIG_IGN:  # an inherited ignore stays (a daemon's convention)
                loop.add_signal_handler(signum, service.stop)
        await service.serve(address, ready=ready, frontends=frontends)

    asyncio.run(main())
    log.info("stopped")
    return 0

