"""The paper's comparison (its Table 2): baselines and the self-distilled exits, one protocol for all.

Rows, each trained with the same protocol (train -> select on dev, train+dev -> test):
  truncated k      the encoder cut after layer k, fine-tuned with one head (CE only)
  distill k        DistilHuBERT-style layer-wise distillation: a 2-layer student (initialised from the
                   teacher's first layers) learns to predict teacher layers N/3, 2N/3, N with
                   L1 - log sigmoid(cos) per frame, then is fine-tuned like a truncated model
  single exit k    self-distillation with a single student exit at layer k
  self-distilled k the proposed model: exits at the configured layers, every exit reported
Writes baselines.md and baselines.json under the run directory.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .backbone import load_encoder
from .config import ExperimentConfig
from .data import collate, label_set
from .train import load_clips, make_dataset, run_experiment, seed_everything

log = logging.getLogger(__name__)

STUDENT_LAYERS = 2


def _variant(config: ExperimentConfig, name: str, **model_changes) -> ExperimentConfig:
    out = copy.deepcopy(config)
    out.name = f"{config.name}/baselines/{name}"
    out.model = replace(out.model, **model_changes)
    return out


def distill_targets(num_layers: int) -> list[int]:
    """DistilHuBERT predicts layers 4, 8, 12 of a 12-layer teacher: thirds of the depth."""
    return sorted({max(1, round(num_layers * k / 3)) for k in (1, 2, 3)})


def layerwise_distillation(config: ExperimentConfig, epochs: int, progress: bool = False) -> nn.Module:
    """Train a STUDENT_LAYERS-layer student encoder to predict the teacher's hidden states; returns it."""
    seed_everything(config.train.seed)
    teacher = load_encoder(config.model.base, config.model.family, config.model.backbone).eval()
    student = copy.deepcopy(teacher)
    student.encoder.layers = student.encoder.layers[:STUDENT_LAYERS]
    student.config.num_hidden_layers = STUDENT_LAYERS
    from .backbone import Backbone

    t_bb, s_bb = Backbone(teacher), Backbone(student)
    targets = distill_targets(t_bb.num_layers)
    heads = nn.ModuleList(nn.Linear(s_bb.hidden_size, t_bb.hidden_size) for _ in targets)
    optimizer = torch.optim.Adam(list(student.parameters()) + list(heads.parameters()), lr=config.train.lr)
    clips = load_clips(config)
    loader = DataLoader(make_dataset(config, clips, label_set(clips), ("train",), train=True),
                        batch_size=config.train.batch_size, shuffle=True, collate_fn=collate)
    for epoch in range(epochs):
        total = 0.0
        for waves, lengths, _ in tqdm(loader, desc=f"distill {epoch + 1}/{epochs}", leave=False,
                                         disable=not progress):
            frames = t_bb.frame_lengths(lengths)
            with torch.no_grad():
                hidden = t_bb.embed(waves, lengths)
                mask = torch.arange(hidden.shape[1])[None, :] < frames[:, None]
                wanted, done = [], 0
                for layer in targets:
                    hidden = t_bb.run_layers(hidden, done, layer, mask)
                    done = layer
                    wanted.append(t_bb.finish(hidden) if layer == t_bb.num_layers else hidden)
            s_hidden = s_bb.run_layers(s_bb.embed(waves, lengths), 0, STUDENT_LAYERS, mask)
            weight = mask[..., None].float()
            loss = waves.new_zeros(())
            for head, target in zip(heads, wanted, strict=True):
                pred = head(s_hidden)
                l1 = ((pred - target).abs() * weight).sum() / (weight.sum() * target.shape[-1])
                cos = (F.logsigmoid(F.cosine_similarity(pred, target, dim=-1)) * mask).sum() / mask.sum()
                loss = loss + l1 - cos
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss)
        log.info(f"distill epoch {epoch + 1}: loss {total / max(1, len(loader)):.4f}")
    return student


def run_baselines(
    config: ExperimentConfig, layers: list[int] | None = None, skip: set[str] = frozenset()
) -> str:
    """Train every row and return the markdown table (also written with the JSON beside it)."""
    n = load_encoder(config.model.base, config.model.family, config.model.backbone).config.num_hidden_layers
    layers = layers or list(range(1, n + 1))
    rows: list[dict] = []

    def record(method: str, layer: int, summary: dict, key: str | None = None) -> None:
        key = key or str(layer)
        row = {"method": method, "layer": layer, "parameters": summary["path_parameters"][key],
               "dev_uar": (summary.get("dev") or {}).get(key), "test_uar": (summary.get("test") or {}).get(key)}
        rows.append(row)
        log.info(json.dumps(row))

    if "truncated" not in skip:
        for k in layers:
            s = run_experiment(_variant(config, f"truncated_{k}", exit_layers=[], truncate_at=k), progress=False)
            record("truncated + fine-tuning", k, s)
    if "distill" not in skip:
        student = layerwise_distillation(config, config.train.epochs)
        s = run_experiment(_variant(config, "distill", exit_layers=[]), progress=False,
                           encoder_factory=lambda: copy.deepcopy(student))
        record(f"layer-wise distillation ({STUDENT_LAYERS}-layer student)", STUDENT_LAYERS, s)
    if "single_exit" not in skip:
        for k in (k for k in layers if k < n):
            s = run_experiment(_variant(config, f"single_exit_{k}", exit_layers=[k]), progress=False)
            record("single exit", k, s)
    if "self_distilled" not in skip:
        s = run_experiment(_variant(config, "self_distilled"), progress=False)
        for k in config.model.exit_layers + [n]:
            record("self-distilled (ours)", k, s)
        rows.append({"method": "self-distilled, fusion of exits", "layer": n, "parameters": s["path_parameters"][str(n)],
                     "dev_uar": s["dev"]["fusion"], "test_uar": s["test"]["fusion"]})

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    table = ["| method | layer | parameters | dev UAR (%) | test UAR (%) |", "|---|---:|---:|---:|---:|"]
    table += [f"| {r['method']} | {r['layer']} | {r['parameters']:,} | {pct(r['dev_uar'])} | {pct(r['test_uar'])} |" for r in rows]
    markdown = "\n".join(table)
    out = config.run_dir / "baselines"
    out.mkdir(parents=True, exist_ok=True)
    (out / "baselines.md").write_text(markdown + "\n")
    (out / "baselines.json").write_text(json.dumps(rows, indent=1))
    return markdown
