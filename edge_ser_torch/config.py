"""Every hyper-parameter of an experiment, in one YAML-loadable dataclass tree.

Defaults are the paper's (Ren et al.); the reason sits beside each. A YAML file
only names what it changes; an unknown key is an error, so a typo never
silently trains the default. In a YAML file, data.manifest, data.demos_dir and
model.base are relative to the file; out_dir is relative to where edge-ser runs.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError


@dataclass
class ModelConfig:
    base: str | None = None  # local Hugging Face checkpoint dir; None = random weights from `family` + `backbone`
    family: str = "wav2vec2"  # wav2vec2 | hubert | wavlm (used only when base is None)
    backbone: dict[str, Any] = field(default_factory=dict)  # config overrides for random init (tiny models)
    exit_layers: list[int] = field(default_factory=lambda: [3, 8, 10])  # the paper's A; the last layer is the teacher
    block: str = "cnn"  # exit block M: cnn | lstm | gru (the paper's best trade-off is the 1x1 CNN)
    head_dim: int = 256  # L1's width in the paper
    truncate_at: int | None = None  # keep only the first k transformer layers (the truncation baseline)


@dataclass
class LossConfig:
    alpha: float = 1.0  # weight of Lk, the KL term (paper: 1)
    beta: float = 1.0  # weight of Ls, the similarity term (paper: 1)
    gamma: float = 1.0  # weight of the students' CE inside Lc (paper: 1)
    similarity: str = "l2"  # l1 | l2 | cos | l1+cos | l2+cos
    level: str = "embedding"  # embedding (H_N vs H_Ma, the paper's choice) | linear (H_L vs H_La)
    detach_teacher: bool = True  # the teacher is a target in Lk and Ls: students learn from it, not the reverse


@dataclass
class DataConfig:
    manifest: str | None = None  # CSV with path,label,speaker,split (paths relative to the CSV)
    demos_dir: str | None = None  # or a DEMoS folder (NP/ and PR/ wavs); the CSV wins when both are set
    sample_rate: int = 16000  # the rate wav2vec2-family models were pretrained at
    max_seconds: float = 8.0  # longer training clips are cropped (random during training, centre otherwise)
    normalize: bool = True  # zero-mean unit-variance per clip, as Wav2Vec2FeatureExtractor(do_normalize=True)


@dataclass
class TrainConfig:
    lr: float = 3e-5  # Adam, the paper's rate for fine-tuning a pretrained encoder
    epochs: int = 20
    batch_size: int = 16
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"  # cpu | cuda; torchrun makes it distributed
    num_workers: int = 0
    select_on: str = "dev"  # the epoch whose dev UAR (teacher exit) is best is kept
    grad_clip: float = 5.0  # keeps tiny models trained from scratch stable; harmless for fine-tuning
    warmup_steps: int = 0  # linear lr warm-up; the paper uses none, models trained from scratch need some


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    out_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExperimentConfig:
        return _build(cls, raw or {}, "config")

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        with open(path) as f:
            config = cls.from_dict(yaml.safe_load(f))
        # Relative paths in a YAML file are relative to that file, not to the caller's cwd.
        here = Path(path).resolve().parent
        for section, attr in (("data", "manifest"), ("data", "demos_dir"), ("model", "base")):
            value = getattr(getattr(config, section), attr)
            if value and not Path(value).is_absolute():
                setattr(getattr(config, section), attr, os.path.normpath(here / value))
        return config


def _build(kind: type, raw: dict[str, Any], where: str):
    if not isinstance(raw, dict):
        raise InputError(f"{where} must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(kind)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise InputError(f"unknown key(s) in {where}: {', '.join(unknown)}; known: {', '.join(known)}")
    values = {}
    for name, value in raw.items():
        default = getattr(kind(), name)
        values[name] = _build(type(default), value, f"{where}.{name}") if is_dataclass(default) else value
    return kind(**values)
