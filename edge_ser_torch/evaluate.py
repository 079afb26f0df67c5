"""UAR per exit, the fusion of exits, and confusion matrices.

UAR (unweighted average recall) is the mean of per-class recalls: the paper's
metric, insensitive to class imbalance. The fusion averages the softmax
probabilities of all exits, teacher included.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .data import collate
from .model import SelfDistilledSER


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(classes, classes) counts; rows are the true class, columns the prediction."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def uar(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in `truth`."""
    matrix = confusion_matrix(truth, predicted, num_classes)
    support = matrix.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(matrix)[present] / support[present]))


def paired_bootstrap(
    truth: np.ndarray, first: np.ndarray, second: np.ndarray, num_classes: int, rounds: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """UAR(second) - UAR(first) and its 95% interval, resampling clips with replacement (both on the same draw).

    Pairing matters: two exits of one model err on mostly the same clips, so their
    difference is far less noisy than either UAR alone. Clips are resampled, not
    speakers: with a handful of test speakers a speaker-level interval would be
    too coarse to read, so this interval says nothing about other speakers.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, truth.size, size=(rounds, truth.size))
    diffs = np.array([uar(truth[d], second[d], num_classes) - uar(truth[d], first[d], num_classes) for d in draws])
    low, high = np.percentile(diffs, [2.5, 97.5])
    return uar(truth, second, num_classes) - uar(truth, first, num_classes), float(low), float(high)


@dataclass
class ExitScores:
    uar: float
    accuracy: float
    confusion: list[list[int]]


@dataclass
class Evaluation:
    labels: list[str]
    exits: dict[int, ExitScores]  # exit layer -> scores
    fusion: ExitScores
    probabilities: dict[int, np.ndarray]  # exit layer -> (clips, classes), kept for threshold calibration
    truth: np.ndarray

    def uar_per_exit(self) -> dict[str, float]:
        """UAR by exit layer (as a string key) and of the fusion: what training logs every epoch."""
        return {str(k): v.uar for k, v in self.exits.items()} | {"fusion": self.fusion.uar}

    def depth_gain(self) -> dict | None:
        """Deepest exit's UAR minus the shallowest's, with a paired 95% bootstrap interval (None: one exit)."""
        if len(self.exits) < 2:
            return None
        shallow, deep = min(self.probabilities), max(self.probabilities)
        gain, low, high = paired_bootstrap(
            self.truth, self.probabilities[shallow].argmax(1), self.probabilities[deep].argmax(1), len(self.labels)
        )
        return {"uar": gain, "ci95": [low, high]}

    def summary(self) -> dict:
        """Everything eval_<split>.json holds; computes the bootstrap, so call it once per evaluation."""
        return {
            "labels": self.labels,
            "uar": self.uar_per_exit(),
            "exits": {str(k): asdict(v) for k, v in self.exits.items()},
            "fusion": asdict(self.fusion),
            "deepest_minus_shallowest": self.depth_gain(),
        }


def scores(truth: np.ndarray, probabilities: np.ndarray, num_classes: int) -> ExitScores:
    predicted = probabilities.argmax(axis=1)
    return ExitScores(
        uar=uar(truth, predicted, num_classes),
        accuracy=float(np.mean(predicted == truth)),
        confusion=confusion_matrix(truth, predicted, num_classes).tolist(),
    )


@torch.no_grad()
def evaluate_model(
    model: SelfDistilledSER, dataset, labels: list[str], batch_size: int = 8, progress: bool = False, device: str = "cpu"
) -> Evaluation:
    """Run every exit on every clip of `dataset`, batched with padding (results are padding-independent)."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    probs: dict[int, list[np.ndarray]] = {layer: [] for layer in model.exit_layers}
    truth = []
    for waves, lengths, y in tqdm(loader, desc="evaluating", disable=not progress, leave=False):
        outputs = model(waves.to(device), lengths.to(device))
        for layer, out in outputs.items():
            probs[layer].append(torch.softmax(out.logits, dim=-1).cpu().numpy())
        truth.append(y.numpy())
    truth_all = np.concatenate(truth)
    stacked = {layer: np.concatenate(p) for layer, p in probs.items()}
    n = len(labels)
    fused = np.mean(list(stacked.values()), axis=0)
    return Evaluation(
        labels=labels,
        exits={layer: scores(truth_all, p, n) for layer, p in stacked.items()},
        fusion=scores(truth_all, fused, n),
        probabilities=stacked,
        truth=truth_all,
    )
