"""Parsing '50ms', '0.2s', '120MB' for the command line: one clear error for anything else."""
from __future__ import annotations

import re

from .options import RATE_RULE, is_rate

_TIME_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
_SIZE_MIB = {"b": 1 / 2**20, "kb": 1e3 / 2**20, "kib": 1 / 1024, "mb": 1e6 / 2**20, "mib": 1.0, "gb": 1e9 / 2**20, "gib": 1024.0}


def _parse(text: str, units: dict[str, float], bare: str, what: str, examples: str) -> float:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if not match or (unit and unit not in units):
        raise ValueError(f"cannot read {text!r} as a {what}: use e.g. {examples}")
    value = float(match.group(1)) * units[unit or bare]
    if value <= 0:
        raise ValueError(f"a {what} budget must be positive, got {text!r}")
    return value


def parse_duration_ms(text: str) -> float:
    """'50ms' -> 50.0, '0.2s' -> 200.0, '500us' -> 0.5; a bare number is milliseconds."""
    return _parse(text, _TIME_MS, "ms", "duration", "50ms, 0.2s or 500us")


def parse_size_mb(text: str) -> float:
    """'120MiB' -> 120.0 MiB ('MB' is decimal: 120MB -> 114.4 MiB); a bare number is MiB."""
    return _parse(text, _SIZE_MIB, "mib", "memory size", "120MB, 96MiB or 1GB")


def parse_seconds(text: str) -> float:
    return parse_duration_ms(text if re.search(r"[a-zA-Z]", text) else text + "s") / 1000.0


def parse_rate(text: str) -> int:
    """'16000' or '16k' -> 16000: a sample rate in Hz, a whole number from 1000 to 768000."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(k?)(?:hz)?\s*", text, flags=re.IGNORECASE)
    value = float(match.group(1)) * (1000 if match.group(2) else 1) if match else None
    if value is None or value != int(value) or not is_rate(int(value)):
        raise ValueError(f"cannot read {text!r} as a sample rate: use {RATE_RULE}, e.g. 16000 or 16k")
    return int(value)
