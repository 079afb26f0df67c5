"""Training with the paper's protocol.

    stage "select": train on train, evaluate dev after every epoch, keep the best epoch (teacher's dev UAR)
    stage "final":  retrain from scratch on train+dev for that many epochs, report on test

Each stage writes under <out_dir>/<name>/<stage>/: last.pt (resumable), best.pt
(select) or final.pt (final), metrics.jsonl (one line per epoch) and
eval_<split>.json (UAR per exit, fusion, confusion matrices).
Multi-GPU: launch with torchrun; DistributedDataParallel is used when WORLD_SIZE > 1.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from .config import ExperimentConfig
from .data import Clip, ClipDataset, collate, describe, label_set, read_demos, read_manifest
from .errors import InputError
from .evaluate import Evaluation, evaluate_model
from .losses import self_distillation_loss
from .model import SelfDistilledSER

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_clips(config: ExperimentConfig) -> list[Clip]:
    if config.data.manifest:
        return read_manifest(config.data.manifest)
    if config.data.demos_dir:
        return read_demos(config.data.demos_dir, seed=config.train.seed)
    raise InputError("the config names no data: set data.manifest (CSV) or data.demos_dir")


def make_dataset(config: ExperimentConfig, clips: list[Clip], labels: list[str], splits: tuple[str, ...], train: bool):
    chosen = [c for c in clips if c.split in splits]
    if not chosen:
        raise InputError(f"no clips in split(s) {', '.join(splits)}")
    d = config.data
    return ClipDataset(chosen, labels, d.sample_rate, d.max_seconds, d.normalize, train=train)


def build_model(config: ExperimentConfig, num_classes: int, encoder_factory=None) -> SelfDistilledSER:
    """encoder_factory: a callable giving a fresh encoder (the distillation baseline's student); default: config."""
    return SelfDistilledSER(config.model, num_classes, encoder=encoder_factory() if encoder_factory else None)


def device_name(device: torch.device) -> str:
    """What trained a checkpoint, for its provenance: the GPU's name, or the CPU's architecture."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def save_checkpoint(path: Path, model: SelfDistilledSER, config: ExperimentConfig, labels: list[str], **extra) -> None:
    """Everything needed to rebuild the model without the base checkpoint: its HF config and all weights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "version": CHECKPOINT_VERSION,
        "config": config.to_dict(),
        "hf_config": model.backbone.config.to_dict(),
        "labels": labels,
        "model": model.state_dict(),
        "trained_on": device_name(next(model.parameters()).device),
    } | extra
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint behind


def load_checkpoint(path: str | Path) -> tuple[SelfDistilledSER, ExperimentConfig, list[str], dict]:
    """Rebuild a trained model from a checkpoint alone (no base checkpoint or hub needed)."""
    from transformers import AutoConfig, AutoModel

    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"{path}: not an edge-ser checkpoint (version {state.get('version')!r})")
    config = ExperimentConfig.from_dict(state["config"])
    hf_config = dict(state["hf_config"])
    hf = AutoModel.from_config(AutoConfig.for_model(hf_config.pop("model_type"), **hf_config))
    hf.config._attn_implementation = "eager"
    model = SelfDistilledSER(config.model, len(state["labels"]), encoder=hf)
    model.load_state_dict(state["model"])
    return model.eval(), config, state["labels"], state


@dataclass
class StageResult:
    best_epoch: int
    best_dev_uar: float | None
    evaluation: Evaluation | None
    checkpoint: Path


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train_stage(
    config: ExperimentConfig,
    clips: list[Clip],
    labels: list[str],
    stage: str,
    train_splits: tuple[str, ...],
    eval_split: str,
    epochs: int,
    progress: bool = True,
    encoder_factory=None,
) -> StageResult:
    """Train a fresh model for `epochs` on `train_splits`; evaluate `eval_split` after each epoch (select) or once."""
    rank, world = _distributed()
    seed_everything(config.train.seed + rank)
    stage_dir = config.run_dir / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(config.train.device if config.train.device != "cuda" else f"cuda:{rank % max(1, torch.cuda.device_count())}")

    model = build_model(config, len(labels), encoder_factory).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    warmup = max(1, config.train.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    start_epoch, best_epoch, best_uar, history = 0, 0, -1.0, []
    last = stage_dir / "last.pt"
    if last.exists():  # resume
        state = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_epoch, best_uar, history = state["epoch"], state["best_epoch"], state["best_uar"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        if rank == 0:
            log.info(f"resuming {stage} from epoch {start_epoch}")

    train_set = make_dataset(config, clips, labels, train_splits, train=True)
    eval_set = make_dataset(config, clips, labels, (eval_split,), train=False)
    sampler = DistributedSampler(train_set, world, rank, seed=config.train.seed) if world > 1 else None
    generator = torch.Generator().manual_seed(config.train.seed)
    loader = DataLoader(
        train_set,
        batch_size=config.train.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=collate,
        num_workers=config.train.num_workers,
        generator=generator,
        drop_last=len(train_set) > config.train.batch_size,
    )
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    select = stage == "select"

    for epoch in range(start_epoch, epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        generator.manual_seed(config.train.seed + epoch)  # the same order whether or not this run resumed
        net.train()
        totals: dict[str, float] = {}
        bar = tqdm(loader, desc=f"{stage} epoch {epoch + 1}/{epochs}", disable=not progress or rank != 0, leave=False)
        for waves, lengths, y in bar:
            outputs = net(waves.to(device), lengths.to(device))
            terms = self_distillation_loss(outputs, y.to(device), model.teacher_layer, config.loss)
            optimizer.zero_grad()
            terms.total.backward()
            if config.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
            optimizer.step()
            scheduler.step()
            for k, v in terms.as_floats().items():
                totals[k] = totals.get(k, 0.0) + v
            bar.set_postfix(loss=f"{terms.total.item():.3f}")
        record = {"epoch": epoch + 1} | {k: v / max(1, len(loader)) for k, v in totals.items()}
        if rank == 0:
            if select:
                evaluation = evaluate_model(model, eval_set, labels, device=str(device))
                record[f"{eval_split}_uar"] = evaluation.uar_per_exit()
                teacher_uar = evaluation.exits[model.teacher_layer].uar
                if select and teacher_uar > best_uar:
                    best_uar, best_epoch = teacher_uar, epoch + 1
                    save_checkpoint(stage_dir / "best.pt", model, config, labels, epoch=epoch + 1, dev_uar=record[f"{eval_split}_uar"])
            history.append(record)
            with open(stage_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            log.info(json.dumps(record))
            save_checkpoint(
                last, model, config, labels, epoch=epoch + 1, best_epoch=best_epoch, best_uar=best_uar,
                history=history, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                torch_rng=torch.get_rng_state(),
            )
    if world > 1:  # every rank must retrain for the epoch rank 0 selected
        chosen = torch.tensor([best_epoch])
        dist.broadcast(chosen, src=0)
        best_epoch = int(chosen)
        dist.barrier()
    if rank != 0:
        return StageResult(best_epoch, None, None, last)

    if select:
        best = stage_dir / "best.pt"
        model, *_ = load_checkpoint(best)
    else:
        best = stage_dir / "final.pt"
        save_checkpoint(best, model, config, labels, epoch=epochs)
    evaluation = evaluate_model(model, eval_set, labels)
    (stage_dir / f"eval_{eval_split}.json").write_text(json.dumps(evaluation.summary(), indent=1))
    return StageResult(best_epoch if select else epochs, best_uar if select else None, evaluation, best)


def run_experiment(config: ExperimentConfig, stages: str = "both", progress: bool = True, encoder_factory=None) -> dict:
    """The paper's protocol; returns (and writes to summary.json) dev and test UAR per exit."""
    clips = load_clips(config)
    labels = label_set(clips)
    rank, _ = _distributed()
    if rank == 0:
        log.info(f"{config.name}: {len(labels)} classes ({', '.join(labels)}); {describe(clips)}")
        config.run_dir.mkdir(parents=True, exist_ok=True)
        (config.run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    summary: dict = {"labels": labels}
    epochs = config.train.epochs
    if stages in ("both", "select"):
        chosen = train_stage(config, clips, labels, "select", ("train",), "dev", epochs, progress, encoder_factory)
        summary |= {"best_epoch": chosen.best_epoch, "dev": chosen.evaluation.uar_per_exit() if chosen.evaluation else None}
        summary["select_checkpoint"] = str(chosen.checkpoint)
        epochs = chosen.best_epoch
    if stages in ("both", "final"):
        final = train_stage(config, clips, labels, "final", ("train", "dev"), "test", epochs, progress, encoder_factory)
        summary |= {"final_epochs": epochs, "test": final.evaluation.uar_per_exit() if final.evaluation else None}
        summary["final_checkpoint"] = str(final.checkpoint)
    model = build_model(config, len(labels), encoder_factory)
    summary["path_parameters"] = {str(k): v for k, v in model.path_parameters().items()}
    if rank == 0:
        (config.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
