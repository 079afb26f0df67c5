"""Shared fixtures: a tiny random model exported once per test session, and audio made here."""
from __future__ import annotations

import importlib.util
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

warnings.filterwarnings("ignore")

# A device installs the runtime only (pip install -e '.[test]'): the torch side's tests are not collected there,
# and the fixtures that export tiny models skip; what runs is the runtime on the shipped demo model.
HAVE_TORCH = importlib.util.find_spec("torch") is not None
collect_ignore = [] if HAVE_TORCH else ["test_data.py", "test_evaluate.py", "test_export.py", "test_losses.py",
                                         "test_model.py", "test_train.py"]

TINY_LABELS = ["calm", "lively", "tense"]

# Mutation runs (scripts/mutation.py) run the runtime's tests hundreds of times: EDGE_SER_TEST_MODELS names a
# directory where the tiny exports are kept between runs. Unset (CI, a developer), every session exports afresh.
MODEL_CACHE = os.environ.get("EDGE_SER_TEST_MODELS")


def export_tiny(request, tmp_path_factory, name: str, description: str, seed: int, dev_audio, normalize: bool) -> Path:
    """The tiny model exported as `name`, with dev_audio(rng) as its calibration set: a fresh copy in this session's
    tmp dir, exported there, or copied from MODEL_CACHE (exported into it the first time)."""

    def build(out: Path) -> None:
        model = request.getfixturevalue("tiny_model")  # skips first where torch is not installed
        from edge_ser_torch.onnx_export import ExportOptions, export_model

        rng = np.random.default_rng(seed)
        audio = dev_audio(rng)
        dev = (audio, rng.integers(0, len(TINY_LABELS), len(audio)))
        # fp32 by default: the timed choice would depend on this machine's load, and the tests compare with torch
        options = ExportOptions(verify_seconds=(0.5, 1.3), description=description, default_precision="fp32")
        export_model(model, TINY_LABELS, out, name=name, normalize=normalize, dev=dev, options=options)

    out = tmp_path_factory.mktemp("models") / name
    if not MODEL_CACHE:
        build(out)
        return out
    cached = Path(MODEL_CACHE) / name
    if not (cached / "manifest.yaml").exists():
        build(cached)
    shutil.copytree(cached, out)
    return out


def tiny_overrides(layers: int = 4) -> dict:
    from edge_ser_torch.backbone import tiny_config

    return tiny_config(num_layers=layers, hidden=32, heads=2, ffn=64, conv_dim=16)


@pytest.fixture(scope="session")
def tiny_model():
    torch = pytest.importorskip("torch", reason="exporting test models needs the train extra")

    from edge_ser_torch.config import ModelConfig
    from edge_ser_torch.model import SelfDistilledSER

    torch.manual_seed(0)
    config = ModelConfig(backbone=tiny_overrides(4), exit_layers=[1, 3], head_dim=16)
    return SelfDistilledSER(config, len(TINY_LABELS)).eval()


@pytest.fixture(scope="session")
def tiny_export(request, tmp_path_factory) -> Path:
    """encoder -> blocks_00_01 -> blocks_01_03 -> blocks_03_04 with heads at 1, 3, 4; fp32 + int8 + policy."""
    return export_tiny(request, tmp_path_factory, "tiny", "tiny test model", seed=1, normalize=True,
                       dev_audio=lambda rng: [rng.standard_normal(int(s * 16000)).astype(np.float32) * 0.1
                                              for s in rng.uniform(0.5, 1.5, 12)])


def fingerprint(model_dir: Path, precision: str = "fp32") -> str:
    """What a device profile of `model_dir` at `precision` must record (calibrate writes it)."""
    from edge_ser.manifest import load_manifest

    return load_manifest(model_dir).fingerprint(precision)


def write_tone(path: Path, seconds: float = 1.0, rate: int = 16000, channels: int = 1, freq: float = 220.0) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    if channels > 1:
        audio = np.stack([audio] * channels, axis=1)
    sf.write(path, audio.astype(np.float32), rate)
    return path


@pytest.fixture(scope="session")
def stream_export(request, tmp_path_factory) -> Path:
    """The tiny model exported for raw waveforms (no per-clip normalisation): its encoder streams exactly."""
    return export_tiny(request, tmp_path_factory, "tiny-stream", "tiny streaming test model", seed=2, normalize=False,
                       dev_audio=lambda rng: [speechlike(s, seed=i) for i, s in enumerate(rng.uniform(0.5, 1.5, 12))])


def speechlike(seconds: float, seed: int = 0, level: float = 0.3, rate: int = 16000) -> np.ndarray:
    """A voiced-sounding burst: harmonics of a wandering pitch under a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6))
    audio = voiced * envelope
    return (level * audio / np.abs(audio).max()).astype(np.float32)


def quiet(seconds: float, seed: int = 0, level: float = 0.001, rate: int = 16000) -> np.ndarray:
    """Background noise well below speech (-60 dBFS by default)."""
    return (level * np.random.default_rng(1000 + seed).standard_normal(int(seconds * rate))).astype(np.float32)
