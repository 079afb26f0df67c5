"""The edge-ser command as a user runs it: output, JSON, errors, batches, and no torch on the device path."""
import json
import subprocess
import sys

import pytest

from conftest import TINY_LABELS, write_tone

TORCH_FREE = """
import sys
from edge_ser.cli import main
code = main(sys.argv[1:])
loaded = [m for m in ("torch", "transformers", "onnx", "edge_ser_torch") if m in sys.modules]
print("HEAVY:" + ",".join(loaded), file=sys.stderr)
sys.exit(code)
"""


def run(*args, code=TORCH_FREE):
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    write_tone(folder / "a.wav", 1.0)
    write_tone(folder / "b.flac", 1.5, rate=44100, channels=2)
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEfmt nothing")
    return folder


def test_classify_prints_a_table_without_importing_torch(tiny_export, clips):
    r = run("classify", clips / "a.wav", "--model", tiny_export, "--budget", "5s")
    assert r.returncode == 0, r.stderr
    row = r.stdout.splitlines()[1]
    assert row.startswith("a.wav") and any(label in row for label in TINY_LABELS)
    assert "met 5000 ms (est.)" in row
    assert "HEAVY:\n" in r.stderr or r.stderr.rstrip().endswith("HEAVY:"), r.stderr


def test_json_lines_and_a_bad_file_in_a_batch(tiny_export, clips):
    r = run("classify", clips, "--model", tiny_export, "--json", "--exit", "3")
    assert r.returncode == 1  # one file failed; the others were still classified
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["source"].rsplit("/", 1)[-1] for x in lines] == ["a.wav", "b.flac", "broken.wav"]  # sorted
    assert [("error" in x) for x in lines] == [False, False, True]
    good = [x for x in lines if "error" not in x]
    assert {x["exit_layer"] for x in good} == {3}
    assert {round(x["seconds"], 2) for x in good} == {1.0, 1.5}
    assert "broken.wav" in lines[2]["error"] and "cannot decode" in lines[2]["error"]
    assert "Traceback" not in r.stderr and "1 of 3 file(s) failed" in r.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["classify", "x.wav", "--budget", "soon"], "cannot read 'soon' as a duration"),
        (["classify", "missing.wav"], "no such file"),
        (["info", "/nonexistent"], "not a model directory"),
        (["classify", "x.wav", "--exit", "deep"], "--exit takes a layer number or 'auto'"),
    ],
)
def test_bad_input_gets_one_line_and_nonzero_exit(tiny_export, args, message):
    if args[0] == "classify" and "--model" not in args:
        args = args + ["--model", str(tiny_export)]
    r = run(*args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_strict_budget_refusal_exits_3(tiny_export, clips, tmp_path):
    from edge_ser.profile import DeviceProfile, SegmentCost

    names = ["encoder", "context", "blocks_00_01", "blocks_01_03", "blocks_03_04", "exit_01", "exit_03", "exit_04"]
    profile = DeviceProfile("tiny", "fp32", 1, segments={n: SegmentCost([50.0, 0, 0], 1.0, 0, 1) for n in names})
    profile.save(tmp_path / "p.yaml")
    r = run("classify", clips / "a.wav", "--model", tiny_export, "--profile", tmp_path / "p.yaml", "--budget", "10ms", "--strict")
    assert r.returncode == 3 and "not even exit 1 fits" in r.stderr


def test_info_and_calibrate(tiny_export, tmp_path):
    r = run("info", tiny_export)
    assert r.returncode == 0 and "encoder -> context -> blocks_00_01" in r.stdout and "early exit" in r.stdout
    j = json.loads(run("info", tiny_export, "--json").stdout)
    assert j["labels"] == TINY_LABELS
    out = tmp_path / "profile.yaml"
    r = run("calibrate", tiny_export, "--out", out, "--seconds", "0.5,1,2", "--repeats", "2")
    assert r.returncode == 0, r.stderr
    from edge_ser.profile import DeviceProfile

    profile = DeviceProfile.load(out)
    assert set(profile.segments) == {"encoder", "context", "blocks_00_01", "blocks_01_03", "blocks_03_04", "exit_01", "exit_03", "exit_04"}
    assert all(c.predict_ms(1.0, high=False) > 0 for c in profile.segments.values())
    clip = write_tone(tmp_path / "a.wav")
    r = run("classify", clip, "--model", tiny_export, "--profile", out, "--precision", "int8", "--budget", "50ms")
    assert r.returncode == 2 and "device profile is for model" in r.stderr and "at fp32, not" in r.stderr
    assert "Traceback" not in r.stderr


def test_training_commands_explain_the_extra_when_torch_is_missing():
    blocker = "import sys; sys.modules['torch'] = None\n" + TORCH_FREE
    r = run("train", "cfg.yaml", code=blocker)
    assert r.returncode == 2 and "needs the training extra" in r.stderr and "pip install" in r.stderr
