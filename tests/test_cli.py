"""The edge-ser command as a user runs it: output, JSON, errors, batches, and no torch on the device path."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_LABELS, fingerprint, write_tone

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
    assert row.startswith("a.wav") and "(no speech)" in row  # a steady tone: the label column says so
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
        (["export", "--base", "tiny", "--out", "/tmp/never", "--max-precision-loss", "2"],
         "--max-precision-loss is 2; allowed: a UAR fraction from 0 to 1"),
        (["export", "--base", "tiny", "--out", "/tmp/never", "--max-loss", "nan"], "--max-loss is nan; allowed"),
        (["export", "--base", "tiny", "--out", "/tmp/never", "--no-int8", "--default-precision", "int8"],
         "default precision int8 needs int8 files"),
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
    profile = DeviceProfile("tiny", "fp32", 1, segments={n: SegmentCost([50.0, 0, 0], 1.0, 0, 1) for n in names},
                            fingerprint=fingerprint(tiny_export))
    profile.save(tmp_path / "p.yaml")
    r = run("classify", clips / "a.wav", "--model", tiny_export, "--profile", tmp_path / "p.yaml", "--budget", "10ms", "--strict")
    assert r.returncode == 3 and "not even exit 1 fits" in r.stderr


def test_info_and_calibrate(tiny_export, tmp_path):
    r = run("info", tiny_export)
    assert r.returncode == 0 and "encoder -> context -> blocks_00_01" in r.stdout and "early exit" in r.stdout
    assert "; default fp32" in r.stdout  # the test exports pin it (conftest)
    j = json.loads(run("info", tiny_export, "--json").stdout)
    assert j["labels"] == TINY_LABELS
    out = tmp_path / "profile.yaml"
    r = run("calibrate", tiny_export, "--out", out, "--precision", "fp32", "--seconds", "0.5,1,2", "--repeats", "2")
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


# ---- listen ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scene_pcm():
    """0.7 s quiet, 1.2 s speech-like, 0.9 s quiet, 0.8 s speech-like, 0.3 s quiet: s16le bytes."""
    from conftest import quiet, speechlike

    signal = np.concatenate([quiet(0.7), speechlike(1.2, 1), quiet(0.9, 1), speechlike(0.8, 2), quiet(0.3, 2)])
    return signal, np.round(signal * 32767).astype("<i2").tobytes()


def listen(*args, data: bytes = b""):
    """`edge-ser listen ARGS` with the energy detector, the rule the made speech-like scenes are built for."""
    return subprocess.run([sys.executable, "-c", TORCH_FREE, "listen", *map(str, args), "--vad", "energy"],
                          input=data, capture_output=True, timeout=120)


def test_listen_reads_pcm_from_stdin_and_writes_json_lines(stream_export, scene_pcm):
    signal, pcm = scene_pcm
    r = listen("-", "--model", stream_export, "--json", "--budget", "5s", "--exit", "3", data=pcm)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [(d["start"], d["end"], d["ended_by"]) for d in lines] == [(0.5, 2.1, "silence"), (2.6, 3.9, "marked")]
    assert all(d["exit_layer"] == 3 and d["budget_met"] and d["label"] in TINY_LABELS for d in lines)
    assert b"HEAVY:\n" in r.stderr
    from edge_ser import Classifier

    whole = Classifier(stream_export, shared_pool=False).classify(signal[8000:33600], 16000, exit=3)
    assert lines[0]["probabilities"] == pytest.approx(whole.probabilities, abs=1e-4)


def test_listen_keeps_what_it_printed_when_stdin_ends_mid_sample(stream_export, scene_pcm):
    r = listen("-", "--model", stream_export, data=scene_pcm[1] + b"\x01")
    assert r.returncode == 1 and len(r.stdout.decode().splitlines()) == 2
    assert b"ended mid-sample (1 stray byte" in r.stderr and b"Traceback" not in r.stderr


def test_listen_reports_a_nan_chunk_and_goes_on(stream_export, scene_pcm):
    signal, _ = scene_pcm
    floats = signal.astype("<f4")
    floats[100] = np.nan  # in the first 20 ms chunk, before any speech
    r = listen("-", "--model", stream_export, "--format", "f32le", data=floats.tobytes())
    assert r.returncode == 1 and len(r.stdout.decode().splitlines()) == 2
    assert r.stderr.count(b"NaN or infinite") == 1 and b"Traceback" not in r.stderr


@pytest.mark.parametrize("args,message", [
    ((), "give one source"), (("-", "--rate", "0"), "sample rate"), (("-", "--min-silence", "100ms"), "pad_ms"),
    (("-", "--realtime"), "--realtime"), (("missing.wav",), "no such file"), (("-", "--exit", "2"), "no exit at layer 2"),
])
def test_listen_refuses_bad_arguments_in_one_line(stream_export, args, message):
    r = listen(*args, "--model", stream_export)
    assert r.returncode == 2 and message in r.stderr.decode() and b"Traceback" not in r.stderr


def test_listen_plays_a_file_in_real_time(stream_export, scene_pcm, tmp_path):
    import soundfile as sf

    path = tmp_path / "scene.wav"
    sf.write(path, scene_pcm[0][: 16000 * 2], 16000)  # 2 s: one utterance, ended by the end of the file
    import time

    began = time.monotonic()
    r = listen(path, "--model", stream_export, "--realtime", "--exit", "1")
    assert r.returncode == 0 and len(r.stdout.decode().splitlines()) == 1
    assert time.monotonic() - began >= 2.0


def test_listen_flushes_the_utterance_in_progress_on_interrupt(stream_export, scene_pcm):
    import signal as signals
    import time

    signal, _ = scene_pcm
    speech = np.round(signal[: int(1.5 * 16000)] * 32767).astype("<i2").tobytes()  # still speaking at the end
    for sig in (signals.SIGINT, signals.SIGTERM):
        # a shell's background job inherits SIGINT ignored, and Python then leaves it ignored: as from a terminal
        proc = subprocess.Popen([sys.executable, "-c", TORCH_FREE, "listen", "-", "--vad", "energy", "--model",
                                 str(stream_export),
                                 "--json"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=lambda: signals.signal(signals.SIGINT, signals.SIG_DFL))
        proc.stdin.write(speech)
        proc.stdin.flush()
        time.sleep(3.0)  # let it read and start the utterance
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        [line] = out.decode().splitlines()
        assert json.loads(line)["ended_by"] == "marked" and b"interrupted" in err and b"Traceback" not in err


def test_listen_stops_quietly_when_its_reader_leaves(stream_export, scene_pcm, tmp_path):
    raw = tmp_path / "scene.raw"
    raw.write_bytes(scene_pcm[1] * 3)
    command = f"{sys.executable} -m edge_ser.cli listen - --vad energy --model {stream_export} < {raw} | head -n 1"
    r = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert len(r.stdout.splitlines()) == 1 and "Traceback" not in r.stderr and "Broken pipe" not in r.stderr


def test_classify_says_no_speech_for_silence(tiny_export, tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    r = run("classify", tmp_path / "silence.wav", "--model", tiny_export)
    assert r.returncode == 0 and "(no speech)" in r.stdout.splitlines()[1]
    assert "no speech detected: the loudest 20 ms is -140 dBFS" in r.stderr
    j = json.loads(run("classify", tmp_path / "silence.wav", "--model", tiny_export, "--json").stdout)
    assert j["speech"] is False and j["label"] in TINY_LABELS


def test_a_folder_without_audio_is_one_failed_item_of_the_batch(tiny_export, clips, tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("classify", tmp_path / "empty", clips / "a.wav", tmp_path / "missing.wav", "--model", tiny_export, "--json")
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.returncode == 1 and [("error" in x) for x in lines] == [True, False, True]
    assert "folder holds no audio files" in lines[0]["error"] and "no such file" in lines[2]["error"]
    only_bad = run("classify", tmp_path / "empty", "--model", tiny_export)
    assert only_bad.returncode == 2 and "folder holds no audio files" in only_bad.stderr


def test_verify_checks_every_file_up_front(tiny_export, tmp_path):
    import shutil

    assert run("verify", tiny_export).returncode == 0
    copy = tmp_path / "m"
    shutil.copytree(tiny_export, copy)
    (copy / "exit_04.onnx").write_bytes((copy / "exit_04.onnx").read_bytes()[:-1] + b"\x00")  # same size, other bytes
    (copy / "blocks_03_04.int8.onnx").unlink()
    r = run("verify", copy)
    assert r.returncode == 2 and "BAD exit_04.onnx: sha256 does not match" in r.stdout
    assert "BAD blocks_03_04.int8.onnx: missing" in r.stdout and "2 of" in r.stderr and "Traceback" not in r.stderr


def test_the_wheel_carries_the_demo_model(tmp_path):
    """`pip install .` must give a working first command: the demo model travels as package data."""
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "-q", "-w", str(tmp_path)],
                   check=True, capture_output=True, timeout=1800)
    [wheel] = tmp_path.glob("edge_ser-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(root / "models" / "demo").as_posix() for p in (root / "models" / "demo").rglob("*")
               if p.is_file() and not p.name.startswith("profile")}
    assert {f"edge_ser/demo_model/{name}" for name in shipped} <= names
    assert "edge_ser/demo_model/manifest.yaml" in names and "edge_ser/demo_model/context.onnx" in names


def test_the_readmes_first_screen_and_every_python_example_run_verbatim():
    """The README's first commands and each ```python block of the README and docs/, run as a user would paste
    them, from the repository root."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    blocks = [b for page in pages for b in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)]
    assert len(blocks) >= 4
    first_screen = (root / "README.md").read_text().split("## Commands")[0]
    assert "```python" in first_screen and "edge-ser classify" in first_screen  # use, within the first screen
    # the service example talks to `edge-ser serve` at its default URI: start one there, as the README says to
    server = subprocess.Popen([sys.executable, "-m", "edge_ser.cli", "serve"], cwd=root, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert "ready on unix:///tmp/edge-ser.sock" in server.stderr.readline()
        for block in blocks:
            r = subprocess.run([sys.executable, "-c", block], cwd=root, capture_output=True, text=True, timeout=1800)
            assert r.returncode == 0 and r.stdout.strip(), f"README example failed:\n{block}\n{r.stderr}"
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0
    first = re.search(r"^edge-ser classify (models/demo/samples/\S+\.wav) --budget 50ms$", (root / "README.md").read_text(),
                      flags=re.M)
    r = subprocess.run([sys.executable, "-m", "edge_ser.cli", "classify", first.group(1), "--budget", "50ms"], cwd=root,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0 and "high-rising" in r.stdout


def test_paths_may_follow_options(tiny_export, clips):
    r = run("classify", clips / "a.wav", "--model", tiny_export, "--json", clips / "b.flac")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2
    bad = run("classify", clips / "a.wav", "--model", tiny_export, "--bogus")
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr


def test_exit_codes_when_strict_refusals_mix_with_successes_and_failures(tiny_export, clips, tmp_path):
    from edge_ser.profile import DeviceProfile, SegmentCost

    names = ["encoder", "context", "blocks_00_01", "blocks_01_03", "blocks_03_04", "exit_01", "exit_03", "exit_04"]
    profile = DeviceProfile("tiny", "fp32", 1, segments={n: SegmentCost([0, 10.0, 0], 1.0, 0, 1) for n in names},
                            fingerprint=fingerprint(tiny_export))
    profile.save(tmp_path / "p.yaml")
    # exit 1 costs 40 ms per second of audio: a.wav (1 s) fits 50 ms, b.flac (1.5 s) does not
    base = ("--model", tiny_export, "--profile", tmp_path / "p.yaml", "--budget", "50ms", "--strict", "--exit", "1")
    mixed = run("classify", clips / "a.wav", clips / "b.flac", *base)
    assert mixed.returncode == 3 and mixed.stdout.count("\n") == 2  # header + a.wav; b.flac refused
    with_failure = run("classify", clips / "a.wav", clips / "b.flac", clips / "broken.wav", *base)
    assert with_failure.returncode == 1  # a failure that is not a refusal
    only_refused = run("classify", clips / "b.flac", *base)
    assert only_refused.returncode == 3


def test_without_precision_classify_follows_the_profile_then_the_model(tiny_export, clips, tmp_path):
    """--precision unset: a --profile's precision wins (an fp32 profile is not refused on a model whose default is
    int8); with no profile the model's default_precision runs, and its own profile file is the one looked for."""
    import shutil

    import yaml

    from edge_ser.profile import DeviceProfile, SegmentCost

    model = tmp_path / "m"
    shutil.copytree(tiny_export, model)
    raw = yaml.safe_load((model / "manifest.yaml").read_text())
    raw["default_precision"] = "int8"
    (model / "manifest.yaml").write_text(yaml.safe_dump(raw))
    names = ["encoder", "context", "blocks_00_01", "blocks_01_03", "blocks_03_04", "exit_01", "exit_03", "exit_04"]
    profile = DeviceProfile("tiny", "fp32", 1, segments={n: SegmentCost([0.5, 0, 0], 1.0, 0, 1) for n in names},
                            fingerprint=fingerprint(model))
    profile.save(tmp_path / "p.yaml")
    r = run("classify", clips / "a.wav", "--model", model, "--profile", tmp_path / "p.yaml", "--budget", "1s", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["estimated"] is False  # planned from the fp32 profile
    profile.save(model / "profile.yaml")  # fp32's default file: not the one an int8 run looks for
    r = run("classify", clips / "a.wav", "--model", model, "--budget", "1s", "--json")
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[0])["estimated"] is True, r.stderr
