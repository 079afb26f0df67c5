"""The device's own precision (edge_ser.precision): the accuracy rule at its boundary, the fastest on this device
chosen by calibrate, and classify / Classifier following that choice, on copies of the demo model (runtime only)."""
import logging
import shutil

import pytest
import yaml

from edge_ser import Classifier
from edge_ser.classifier import DEFAULT_MODEL
from edge_ser.errors import ProfileError
from edge_ser.manifest import load_manifest
from edge_ser.precision import CHOICE_NAME, DeviceChoice, fastest, verified_precisions, within_loss

UAR = {"fp32": {"3": 0.95625, "12": 0.96}}


@pytest.fixture
def model(tmp_path):
    return shutil.copytree(DEFAULT_MODEL, tmp_path / "demo", ignore=shutil.ignore_patterns("samples"))


@pytest.mark.parametrize("int8_uar, blocks_uar, expected", [
    ({"3": 0.95125, "12": 0.96}, {"3": 0.95625, "12": 0.96}, ["fp32", "int8", "int8-blocks"]),  # exactly 0.005
    ({"3": 0.95115, "12": 0.96}, {"3": 0.95625, "12": 0.96}, ["fp32", "int8-blocks"]),  # 0.0051: not verified
    ({"3": 0.96, "12": 0.9545}, {"3": 0.95, "12": 0.96}, ["fp32"]),  # each loses too much at one exit
    ({"3": 0.99}, {}, ["fp32"]),  # an exit without a UAR, a variant without any: never verified
])
def test_the_accuracy_rule_at_its_boundary(int8_uar, blocks_uar, expected):
    assert within_loss(UAR | {"int8": int8_uar, "int8-blocks": blocks_uar}, 0.005) == expected


def test_the_fastest_wins_and_fp32_wins_a_tie():
    assert fastest({"fp32": 100.0, "int8": 50.0, "int8-blocks": 70.0}) == "int8"
    assert fastest({"fp32": 40.0, "int8": 50.0}) == "fp32"  # an ARM board where int8 is slower
    assert fastest({"fp32": 50.0, "int8": 50.0}) == "fp32"


def test_verified_precisions_follow_the_manifest_rule(model):
    assert verified_precisions(load_manifest(model)) == ["fp32", "int8", "int8-blocks"]  # the demo, at 0.005
    raw = yaml.safe_load((model / "manifest.yaml").read_text())
    loss = min(raw["precisions"]["fp32"]["dev_uar"][k] - raw["precisions"]["int8"]["dev_uar"][k]
               for k in raw["precisions"]["fp32"]["dev_uar"])
    raw["max_precision_loss"] = 0.0
    raw["precisions"]["int8"]["dev_uar"] = {k: v - 0.01 for k, v in raw["precisions"]["fp32"]["dev_uar"].items()}
    (model / "manifest.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert "int8" not in verified_precisions(load_manifest(model)) and loss <= 0.005


def _calibrate(model, monkeypatch, timings, *args):
    """edge-ser calibrate, in this process, with the full-depth timings of this device replaced by `timings`."""
    import edge_ser.calibrate
    from edge_ser.cli import main
    from edge_ser.engine import Engine

    timed = []

    def fake_time_classifiers(classifiers, **_options):
        timed.append(list(classifiers))
        return {p: timings[p] for p in classifiers}

    monkeypatch.setattr(edge_ser.calibrate, "time_classifiers", fake_time_classifiers)
    # The command opens its sessions in the process-wide pool, as on a device; in this test process that pool
    # would refuse every later session with threads of its own (the export tests'), so these get their own.
    real_init = Engine.__init__

    def own_pool(self, directory, manifest, precision="fp32", threads=0, providers=None, shared_pool=True):
        real_init(self, directory, manifest, precision, threads, providers, False)

    monkeypatch.setattr(Engine, "__init__", own_pool)
    assert main(["calibrate", str(model), "--repeats", "1", "--seconds", "1", *args]) == 0
    return timed


def test_calibrate_chooses_the_fastest_verified_precision_here_and_every_run_follows_it(model, monkeypatch, capsys):
    """The demo's export chose int8; on a board where fp32 is faster, calibrate picks fp32, writes device.yaml and
    the fp32 profile, and a Classifier or classify without --precision runs fp32 from then on."""
    assert Classifier(model, shared_pool=False).engine.precision == "int8"  # the export machine's choice
    timed = _calibrate(model, monkeypatch, {"fp32": 40.0, "int8": 55.0, "int8-blocks": 48.0})
    assert timed == [["fp32", "int8", "int8-blocks"]]
    out = capsys.readouterr().out
    assert "precision: fp32, the fastest here" in out and "the export machine chose int8" in out
    choice = DeviceChoice.load(model / CHOICE_NAME)
    assert choice.precision == "fp32" and choice.full_depth_ms["int8"] == 55.0 and choice.max_precision_loss == 0.005
    assert (model / "profile.yaml").is_file()  # the chosen precision's profile
    follows = Classifier(model, shared_pool=False)
    assert follows.engine.precision == "fp32" and follows.precision_source == "device"
    from edge_ser.cli import build_classifier, build_parser  # the commands: the fp32 profile calibrate wrote, too

    command = build_classifier(build_parser().parse_args(["classify", "x.wav", "--model", str(model)]))
    assert command.engine.precision == "fp32" and command.precision_source == "profile"
    asked = Classifier(model, precision="int8", shared_pool=False)  # asking still wins
    assert asked.engine.precision == "int8" and asked.precision_source == "asked"


def test_a_stale_choice_is_left_with_a_warning_and_a_corrupt_one_is_one_line(model, monkeypatch):
    _calibrate(model, monkeypatch, {"fp32": 40.0, "int8": 55.0, "int8-blocks": 48.0})
    raw = yaml.safe_load((model / CHOICE_NAME).read_text())
    raw["fingerprints"]["int8"] = "0" * 64  # the int8 files changed since: an update over the air
    (model / CHOICE_NAME).write_text(yaml.safe_dump(raw))
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("edge_ser.precision").addHandler(handler)
    try:
        c = Classifier(model, shared_pool=False)
    finally:
        logging.getLogger("edge_ser.precision").removeHandler(handler)
    assert c.engine.precision == "int8" and c.precision_source == "manifest"
    assert len(warnings) == 1 and "chosen for other model files" in warnings[0]
    for field, value in (("precision", "int4"), ("full_depth_ms", {"fp32": float("nan")}), ("threads", -1),
                         ("max_precision_loss", 2)):
        (model / CHOICE_NAME).write_text(yaml.safe_dump(raw | {field: value}))
        with pytest.raises(ProfileError, match=f"device.yaml: field {field} is"):
            Classifier(model, shared_pool=False)
    (model / CHOICE_NAME).write_text("version: 1\nprecision: [\n")
    with pytest.raises(ProfileError, match="cannot read the device's precision choice"):
        Classifier(model, shared_pool=False)


def test_calibrate_with_a_precision_profiles_it_and_leaves_the_choice_alone(model, monkeypatch):
    timed = _calibrate(model, monkeypatch, {}, "--precision", "int8-blocks")
    assert timed == [] and not (model / CHOICE_NAME).exists() and (model / "profile.int8-blocks.yaml").is_file()


@pytest.mark.parametrize("flag, value, message", [
    ("--out", "{tmp}", "a folder; name a file to write"),
    ("--out", "{tmp}/missing/profile.yaml", "does not exist"),
])
def test_an_output_that_cannot_be_written_is_refused_before_the_work(model, tmp_path, monkeypatch, flag, value,
                                                                     message):
    """Every --out of every command: refused when the arguments are read, not after minutes of calibration."""
    import subprocess
    import sys

    import edge_ser.calibrate

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("calibration started before its output was checked")

    monkeypatch.setattr(edge_ser.calibrate, "calibrate_profile", must_not_run)
    from edge_ser.cli import main

    with pytest.raises(SystemExit) as refused:
        main(["calibrate", str(model), flag, value.format(tmp=tmp_path)])
    assert refused.value.code == 2
    # the same class of check on every output any command takes (the torch commands' too: parsing needs no torch)
    afile = tmp_path / "a-file"
    afile.write_text("")
    for command in (["bench", "--out", tmp_path], ["calibrate", "--out", tmp_path],
                    ["evaluate", "x.pt", "--out", tmp_path], ["export", "--base", "tiny", "--out", afile],
                    ["corpus", afile], ["train", "c.yaml", "--out-dir", afile], ["baselines", "c.yaml", "--out-dir", afile]):
        done = subprocess.run([sys.executable, "-m", "edge_ser.cli", *map(str, command)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2 and ("a folder; name a file" in done.stderr or "a file, not a folder" in
                                         done.stderr), (command, done.stderr)


def test_the_model_directory_must_be_writable_for_the_choice(model, monkeypatch):
    """calibrate without --precision writes MODEL/device.yaml: a read-only model directory is refused first."""
    import edge_ser.options
    from edge_ser.cli import main

    real = edge_ser.options.os.access
    monkeypatch.setattr(edge_ser.options.os, "access", lambda path, mode: False if str(path) == str(model)
                        else real(path, mode))
    assert main(["calibrate", str(model)]) == 2
