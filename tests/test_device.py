"""What a device runs, on the shipped demo model, with the runtime alone (no torch): these run in CI's
runtime-only venv too, as they would on a Raspberry Pi (pip install -e '.[test]'; pytest)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from edge_ser import Classifier
from edge_ser.audio import as_float
from edge_ser.classifier import DEFAULT_MODEL

from conftest import quiet

SAMPLES = DEFAULT_MODEL / "samples"


def cli(*args, data: bytes | None = None):
    # generous: these also run on arm64 under qemu emulation (scripts/arm64_check.sh), many times slower
    return subprocess.run([sys.executable, "-m", "edge_ser.cli", *map(str, args)], input=data, capture_output=True,
                          timeout=1800)


def test_the_demo_classifies_its_easy_sample_at_every_precision():
    for precision in ("fp32", "int8", "int8-blocks"):
        r = Classifier(precision=precision, shared_pool=False).classify(SAMPLES / "easy_high-rising.wav", exit=12)
        assert r.label == "high-rising" and r.probabilities["high-rising"] > 0.5 and r.speech


def test_int8_agrees_with_fp32_on_the_demo():
    fp32, int8 = Classifier(shared_pool=False), Classifier(precision="int8", shared_pool=False)
    for path in sorted(SAMPLES.glob("*.wav")):
        samples, rate = sf.read(path, dtype="float32")
        a, b = fp32.exit_probabilities(samples), int8.exit_probabilities(samples)
        for layer in a:
            assert a[layer].argmax() == b[layer].argmax() and np.abs(a[layer] - b[layer]).max() < 0.05


def test_calibrate_then_classify_within_a_budget(tmp_path):
    profile = tmp_path / "profile.yaml"
    r = cli("calibrate", "--out", profile, "--precision", "int8", "--seconds", "0.5,1,2", "--repeats", "2")
    assert r.returncode == 0 and profile.is_file(), r.stderr
    r = cli("classify", SAMPLES / "easy_high-rising.wav", "--profile", profile, "--budget", "60s", "--json")
    result = json.loads(r.stdout)
    assert r.returncode == 0 and result["budget_met"] and not result["estimated"]


def test_listen_on_the_demo_from_a_pipe():
    speech, rate = sf.read(SAMPLES / "easy_high-rising.wav", dtype="float32")
    signal = np.concatenate([quiet(0.8), speech, quiet(1.0, 1)])
    pcm = np.round(signal * 32767).astype("<i2")
    r = cli("listen", "-", "--json", "--exit", "3", "--vad", "energy", data=pcm.tobytes())
    [line] = r.stdout.decode().splitlines()
    result = json.loads(line)
    assert r.returncode == 0 and result["label"] == "high-rising" and result["ended_by"] == "silence"
    heard = as_float(pcm)  # what the pipe carried: int8 runs (the demo's default) tell 16-bit rounding apart
    whole = Classifier(shared_pool=False).classify(heard[round(result["start"] * rate) : round(result["end"] * rate)], rate, exit=3)
    assert result["probabilities"] == pytest.approx(whole.probabilities, abs=1e-4)


def test_verify_the_shipped_demo():
    r = cli("verify")
    assert r.returncode == 0 and b"all 16 files match the manifest" in r.stdout


def test_a_classifier_without_the_shared_pool_after_one_with_it_still_runs():
    """onnxruntime refuses per-session threads once the process-wide pool exists; the runtime joins it instead."""
    subprocess.run([sys.executable, "-c", "from edge_ser import Classifier\n"
                    "Classifier().classify('" + str(SAMPLES / "easy_high-rising.wav") + "')\n"
                    "r = Classifier(shared_pool=False, precision='int8').classify('"
                    + str(SAMPLES / "easy_high-rising.wav") + "')\nassert r.label == 'high-rising'"],
                   check=True, capture_output=True, timeout=1800)


def test_bench_writes_a_report_and_compares_reports(tmp_path):
    out = tmp_path / "report.json"
    r = cli("bench", "--precision", "fp32", "--seconds", "0.5,1", "--repeats", "1", "--out", out)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert set(report["device"]) >= {"cpu", "cores", "features", "memory_gb", "onnxruntime", "providers"}
    fp32 = report["precisions"]["fp32"]
    assert set(fp32["latency"]) == {"3", "8", "10", "12"} and set(fp32["latency"]["3"]) == {"0.5", "1"}
    assert all(v["peak_rss_mb"] > 0 and v["cold_start_ms"] > 0 for v in fp32["process"].values())
    assert fp32["streaming"]["3"]["stream_ms"] > 0 and set(fp32["load_ms"]) >= {"encoder", "context", "exit_12"}
    assert "| [1] | 3 |" in r.stdout.decode()
    # which precision a run takes here, and why: the demo ships no device.yaml, so the export machine's default
    assert report["precision"] | {"device_choice_ms": None} == {
        "runs_at": "int8", "chosen_by": "manifest", "manifest_default": "int8", "verified": ["fp32", "int8", "int8-blocks"],
        "device_choice_ms": None, "fastest_benched": "fp32", "benched_seconds": 1}
    assert "runs at int8: the export machine's default" in r.stdout.decode()
    both = cli("bench", "--compare", out, out)
    assert both.returncode == 0 and both.stdout.decode().count("| [2] |") == 4


@pytest.mark.parametrize("args,message", [(("--precision", "fp64"), b"unknown fp64"),
                                          (("--repeats", "0"), b"--repeats must be from 1 to 100"),
                                          (("--seconds", "a,b"), b"comma-separated numbers"),
                                          (("--compare", "missing.json"), b"not a bench report")])
def test_bench_refuses_bad_arguments_in_one_line(args, message):
    r = cli("bench", *args)
    assert r.returncode == 2 and message in r.stderr and b"Traceback" not in r.stderr


def test_a_missing_provider_falls_back_when_cpu_is_listed_and_is_one_error_otherwise():
    from edge_ser import ProviderError
    from edge_ser.engine import usable_providers

    assert usable_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ProviderError, match="CUDAExecutionProvider not available here; available: .*CPUExecution"):
        usable_providers(["CUDAExecutionProvider"])
    r = cli("classify", SAMPLES / "easy_high-rising.wav", "--provider", "TensorrtExecutionProvider",
            "--provider", "CPUExecutionProvider")
    assert r.returncode == 0 and b"TensorrtExecutionProvider not available here: running on CPUExecutionProvider" in r.stderr
    r = cli("classify", SAMPLES / "easy_high-rising.wav", "--provider", "CUDAExecutionProvider")
    assert r.returncode == 2 and b"not available here" in r.stderr and b"Traceback" not in r.stderr


def test_a_profile_records_the_providers_it_timed(tmp_path):
    from edge_ser import EdgeSerError
    from edge_ser.calibrate import calibrate_profile
    from edge_ser.profile import DeviceProfile

    profile = calibrate_profile(Classifier(shared_pool=False), (0.5,), repeats=1)
    assert profile.providers == ["CPUExecutionProvider"]
    profile.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]  # as calibrated on a Jetson
    loaded = DeviceProfile.load(profile.save(tmp_path / "p.yaml"))
    with pytest.raises(EdgeSerError, match="device profile timed CUDAExecutionProvider, CPUExecutionProvider"):
        Classifier(profile=loaded, shared_pool=False)
