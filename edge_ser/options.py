"""Run options checked once, where they enter (the Classifier, its classify/plan/stream calls, calibrate):
one EdgeSerError (a ValueError) that names the option and what is allowed, never a silent odd run.

Why a bound on threads: onnxruntime starts every thread it is asked for; `--threads 100000` once started
15,000 threads and 16 GB before it was killed. More threads than a few per core only add contention.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import EdgeSerError


class OptionError(EdgeSerError, ValueError):
    """A run option out of range: one line naming it and what is allowed."""


RATE_RULE = "a whole number of Hz from 1000 to 768000"  # sample rates from a user, a file or a stream


def is_rate(value: object) -> bool:
    """A sample rate the runtime takes (RATE_RULE): one check for the CLI, streams and manifests."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 1000 <= value <= 768_000


def max_threads() -> int:
    """The most intra-op threads worth asking for on this machine: four per core."""
    return 4 * (os.cpu_count() or 1)


def check_threads(threads: object) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= max_threads():
        raise OptionError(f"threads must be a whole number from 0 (one per core) to {max_threads()} "
                          f"(4 per core here), got {threads!r}")
    return threads


def check_positive(name: str, value: object, high: float = math.inf, unit: str = "") -> float:
    """A finite number above zero and at most `high`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= high:
        bound = "" if high == math.inf else f" and at most {high:g}{unit}"
        raise OptionError(f"{name} must be a finite number above 0{unit}{bound}, got {value!r}")
    return float(value)


def check_optional_positive(name: str, value: object, high: float = math.inf, unit: str = "") -> float | None:
    return None if value is None else check_positive(name, value, high, unit)


def check_exit(exit: object) -> int | str | None:
    """An exit layer number, or None/"auto" for adaptive early exit (whether the layer exists is the model's to say)."""
    if not (exit in (None, "auto") or (isinstance(exit, int) and not isinstance(exit, bool))):
        raise OptionError(f"exit must be a layer number or 'auto', got {exit!r}")
    return exit


@dataclass(frozen=True)
class RunOptions:
    """What one run is asked for: the budgets, the exit and strictness; checked once, here.

    budget_ms: latency budget per clip, window or utterance; memory_mb: memory budget for the segments;
    exit: a layer to run to, or None/"auto" for adaptive early exit; strict: refuse (BudgetError) when not even
    the first exit fits, instead of answering from it. Whether the exit exists is the model's to say (plan).
    """

    budget_ms: float | None = None
    memory_mb: float | None = None
    exit: int | str | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        check_optional_positive("budget_ms", self.budget_ms)
        check_optional_positive("memory_mb", self.memory_mb)
        check_exit(self.exit)
        if not isinstance(self.strict, bool):
            raise OptionError(f"strict must be true or false, got {self.strict!r}")

    def as_kwargs(self) -> dict:
        """The keywords Classifier.classify / plan / stream take."""
        return {"budget_ms": self.budget_ms, "memory_mb": self.memory_mb, "exit": self.exit, "strict": self.strict}


def check_output_file(path: str | os.PathLike, what: str = "--out") -> str | os.PathLike:
    """A file the command will write, refused before any work when it cannot be: a folder, a missing folder to
    put it in, or a place this process may not write (a calibration or bench must not run for minutes and then
    die on its output)."""
    target = Path(path)
    folder, named = target.parent, f"{what} {target}".strip()
    if target.is_dir():
        raise OptionError(f"{named}: a folder; name a file to write (e.g. {target / 'out.yaml'})")
    if not folder.is_dir():
        raise OptionError(f"{named}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise OptionError(f"{named}: not writable by this user")
    return path


def check_output_folder(path: str | os.PathLike, what: str = "--out") -> str | os.PathLike:
    """A folder the command will write into (made if missing), refused before any work when it cannot be: a
    file of that name, or a place this process may not write."""
    target = Path(path)
    named = f"{what} {target}".strip()
    if target.exists() and not target.is_dir():
        raise OptionError(f"{named}: a file, not a folder; name a folder to write into")
    existing = next(p for p in [target, *target.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OptionError(f"{named}: {existing} is not a writable folder")
    return path
