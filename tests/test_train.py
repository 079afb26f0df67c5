"""Training protocol end to end on a tiny corpus: select on dev, retrain on train+dev, resume, evaluate."""
import json

import numpy as np
import pytest
import torch

from edge_ser_torch.config import ExperimentConfig, ModelConfig, TrainConfig
from edge_ser_torch.synth import CorpusSpec, generate_corpus
from edge_ser_torch.train import load_checkpoint, run_experiment

from conftest import tiny_overrides


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    spec = CorpusSpec(speakers=4, clips_per_style=2, dev_speakers=1, test_speakers=1, min_seconds=0.6, max_seconds=1.0)
    return generate_corpus(tmp_path_factory.mktemp("corpus"), spec, progress=False)


def tiny_experiment(corpus, out_dir, epochs=2) -> ExperimentConfig:
    config = ExperimentConfig(
        name="tiny", out_dir=str(out_dir),
        model=ModelConfig(backbone=tiny_overrides(2), exit_layers=[1], head_dim=8),
        train=TrainConfig(lr=1e-3, epochs=epochs, batch_size=4),
    )
    config.data.manifest = str(corpus)
    return config


def test_protocol_writes_metrics_checkpoints_and_evaluations(corpus, tmp_path):
    config = tiny_experiment(corpus, tmp_path)
    summary = run_experiment(config, "both", progress=False)
    run = config.run_dir
    epochs = [json.loads(line) for line in (run / "select" / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 2
    teacher = [e["dev_uar"]["2"] for e in epochs]
    assert summary["best_epoch"] == 1 + int(np.argmax(teacher))  # the first epoch with the best teacher dev UAR
    assert summary["final_epochs"] == summary["best_epoch"]
    assert set(summary["dev"]) == {"1", "2", "fusion"} and set(summary["test"]) == {"1", "2", "fusion"}
    evaluation = json.loads((run / "final" / "eval_test.json").read_text())
    assert len(evaluation["exits"]["2"]["confusion"]) == 5  # 5 styles
    assert sum(map(sum, evaluation["exits"]["2"]["confusion"])) == 10  # 1 test speaker x 5 styles x 2 clips
    model, loaded_config, labels, state = load_checkpoint(run / "select" / "best.pt")
    assert loaded_config.model.exit_layers == [1] and len(labels) == 5 and state["epoch"] == summary["best_epoch"]
    assert state["trained_on"].startswith("CPU (")  # provenance that export copies into the manifest
    assert set(evaluation["deepest_minus_shallowest"]) == {"uar", "ci95"}
    assert summary["path_parameters"]["2"] > summary["path_parameters"]["1"]


def test_resume_continues_where_it_stopped(corpus, tmp_path):
    first = tiny_experiment(corpus, tmp_path, epochs=1)
    run_experiment(first, "select", progress=False)
    longer = tiny_experiment(corpus, tmp_path, epochs=2)
    run_experiment(longer, "select", progress=False)
    lines = (longer.run_dir / "select" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]  # epoch 1 was not trained again

    fresh = tiny_experiment(corpus, tmp_path / "fresh", epochs=2)
    run_experiment(fresh, "select", progress=False)
    resumed = torch.load(longer.run_dir / "select" / "last.pt", weights_only=False)["model"]
    straight = torch.load(fresh.run_dir / "select" / "last.pt", weights_only=False)["model"]
    assert all(torch.allclose(resumed[k], straight[k], atol=1e-5) for k in straight)  # same as an unbroken run


def test_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {learning_rate: 0.1}\n")
    with pytest.raises(ValueError, match="unknown key.*learning_rate"):
        ExperimentConfig.from_yaml(path)


def test_baselines_table_has_every_method(corpus, tmp_path):
    from edge_ser_torch.baselines import distill_targets, run_baselines

    config = tiny_experiment(corpus, tmp_path, epochs=1)
    config.model.backbone = tiny_overrides(3)
    config.model.exit_layers = [1]
    table = run_baselines(config, layers=[2])
    lines = table.splitlines()
    methods = [line.split("|")[1].strip() for line in lines[2:]]
    assert methods.count("truncated + fine-tuning") == 1 and methods.count("single exit") == 1
    assert any(m.startswith("layer-wise distillation") for m in methods)
    assert methods.count("self-distilled (ours)") == 2 and "self-distilled, fusion of exits" in methods
    rows = json.loads((config.run_dir / "baselines" / "baselines.json").read_text())
    truncated = next(r for r in rows if r["method"].startswith("truncated"))
    full = next(r for r in rows if r["method"] == "self-distilled (ours)" and r["layer"] == 3)
    assert truncated["parameters"] < full["parameters"]
    assert all(0.0 <= r["test_uar"] <= 1.0 for r in rows)
    assert distill_targets(12) == [4, 8, 12]


def test_distributed_training_with_torchrun_on_cpu(corpus, tmp_path):
    """Two gloo processes: both stages finish (the ranks agree on the selected epoch) and rank 0 writes."""
    import shutil
    import subprocess
    import sys

    import yaml

    config = tiny_experiment(corpus, tmp_path, epochs=2)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    torchrun = shutil.which("torchrun", path=str(__import__("pathlib").Path(sys.executable).parent))
    r = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "edge_ser.cli", "train", str(path)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((config.run_dir / "summary.json").read_text())
    assert (config.run_dir / "final" / "final.pt").exists() and summary["final_epochs"] == summary["best_epoch"]


def test_command_line_overrides_device_and_out_dir(tmp_path):
    from argparse import Namespace

    from edge_ser_torch.commands import _load_config

    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain: {device: cuda}\n")
    config = _load_config(Namespace(config=path, out_dir=tmp_path / "runs", device="cpu"))
    assert config.train.device == "cpu" and config.out_dir == str(tmp_path / "runs")
    assert _load_config(Namespace(config=path, out_dir=None, device=None)).train.device == "cuda"
