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

    def summary(self) -> dict:
        return {
            "labels": self.labels,
            "uar": {str(k): v.uar for k, v in self.exits.items()} | {"fusion": self.fusion.uar},
            "exits": {str(k): asdict(v) for k, v in self.exits.items()},
            "fusion": asdict(self.fusion),
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
