"""Helpers for benchmarks: interleaved timing (fair on a noisy shared machine), machine description, output."""
from __future__ import annotations

import datetime
import json
import platform
import sys
import time
from pathlib import Path
from collections.abc import Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """The machine in one line, from what `edge-ser bench` reports (edge_ser.bench.device: one reader of cpuinfo)."""
    from edge_ser.bench import device

    found = device()
    return f"{found['cpu']}, {found['cores']} cores, {platform.system()} {found['machine']}"


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, np.ndarray]:
    """Run the variants round-robin `repeats` times; ms per call for each. Round-robin spreads load bursts evenly."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: np.array(t) for name, t in times.items()}


def provenance() -> dict:
    """What a results file records about its own making: the command, the machine and the date."""
    return {"command": " ".join(["python"] + sys.argv), "machine": machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data | provenance(), indent=1, default=float))
    return path
