"""Parsing '50ms', '0.2s', '120MB' for the command line: one clear error for anything else."""
from __future__ import annotations

import re

_TIME = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
_SIZE = {"b": 1 / 2**20, "kb": 1e3 / 2**20, "kib": 1 / 1024, "mb": 1e6 / 2**20, "mib": 1.0, "gb": 1e9 / 2**20, "gib": 1024.0}
_NUMBER = r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*"


def parse_duration_ms(text: str) -> float:
    """'50ms' -> 50.0, '0.2s' -> 200.0, '500us' -> 0.5; a bare number is milliseconds."""
    match = re.fullmatch(_NUMBER, text)
    unit = match.group(2).lower() if match else None
    if not match or (unit and unit not in _TIME):
        raise ValueError(f"cannot read {text!r} as a duration: use e.g. 50ms, 0.2s or 500us")
    value = float(match.group(1)) * _TIME[unit or "ms"]
    if value <= 0:
        raise ValueError(f"a budget must be positive, got {text!r}")
    return value


def parse_size_mb(text: str) -> float:
    """'120MB' -> MiB as a float ('120MiB' exactly, 'MB' decimal); a bare number is MiB."""
    match = re.fullmatch(_NUMBER, text)
    unit = match.group(2).lower() if match else None
    if not match or (unit and unit not in _SIZE):
        raise ValueError(f"cannot read {text!r} as a memory size: use e.g. 120MB, 96MiB or 1GB")
    value = float(match.group(1)) * _SIZE[unit or "mib"]
    if value <= 0:
        raise ValueError(f"a memory budget must be positive, got {text!r}")
    return value


def parse_seconds(text: str) -> float:
    return parse_duration_ms(text if re.search(r"[a-zA-Z]", text) else text + "s") / 1000.0
