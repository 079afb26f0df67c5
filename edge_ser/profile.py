"""Device profiles: how long each segment takes on *this* device, and how much memory it adds.

Latency is modelled per segment as ms = a + b*s + c*s^2 for a clip of s seconds
(the CNN and exit heads grow linearly, attention quadratically), fitted by
least squares to timings at several clip lengths. Planning uses a high quantile:
the prediction times the `quantile` ratio of measured to fitted time seen during
calibration, so a budget is met on (almost) every run, not on the average one.
"""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .errors import ProfileError

PROFILE_VERSION = 2  # 2: profiles carry the fingerprint of the model files they timed


@dataclass
class SegmentCost:
    coefficients: list[float]  # a, b, c of ms = a + b*s + c*s^2
    high_ratio: float  # quantile of measured / fitted over calibration runs (>= 1)
    fit_error: float  # median |measured - fitted| / measured
    memory_mb: float  # resident memory added by opening and first running this segment

    def predict_ms(self, seconds: float, high: bool = True) -> float:
        a, b, c = self.coefficients
        ms = max(0.0, a + b * seconds + c * seconds * seconds)
        return ms * self.high_ratio if high else ms


@dataclass
class DeviceProfile:
    model: str
    precision: str
    threads: int
    fingerprint: str = ""  # Manifest.fingerprint(precision) of the files it timed
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])  # what ran them
    device: str = field(default_factory=lambda: f"{platform.machine()} {platform.processor() or platform.node()}")
    quantile: float = 0.99
    segments: dict[str, SegmentCost] = field(default_factory=dict)  # segment name (chain and heads) -> cost
    preprocess: SegmentCost | None = None
    version: int = PROFILE_VERSION

    def predict_ms(self, name: str, seconds: float, high: bool = True) -> float:
        return self.segments[name].predict_ms(seconds, high)

    def check_fits(self, model: str, precision: str, fingerprint: str | None = None,
                   providers: list[str] | None = None) -> None:
        """A profile times one model's files at one precision: planning another from it would mis-predict every
        budget (an int8 profile would make fp32 runs miss theirs; so would a retrained model under the same name)."""
        if self.model != model or self.precision != precision:
            raise ProfileError(f"device profile is for model {self.model!r} at {self.precision}, not {model!r} at "
                               f"{precision}: run edge-ser calibrate --precision {precision}")
        if providers is not None and list(self.providers) != list(providers):
            raise ProfileError(f"device profile timed {', '.join(self.providers)}, this run uses "
                               f"{', '.join(providers)}: run edge-ser calibrate with the same --provider")
        if fingerprint is not None and self.fingerprint != fingerprint:
            raise ProfileError(f"device profile for {model!r} timed other model files (fingerprint "
                               f"{self.fingerprint[:12] or 'missing'}, the model's is {fingerprint[:12]}): "
                               f"run edge-ser calibrate --precision {precision}")

    def save(self, path: str | Path) -> Path:
        return save_yaml(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> DeviceProfile:
        """Read and check a profile: every field typed and in range, or one ProfileError naming the field."""
        raw = load_versioned_yaml(path, "device profile", PROFILE_VERSION)
        try:
            profile = cls(**{k: v for k, v in raw.items() if k not in ("segments", "preprocess")},
                          segments={k: _cost(v, f"segments.{k}") for k, v in raw["segments"].items()},
                          preprocess=_cost(raw["preprocess"], "preprocess") if raw.get("preprocess") else None)
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise ProfileError(f"{path}: malformed device profile ({err})") from None
        for name, value, ok in (("model", profile.model, isinstance(profile.model, str)),
                                ("precision", profile.precision, isinstance(profile.precision, str)),
                                ("threads", profile.threads, isinstance(profile.threads, int) and profile.threads >= 0),
                                ("quantile", profile.quantile, finite_number(profile.quantile) and 0 < profile.quantile <= 1),
                                ("providers", profile.providers, isinstance(profile.providers, list) and bool(
                                    profile.providers) and all(isinstance(p, str) for p in profile.providers))):
            if not ok:
                raise ProfileError(f"{path}: field {name} is {value!r}; see edge-ser calibrate for what it writes")
        return profile


def save_yaml(path: str | Path, data: dict) -> Path:
    """Write a file calibrate makes as a whole: a reader (a running service) sees the old one or the new one."""
    partial = Path(path).with_name(Path(path).name + ".tmp")
    partial.write_text(yaml.safe_dump(data, sort_keys=False))
    partial.replace(path)
    return Path(path)


def load_versioned_yaml(path: str | Path, what: str, version: int) -> dict:
    """A YAML mapping that edge-ser calibrate wrote, at `version`; one ProfileError naming the file otherwise."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ProfileError(f"{path}: cannot read the {what} ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict) or raw.get("version") != version:
        found = raw.get("version") if isinstance(raw, dict) else None
        raise ProfileError(f"{path}: not an edge-ser {what} of version {version} (found {found!r}): run edge-ser "
                           "calibrate again")
    return raw


def finite_number(value) -> bool:
    """A real number that is not NaN or infinite (a NaN would make every comparison fail silently)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _cost(raw: dict, where: str) -> SegmentCost:
    """A SegmentCost from YAML, each number finite and in range (a NaN would make every plan 'fit')."""
    cost = SegmentCost(**raw)
    checks = (("coefficients", isinstance(cost.coefficients, list) and len(cost.coefficients) == 3
               and all(finite_number(c) for c in cost.coefficients)),
              ("high_ratio", finite_number(cost.high_ratio) and cost.high_ratio >= 1),
              ("fit_error", finite_number(cost.fit_error) and cost.fit_error >= 0),
              ("memory_mb", finite_number(cost.memory_mb) and cost.memory_mb >= 0))
    for name, ok in checks:
        if not ok:
            raise ValueError(f"{where}.{name} is {getattr(cost, name)!r}: three finite coefficients, "
                             "high_ratio >= 1, fit_error and memory_mb >= 0")
    return cost


def fit_cost(seconds: np.ndarray, ms: np.ndarray, quantile: float, memory_mb: float = 0.0) -> SegmentCost:
    """Least-squares a + b*s + c*s^2 (c >= 0 in practice); ratio quantile over all samples."""
    design = np.stack([np.ones_like(seconds), seconds, seconds**2], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, ms, rcond=None)
    fitted = np.maximum(design @ coefficients, 1e-3)
    ratio = ms / fitted
    return SegmentCost(
        coefficients=[float(c) for c in coefficients],
        high_ratio=float(max(1.0, np.quantile(ratio, quantile))),
        fit_error=float(np.median(np.abs(ms - fitted) / np.maximum(ms, 1e-6))),
        memory_mb=float(memory_mb),
    )


class OnlineEstimate:
    """Without a profile: per-segment ms per second of audio, learned from this process's own runs.

    Predictions before any run of a segment are unknown (None); the classifier then
    estimates blocks from blocks already run and says the budget was only estimated.
    """

    def __init__(self) -> None:
        self.rate: dict[str, float] = {}  # segment -> ms per audio second (worst seen, decayed)

    def observe(self, name: str, seconds: float, ms: float) -> None:
        rate = ms / max(seconds, 1e-3)
        old = self.rate.get(name)
        self.rate[name] = rate if old is None else max(rate, 0.8 * old + 0.2 * rate)

    def predict_ms(self, name: str, seconds: float) -> float | None:
        rate = self.rate.get(name)
        return None if rate is None else rate * seconds


def default_profile_path(model_dir: str | Path, precision: str = "fp32") -> Path:
    """MODEL/profile.yaml for fp32, MODEL/profile.<precision>.yaml for the others: one profile per precision."""
    return Path(model_dir) / ("profile.yaml" if precision == "fp32" else f"profile.{precision}.yaml")
