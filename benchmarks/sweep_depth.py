"""Which corpus and training recipe make depth pay? A grid of (corpus, recipe) runs, side by side.

Issue #3 asks for a tiny 12-layer model whose deepest exit is measurably better than its
shallowest. On the original corpus every exit failed on the same pair of mirror-image styles
(high-rising vs high-falling differ only in the direction of F0), so depth had nothing to add.
This grid crosses corpora (F0-only direction vs vocal effort that follows pitch, 16 vs 32
clips per speaker and style) with recipes (the demo's two stages, the same with the paper's
fine-tuning rate, and one-stage self-distillation from scratch) and, optionally, encoder
widths; it trains every cell concurrently (meant for a GPU machine: the default grid took
5.6 minutes on one H200; many hours on 2 CPU cores) and writes dev (selection) and test UAR
per exit for each cell. The README's "Does depth pay?" table comes from it.

    python benchmarks/sweep_depth.py --out runs/sweep --device cuda
    python benchmarks/sweep_depth.py --out /tmp/sweep --smoke      # 1 epoch on tiny corpora, CPU

Writes <out>/results.json (updated as cells finish) and one folder per corpus and cell.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_ser_torch.config import ExperimentConfig  # noqa: E402
from edge_ser_torch.synth import CorpusSpec, generate_corpus  # noqa: E402

CORPORA: dict[str, CorpusSpec] = {
    "f0-16spk": CorpusSpec(speakers=16, clips_per_style=16, effort=0.0),  # the original corpus's design
    "effort-24spk": CorpusSpec(speakers=24, dev_speakers=4, test_speakers=4, clips_per_style=16, effort=0.6),
    "effort-24spk-2x": CorpusSpec(speakers=24, dev_speakers=4, test_speakers=4, clips_per_style=32, effort=0.6),
    "f0-24spk-2x": CorpusSpec(speakers=24, dev_speakers=4, test_speakers=4, clips_per_style=32, effort=0.0),
}
# Training overrides per recipe. two-stage*: stage 2 on top of a stage-1 encoder (configs/demo-pretrain.yaml
# then configs/demo.yaml); one-stage: the stage-1 settings with the exits attached from the start.
RECIPES: dict[str, dict] = {
    "two-stage": {"lr": 1.0e-4, "epochs": 6},
    "two-stage-3e-5": {"lr": 3.0e-5, "epochs": 6},
    "one-stage": {"lr": 1.0e-3, "warmup_steps": 200, "epochs": 8},
}
# The cells run by default (f0-16spk, the first demo's design, is known: every exit equal); a corpus
# named with --corpora but not here runs every recipe.
GRID: dict[str, list[str]] = {
    "effort-24spk-2x": ["two-stage", "two-stage-3e-5", "one-stage"],
    "effort-24spk": ["two-stage", "one-stage"],
    "f0-24spk-2x": ["one-stage"],
}

results: dict[str, dict] = {}
lock = threading.Lock()


def run(cmd: list[str], log: Path) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1",
                        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=True, cwd=ROOT)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_ser.cli", *args]


def write_config(raw: dict, path: Path) -> Path:
    ExperimentConfig.from_dict(raw)  # refuse a typo before a run starts
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def record(key: str, run_dir: Path, started: float) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    test = json.loads((run_dir / "select" / "eval_test.json").read_text())
    with lock:
        results[key] = {"best_epoch": summary["best_epoch"], "dev": summary["dev"], "test": test["uar"],
                        "minutes": round((time.time() - started) / 60, 1)}


def train_cell(key: str, raw: dict, out: Path, started: float) -> None:
    config = write_config(raw, out / f"{raw['name']}.yaml")
    log = out / f"{raw['name']}.log"
    run(cli("train", str(config), "--stage", "select"), log)
    best = out / raw["name"] / "select" / "best.pt"
    run(cli("evaluate", str(best), "--split", "test"), log)
    record(key, out / raw["name"], started)


def corpus_cells(
    corpus: str, recipes: list[str], width: int | None, manifest: Path, out: Path, device: str, epochs: int | None,
    pool: ThreadPoolExecutor,
) -> list:
    """Submit the cells of one corpus (and one encoder width: None = the demo's 96) to `pool`."""
    pre = ExperimentConfig.from_yaml(ROOT / "configs" / "demo-pretrain.yaml").to_dict()
    demo = ExperimentConfig.from_yaml(ROOT / "configs" / "demo.yaml").to_dict()
    for raw in (pre, demo):
        raw["data"]["manifest"] = str(manifest)
        raw["out_dir"] = str(out)
        raw["train"]["device"] = device
    if width:  # narrower layers: less capacity per layer, so a shallow path may fall short
        pre["model"]["backbone"] |= {"hidden_size": width, "num_attention_heads": max(1, width // 16),
                                     "intermediate_size": 2 * width}
    name = f"{corpus}.w{width}" if width else corpus
    started = time.time()
    futures = []
    if "one-stage" in recipes:
        raw = copy.deepcopy(pre) | {"name": f"{name}.one-stage"}
        raw["model"]["exit_layers"] = demo["model"]["exit_layers"]
        raw["train"] |= RECIPES["one-stage"] | ({"epochs": epochs} if epochs else {})
        futures.append(pool.submit(train_cell, f"{name}/one-stage", raw, out, started))

    def two_stage() -> None:
        raw = copy.deepcopy(pre) | {"name": f"{name}.pretrain"}
        if epochs:
            raw["train"]["epochs"] = epochs
        log = out / f"{raw['name']}.log"
        run(cli("train", str(write_config(raw, out / f"{raw['name']}.yaml")), "--stage", "select"), log)
        encoder = out / raw["name"] / "encoder"
        run([sys.executable, "-c", "import sys; from edge_ser_torch.train import load_checkpoint; "
             "m, *_ = load_checkpoint(sys.argv[1]); m.backbone.hf.save_pretrained(sys.argv[2])",
             str(out / raw["name"] / "select" / "best.pt"), str(encoder)], log)
        stage2 = []
        for recipe in recipes:
            if recipe == "one-stage":
                continue
            cell = copy.deepcopy(demo) | {"name": f"{name}.{recipe}"}
            cell["model"]["base"] = str(encoder)
            cell["train"] |= RECIPES[recipe] | ({"epochs": epochs} if epochs else {})
            stage2.append(pool.submit(train_cell, f"{name}/{recipe}", cell, out, started))
        for f in stage2:
            f.result()

    if any(recipe != "one-stage" for recipe in recipes):
        futures.append(pool.submit(two_stage))
    return futures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny corpora, 1 epoch: checks the plumbing")
    parser.add_argument("--corpora", default=",".join(GRID), help="comma-separated corpora of the grid")
    parser.add_argument("--recipes", default=None, help="comma-separated recipes for every corpus (default: GRID's)")
    parser.add_argument("--widths", default="", help="comma-separated encoder widths (default: the demo's 96)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = {k: CORPORA[k] for k in args.corpora.split(",")}
    if args.smoke:
        chosen = {k: CorpusSpec(speakers=5, dev_speakers=1, test_speakers=1, clips_per_style=2, effort=v.effort)
                  for k, v in chosen.items()}
    manifests = {}
    t0 = time.time()
    for name, spec in chosen.items():
        manifests[name] = generate_corpus(args.out / "corpora" / name, spec, progress=False)
        print(f"corpus {name}: {time.time() - t0:.0f} s", flush=True)

    def report() -> None:
        progress = {p.parent.parent.name: [json.loads(line) for line in p.read_text().splitlines()]
                    for p in sorted(args.out.glob("*/select/metrics.jsonl"))}
        with lock:
            (args.out / "results.json").write_text(json.dumps(
                {"corpora": {k: vars(v) for k, v in chosen.items()}, "device": args.device, "cells": results,
                 "epochs_so_far": progress}, indent=1))

    stop = threading.Event()

    def reporter() -> None:
        while not stop.wait(30):
            report()
            print(f"{time.time() - t0:.0f} s: {len(results)} cells done", flush=True)

    threading.Thread(target=reporter, daemon=True).start()
    with ThreadPoolExecutor(max_workers=32) as pool:
        widths = [None] if not args.widths else [int(w) if w != "96" else None for w in args.widths.split(",")]
        futures = [f for name, manifest in manifests.items() for width in widths
                   for f in corpus_cells(name, args.recipes.split(",") if args.recipes else GRID.get(name, list(RECIPES)), width, manifest,
                                         args.out, args.device, 1 if args.smoke else None, pool)]
        failed = 0
        for f in futures:
            try:
                f.result()
            except subprocess.CalledProcessError as e:
                failed += 1
                print(f"failed: {e}", flush=True)
    stop.set()
    report()
    for key, cell in sorted(results.items()):
        print(f"{key:32s} epoch {cell['best_epoch']}  dev {fmt(cell['dev'])}  test {fmt(cell['test'])}  {cell['minutes']} min")
    return 1 if failed else 0


def fmt(uar: dict) -> str:
    return "/".join(f"{100 * uar[k]:.1f}" for k in uar if k != "fusion")


if __name__ == "__main__":
    sys.exit(main())
