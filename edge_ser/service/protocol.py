"""Wyoming events on a byte stream, read with a bound on every size a client claims.

An event is one JSON header line (`type`, optional `data`, `data_length`, `payload_length`),
then `data_length` bytes of JSON merged into `data`, then `payload_length` bytes of payload.
The `wyoming` package's reader holds whatever a header claims (a header claiming 10 GB is
read until memory runs out); this one checks each length against `Limits` before reading a
byte of it, and names what was too large. Events themselves are wyoming.event.Event, so the
package's typed events (AudioStart, VoiceStarted, Error ...) build and parse them.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from wyoming.event import Event
from wyoming.version import __version__ as PROTOCOL_VERSION  # sent in every header, as wyoming does

from ..errors import EdgeSerError
from ..options import check_positive



class ProtocolError(EdgeSerError, ValueError):
    """A client broke the protocol: `code` is the error event's code; `fatal` when the byte stream can no longer
    be trusted to be framed (the connection is closed after the error event)."""

    def __init__(self, message: str, code: str, fatal: bool = False):
        super().__init__(message)
        self.code = code
        self.fatal = fatal


@dataclass(frozen=True)
class Limits:
    """The most one client may make the server hold, each checked before it is read or kept."""

    header_bytes: int = 16_384  # one JSON header line (a Wyoming header is a few hundred bytes)
    data_bytes: int = 65_536  # the JSON data block after a header
    payload_bytes: int = 1_048_576  # one payload (an audio chunk: 1 MiB is 16 s of 16 kHz 32-bit stereo)
    pending_bytes: int = 524_288  # audio not yet classified and replies not yet sent; past it the client is not
    # read (backpressure: the socket fills and the client's writes wait)
    clip_seconds: float = 120.0  # a whole-clip request holds its samples until audio-stop
    idle_seconds: float = 30.0  # a client that sends nothing for this long is closed (a stream in progress too)
    clients: int = 16  # connections served at once; one more gets an error event and is closed
    unsent_bytes: int = 1_048_576  # results the client has not read; past it (or idle_seconds) it is closed

    def __post_init__(self) -> None:
        for name, high in (("header_bytes", 1 << 20), ("data_bytes", 16 << 20), ("payload_bytes", 64 << 20),
                           ("pending_bytes", 1 << 30), ("unsent_bytes", 1 << 30), ("clients", 4096)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise EdgeSerError(f"service limit {name} must be a whole number from 1 to {high}, got {value!r}")
        check_positive("service limit clip_seconds", self.clip_seconds, 3600.0, " s")
        check_positive("service limit idle_seconds", self.idle_seconds, 86_400.0, " s")


def _length(header: dict, key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{key} must be a whole number of bytes, got {value!r}", "bad-event", fatal=True)
    if value > limit:
        raise ProtocolError(f"{key} {value} exceeds this server's limit of {limit} bytes", "too-large", fatal=True)
    return value


def parse_header(line: bytes, limits: Limits) -> tuple[str, dict, int, int]:
    """(type, data, data_length, payload_length) of one header line; ProtocolError if it is not a valid header."""
    try:
        header = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("the header line is not JSON", "bad-event", fatal=True) from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str) or not header["type"]:
        raise ProtocolError("a header must be a JSON object with a non-empty string 'type'", "bad-event", fatal=True)
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError("'data' must be a JSON object", "bad-event", fatal=True)
    return (header["type"], data, _length(header, "data_length", limits.data_bytes),
            _length(header, "payload_length", limits.payload_bytes))


async def read_event(reader: asyncio.StreamReader, limits: Limits) -> Event | None:
    """The next event, or None at a clean end of input (the client closed between events).

    The reader must have been made with limit >= limits.header_bytes (asyncio refuses longer lines itself).
    """
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as err:
        if not err.partial.strip():
            return None
        raise ProtocolError("the connection ended inside a header line", "bad-event", fatal=True) from None
    except asyncio.LimitOverrunError:
        raise ProtocolError(f"a header line is longer than this server's limit of {limits.header_bytes} bytes",
                            "too-large", fatal=True) from None
    if len(line) > limits.header_bytes:
        raise ProtocolError(f"a header line is longer than this server's limit of {limits.header_bytes} bytes",
                            "too-large", fatal=True)
    kind, data, data_length, payload_length = parse_header(line, limits)
    try:
        if data_length:
            try:
                extra = json.loads(await reader.readexactly(data_length))
            except (UnicodeDecodeError, ValueError):
                raise ProtocolError("the data block is not JSON", "bad-event", fatal=True) from None
            if not isinstance(extra, dict):
                raise ProtocolError("the data block must be a JSON object", "bad-event", fatal=True)
            data = {**data, **extra}
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        raise ProtocolError(f"the connection ended inside a {kind!r} event", "bad-event", fatal=True) from None
    return Event(type=kind, data=data, payload=payload)


def encode_event(event: Event) -> bytes:
    """An event as Wyoming frames it: header line, data block, payload."""
    header: dict = {"type": event.type, "version": PROTOCOL_VERSION}
    data = json.dumps(event.data, allow_nan=False).encode() if event.data else b""  # as `listen --json` prints
    if data:
        header["data_length"] = len(data)
    if event.payload:
        header["payload_length"] = len(event.payload)
    return json.dumps(header).encode() + b"\n" + data + (event.payload or b"")
