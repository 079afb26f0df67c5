"""Unit parsing and the latency model of device profiles."""
import numpy as np
import pytest

from edge_ser.profile import DeviceProfile, SegmentCost, default_profile_path, fit_cost
from edge_ser.units import parse_duration_ms, parse_seconds, parse_size_mb


@pytest.mark.parametrize("text,ms", [("50ms", 50), ("0.2s", 200), ("500us", 0.5), ("75", 75), (" 3 s ", 3000)])
def test_durations(text, ms):
    assert parse_duration_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["fast", "50 parsecs", "-5ms", "0ms", "ms"])
def test_bad_durations_say_what_works(text):
    with pytest.raises(ValueError, match="duration|positive"):
        parse_duration_ms(text)


def test_sizes_and_seconds():
    assert parse_size_mb("120MiB") == pytest.approx(120)
    assert parse_size_mb("1GB") == pytest.approx(1e9 / 2**20)
    assert parse_seconds("10") == pytest.approx(10) and parse_seconds("500ms") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="memory size"):
        parse_size_mb("12 apples")


def test_fit_recovers_a_quadratic_and_its_spread(tmp_path):
    s = np.repeat([1.0, 2.0, 4.0, 8.0], 5)
    truth = 2.0 + 3.0 * s + 0.25 * s * s
    noisy = truth * np.tile([1.0, 1.02, 0.98, 1.05, 1.0], 4)
    cost = fit_cost(s, noisy, quantile=0.99, memory_mb=12.5)
    assert cost.predict_ms(3.0, high=False) == pytest.approx(2 + 9 + 2.25, rel=0.05)
    assert 1.02 < cost.high_ratio < 1.1
    assert cost.predict_ms(3.0) > cost.predict_ms(3.0, high=False)
    profile = DeviceProfile(model="m", precision="fp32", threads=2, segments={"encoder": cost}, preprocess=cost)
    loaded = DeviceProfile.load(profile.save(tmp_path / "p.yaml"))
    assert loaded.segments["encoder"] == cost and loaded.preprocess == cost


def test_profile_rejects_other_files(tmp_path):
    (tmp_path / "x.yaml").write_text("a: 1\n")
    with pytest.raises(ValueError, match="not an edge-ser device profile"):
        DeviceProfile.load(tmp_path / "x.yaml")


def test_a_profile_plans_only_its_own_model_and_precision(tmp_path):
    profile = DeviceProfile(model="demo", precision="int8", threads=2)
    profile.check_fits("demo", "int8")
    for model, precision in (("demo", "fp32"), ("other", "int8")):
        with pytest.raises(ValueError, match="device profile is for model 'demo' at int8"):
            profile.check_fits(model, precision)
    assert default_profile_path(tmp_path) == tmp_path / "profile.yaml"
    assert default_profile_path(tmp_path, "int8-blocks") == tmp_path / "profile.int8-blocks.yaml"


def test_segment_cost_never_negative():
    assert SegmentCost([-5.0, 1.0, 0.0], 1.0, 0.0, 0.0).predict_ms(1.0) == 0.0


def test_a_profile_is_bound_to_the_model_files_it_timed(tiny_export, tmp_path):
    import shutil

    from edge_ser import Classifier, EdgeSerError
    from edge_ser.calibrate import calibrate_profile

    profile = calibrate_profile(Classifier(tiny_export, shared_pool=False), (0.5, 1.0), repeats=1)
    Classifier(tiny_export, profile=profile, shared_pool=False)  # its own model: fine
    impostor = tmp_path / "tiny"  # the same name, one file retrained (its bytes and hash changed)
    shutil.copytree(tiny_export, impostor)
    exit_file = impostor / "exit_03.onnx"
    old = __import__("edge_ser.integrity").integrity.sha256_of(exit_file)
    exit_file.write_bytes(exit_file.read_bytes() + b"\0")
    new = __import__("edge_ser.integrity").integrity.sha256_of(exit_file)
    (impostor / "manifest.yaml").write_text((impostor / "manifest.yaml").read_text().replace(old, new))
    with pytest.raises(EdgeSerError, match="timed other model files"):
        Classifier(impostor, profile=profile, shared_pool=False)


@pytest.mark.parametrize("text,message", [
    ("version: 2\nmodel: m\nprecision: fp32\nthreads: 1\nsegments: {e: {coefficients: [1, .nan, 0], high_ratio: 1, "
     "fit_error: 0, memory_mb: 1}}\n", "segments.e.coefficients"),
    ("version: 2\nmodel: m\nprecision: fp32\nthreads: -3\nsegments: {}\n", "field threads is -3"),
    ("version: 2\nmodel: m\nprecision: fp32\nthreads: 1\nsegments: {e: {high_ratio: 1}}\n", "malformed device profile"),
    ("version: 2\nmodel: [unclosed\n", "cannot read the device profile"),
    ("version: 1\nmodel: m\n", "of version 2 (found 1)"),
])
def test_a_corrupt_profile_is_one_clear_error(tmp_path, text, message):
    from edge_ser.errors import ProfileError

    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ProfileError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        DeviceProfile.load(tmp_path / "p.yaml")


def test_classify_reports_a_corrupt_profile_in_one_line(tiny_export, tmp_path):
    import subprocess
    import sys

    (tmp_path / "p.yaml").write_text("version: 2\nthreads: [\n")
    r = subprocess.run([sys.executable, "-m", "edge_ser.cli", "classify", str(tmp_path / "p.yaml"), "--model",
                        str(tiny_export), "--profile", str(tmp_path / "p.yaml")], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot read the device profile" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("kwargs,message", [
    ({"threads": 100000}, "threads must be a whole number from 0"), ({"threads": -1}, "threads must"),
    ({"threads": 1.5}, "threads must"), ({"window_seconds": float("nan")}, "window_seconds must be a finite"),
    ({"window_seconds": 0}, "window_seconds must"),
])
def test_classifier_options_are_checked_where_they_enter(tiny_export, kwargs, message):
    from edge_ser import Classifier, EdgeSerError

    with pytest.raises(EdgeSerError, match=message):
        Classifier(tiny_export, shared_pool=False, **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"budget_ms": float("nan")}, "budget_ms must be a finite number above 0"), ({"budget_ms": -5}, "budget_ms"),
    ({"memory_mb": float("inf")}, "memory_mb"), ({"exit": "3"}, "exit must be a layer number"),
    ({"exit": 2}, "no exit at layer 2"),
])
def test_run_options_are_checked_for_clips_and_streams(tiny_export, kwargs, message):
    import numpy as np

    from edge_ser import Classifier, EdgeSerError

    c = Classifier(tiny_export, shared_pool=False)
    with pytest.raises(EdgeSerError, match=message):
        c.classify(np.zeros(16000, np.float32), 16000, **kwargs)
    with pytest.raises(EdgeSerError, match=message):
        c.stream(16000, **kwargs)


def test_cli_threads_beyond_the_machine_is_one_line(tiny_export):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "edge_ser.cli", "listen", "-", "--model", str(tiny_export),
                        "--threads", "100000"], capture_output=True, text=True, input="")
    assert r.returncode == 2 and "threads must be a whole number from 0" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "edge_ser.cli", "calibrate", str(tiny_export), "--repeats", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "repeats must be a whole number from 1" in r.stderr


def test_a_profile_predicts_typical_and_planning_costs_and_names_what_does_not_fit():
    profile = DeviceProfile(model="demo", precision="fp32", threads=2, fingerprint="ab" * 32,
                            providers=["CPUExecutionProvider"],
                            segments={"encoder": SegmentCost([1.0, 2.0, 0.5], 1.5, 0.05, 3.0)})
    assert profile.predict_ms("encoder", 2.0, high=False) == pytest.approx(7.0)  # 1 + 2*2 + 0.5*4
    assert profile.predict_ms("encoder", 2.0) == pytest.approx(10.5)  # at the planning quantile: 1.5x
    with pytest.raises(ValueError, match="device profile timed CPUExecutionProvider, this run uses "
                                         "CUDAExecutionProvider, CPUExecutionProvider: run edge-ser calibrate"):
        profile.check_fits("demo", "fp32", providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ValueError, match=r"fingerprint abababababab, the model's is cdcdcdcdcdcd\): run edge-ser"):
        profile.check_fits("demo", "fp32", fingerprint="cd" * 32)
    with pytest.raises(ValueError, match=r"fingerprint missing, the model's is cdcdcdcdcdcd\)"):
        DeviceProfile(model="demo", precision="fp32", threads=2).check_fits("demo", "fp32", fingerprint="cd" * 32)


def test_the_fingerprint_covers_the_files_a_precision_runs():
    import hashlib

    from edge_ser.classifier import DEFAULT_MODEL
    from edge_ser.manifest import load_manifest

    m = load_manifest(DEFAULT_MODEL)
    for precision in ("fp32", "int8"):
        refs = [s.file_for(precision) for s in m.chain + [e.head for e in m.exits]]
        expected = hashlib.sha256("\n".join(f"{r.file} {r.sha256}" for r in refs).encode()).hexdigest()
        assert m.fingerprint(precision) == expected
    assert m.fingerprint("fp32") != m.fingerprint("int8") != m.fingerprint("int8-blocks")


def test_without_a_profile_memory_is_the_size_of_the_files_on_the_path():
    from edge_ser.classifier import Classifier

    c = Classifier(precision="int8", shared_pool=False)
    e = c.manifest.exits[0]
    files = c.manifest.chain_to(e) + [e.head]
    assert c.memory_mb(e) == pytest.approx(sum(s.file_for("int8").bytes for s in files) / 2**20)
    assert 0.1 < c.memory_mb(e) < c.memory_mb(c.manifest.exits[-1]) < 10  # the demo's int8 files: a few MB


def _profile_yaml(tmp_path, top: dict | None = None, cost: dict | None = None, where: str = "segments"):
    """A valid profile file with some fields replaced (top level, or one segment's / the preprocessing cost)."""
    good_cost = {"coefficients": [1.0, 2.0, 0.0], "high_ratio": 1.0, "fit_error": 0.0, "memory_mb": 0.0}
    data = {"version": 2, "model": "m", "precision": "fp32", "threads": 0, "fingerprint": "", "quantile": 1.0,
            "providers": ["CPUExecutionProvider"], "segments": {"encoder": good_cost},
            "preprocess": good_cost} | (top or {})
    if cost:
        data[where] = {"encoder": good_cost | cost} if where == "segments" else good_cost | cost
    path = tmp_path / "p.yaml"
    path.write_text(__import__("yaml").safe_dump(data))
    return path


def test_profile_fields_at_their_boundaries(tmp_path):
    from edge_ser.errors import ProfileError

    loaded = DeviceProfile.load(_profile_yaml(tmp_path))  # threads 0, quantile 1, ratio 1, errors and memory 0: valid
    assert loaded.threads == 0 and loaded.quantile == 1.0 and loaded.preprocess.high_ratio == 1.0
    bad_top = [("model", 3), ("precision", None), ("threads", -1), ("quantile", 0.0), ("quantile", 1.01),
               ("quantile", float("nan")), ("providers", []), ("providers", ["CPUExecutionProvider", 3])]
    for field, value in bad_top:
        with pytest.raises(ProfileError, match=rf"field {field} is "):
            DeviceProfile.load(_profile_yaml(tmp_path, top={field: value}))
    bad_cost = [("high_ratio", 0.99), ("high_ratio", float("inf")), ("fit_error", -0.01), ("fit_error", float("nan")),
                ("memory_mb", -1.0), ("memory_mb", float("nan"))]
    for where in ("segments", "preprocess"):
        for field, value in bad_cost:
            named = f"segments.encoder.{field}" if where == "segments" else f"preprocess.{field}"
            with pytest.raises(ProfileError, match=rf"{named} is "):
                DeviceProfile.load(_profile_yaml(tmp_path, cost={field: value}, where=where))


def test_a_saved_profile_keeps_its_field_order_and_reads_back_equal(tmp_path):
    profile = DeviceProfile.load(_profile_yaml(tmp_path))
    path = profile.save(tmp_path / "again.yaml")
    assert path.read_text().splitlines()[0].startswith("model:")  # as written, not sorted
    assert DeviceProfile.load(path) == profile
