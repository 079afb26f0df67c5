"""When to stop: confidence measures, and thresholds calibrated for a chosen accuracy loss.

A run evaluates the exits in order and stops at the first one that is sure enough:

    max_prob  the top class probability >= threshold          (the default)
    entropy   1 - H(p) / log(C) >= threshold                  (normalised certainty, 1 = one-hot)
    patience  the same label at k consecutive exits            (PABEE, Zhou et al. 2020)

Thresholds are calibrated on dev data by `calibrate`: the cheapest setting whose
simulated dev UAR is within `max_loss` of always running to the last exit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .options import OptionError

MEASURES = ("max_prob", "entropy", "patience")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def certainty(probabilities: np.ndarray, measure: str) -> np.ndarray:
    """(..., C) -> (...) in [0, 1]; higher is surer."""
    if measure == "max_prob":
        return probabilities.max(axis=-1)
    if measure == "entropy":
        p = np.clip(probabilities, 1e-12, 1.0)
        return 1.0 + (p * np.log(p)).sum(axis=-1) / np.log(p.shape[-1])
    raise OptionError(f"unknown certainty measure {measure!r}; choose max_prob or entropy")


@dataclass
class StopRule:
    """What the runtime checks after each exit head."""

    measure: str = "max_prob"
    threshold: float = 1.0  # max_prob / entropy: stop when certainty >= threshold (1.0 never stops early)
    patience: int = 0  # patience: stop after this many consecutive exits agree (0 = never)

    def should_stop(self, probabilities_so_far: list[np.ndarray]) -> bool:
        if self.measure == "patience":
            if self.patience < 1 or len(probabilities_so_far) < self.patience:
                return False
            recent = [int(p.argmax()) for p in probabilities_so_far[-self.patience :]]
            return len(set(recent)) == 1
        return bool(certainty(probabilities_so_far[-1], self.measure) >= self.threshold)

    @classmethod
    def from_policy(cls, policy: Policy, measure: str | None = None) -> StopRule:
        """The calibrated rule for `measure` (default: the policy's default) from manifest.policy."""
        measure, entry = policy.rule(measure)
        if measure == "patience":
            return cls(measure, patience=int(entry.patience or 0))
        return cls(measure, threshold=float(entry.threshold if entry.threshold is not None else 1.0))


def simulate(probabilities: list[np.ndarray], rule: StopRule) -> np.ndarray:
    """Index of the exit each clip stops at, given (clips, C) probabilities per exit in order."""
    n = probabilities[0].shape[0]
    last = len(probabilities) - 1
    if last == 0:  # one exit: nothing to stop early at
        return np.zeros(n, dtype=int)
    if rule.measure != "patience":  # vectorised: the first exit whose certainty passes
        passed = np.stack([certainty(p, rule.measure) >= rule.threshold for p in probabilities[:-1]])
        return np.where(passed.any(axis=0), passed.argmax(axis=0), last)
    stops = np.full(n, last)
    for clip in range(n):
        seen = []
        for k, p in enumerate(probabilities[:-1]):
            seen.append(p[clip])
            if rule.should_stop(seen):
                stops[clip] = k
                break
    return stops


def uar(truth: np.ndarray, predicted: np.ndarray) -> float:
    classes = np.unique(truth)
    return float(np.mean([np.mean(predicted[truth == c] == c) for c in classes]))


@dataclass(frozen=True)
class Calibrated:
    """One calibrated stop rule: its threshold (max_prob, entropy) or patience, and what it gave on dev data."""

    threshold: float | None
    patience: int | None
    dev_uar: float
    full_uar: float
    mean_exit_layer: float
    compute_share: float  # mean cost of an adaptive run / cost of a full-depth run


@dataclass(frozen=True)
class Policy:
    """The manifest's `policy`: a calibrated rule per measure, the default one, and how they were calibrated."""

    measures: dict[str, Calibrated]
    default: str = "max_prob"
    max_accuracy_loss: float | None = None  # UAR (fraction) the rules may lose against always running to the end
    calibrated_on_clips: int | None = None

    def rule(self, measure: str | None = None) -> tuple[str, Calibrated]:
        """(measure, its calibrated rule): `measure`, or the default one."""
        measure = measure or self.default
        if measure not in MEASURES:
            raise OptionError(f"unknown exit measure {measure!r}; choose one of {', '.join(MEASURES)}")
        if measure not in self.measures:
            raise OptionError(f"this model has no calibrated {measure} threshold; run calibration at export")
        return measure, self.measures[measure]

    def to_dict(self) -> dict:
        return {"max_accuracy_loss": self.max_accuracy_loss, "calibrated_on_clips": self.calibrated_on_clips,
                "measures": {k: asdict(v) for k, v in self.measures.items()}, "default": self.default}


def _outcome(probabilities, truth, rule, costs, layers) -> tuple[float, float, float]:
    stops = simulate(probabilities, rule)
    predicted = np.array([probabilities[s][i].argmax() for i, s in enumerate(stops)])
    return uar(truth, predicted), float(np.mean(np.asarray(layers)[stops])), float(np.mean(np.asarray(costs)[stops]))


def calibrate(
    probabilities: list[np.ndarray], truth: np.ndarray, layers: list[int], costs: list[float], max_loss: float
) -> Policy:
    """Thresholds per measure for a maximum UAR loss, from per-exit dev probabilities.

    costs[k]: the cost of stopping at exit k in an adaptive run (path to it plus every head
    evaluated on the way), in any unit; normalised by the full-depth cost.
    """
    full = costs[-1]
    full_uar = uar(truth, probabilities[-1].argmax(axis=1))
    measures: dict[str, Calibrated] = {}
    for measure in ("max_prob", "entropy"):
        values = np.unique(np.concatenate([certainty(p, measure) for p in probabilities[:-1]]))
        if values.size > 400:  # quantiles are fine enough and keep calibration fast on big dev sets
            values = np.unique(np.quantile(values, np.linspace(0, 1, 400)))
        best = Calibrated(1.0, None, full_uar, full_uar, float(layers[-1]), 1.0)
        # Each candidate threshold sits just at an observed certainty; scan from high (safe) to low (cheap). Only a
        # strictly cheaper outcome replaces the best, so among thresholds that stop the same dev clips the highest
        # is kept: it stops no more unseen clips early than dev asked for.
        for t in values[::-1]:
            got_uar, mean_layer, cost = _outcome(probabilities, truth, StopRule(measure, float(t)), costs, layers)
            if got_uar >= full_uar - max_loss and cost / full < best.compute_share:
                best = Calibrated(float(t), None, got_uar, full_uar, mean_layer, cost / full)
        measures[measure] = best
    best = Calibrated(None, 0, full_uar, full_uar, float(layers[-1]), 1.0)
    for k in range(len(probabilities) - 1, 0, -1):  # from the most agreement asked (safe) to the least (cheap)
        got_uar, mean_layer, cost = _outcome(probabilities, truth, StopRule("patience", patience=k), costs, layers)
        if got_uar >= full_uar - max_loss and cost / full < best.compute_share:
            best = Calibrated(None, k, got_uar, full_uar, mean_layer, cost / full)
    measures["patience"] = best
    return Policy(measures, "max_prob", max_loss, int(truth.size))
