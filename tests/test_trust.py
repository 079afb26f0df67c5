"""Trust on the device, on copies of the shipped demo model with the runtime alone (no torch): modified files,
paths that leave the directory, heads that do not match the labels, a file swapped between its check and its
load, signed models, and the device's own choice of precision."""
import os
import shutil

import numpy as np
import pytest
import yaml

from edge_ser import Classifier, ManifestError
from edge_ser.classifier import DEFAULT_MODEL
from edge_ser.manifest import load_manifest

from conftest import speechlike

CLIP = speechlike(1.0, 3, level=0.3)


@pytest.fixture
def model(tmp_path):
    """A writable copy of the demo model (its samples left out)."""
    return shutil.copytree(DEFAULT_MODEL, tmp_path / "demo", ignore=shutil.ignore_patterns("samples"))


def _edit_manifest(model, change) -> None:
    raw = yaml.safe_load((model / "manifest.yaml").read_text())
    change(raw)
    (model / "manifest.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.mark.parametrize("file, precision", [("blocks_03_08.onnx", "fp32"), ("exit_08.onnx", "fp32"),
                                             ("blocks_03_08.int8.onnx", "int8"), ("context.int8.onnx", "int8"),
                                             ("exit_08.onnx", "int8"), ("encoder.onnx", "int8-blocks")])
@pytest.mark.parametrize("change", ["append", "flip"])
def test_a_modified_file_of_every_kind_is_refused_when_it_would_open(model, file, precision, change):
    """Blocks, heads, int8 files and the fp32 files an int8 run still uses: each is checked when it opens, a byte
    more (size) or a byte changed (sha256); the early path that does not use it still runs."""
    data = bytearray((model / file).read_bytes())
    if change == "append":
        data += b"\0"
    else:
        data[len(data) // 2] ^= 0xFF
    (model / file).write_bytes(bytes(data))
    c = Classifier(model, precision=precision, shared_pool=False)
    if not file.startswith(("context", "encoder")):
        assert c.classify(CLIP, 16000, exit=3).exit_layer == 3  # the untouched early path still works
    reason = r"\d+ bytes, the manifest says \d+" if change == "append" else "sha256 does not match"
    with pytest.raises(ManifestError, match=f"{file}: {reason}.*refusing a modified model file"):
        c.classify(CLIP, 16000, exit=8)


def test_a_missing_file_is_one_line_naming_it(model):
    (model / "blocks_08_10.onnx").unlink()
    with pytest.raises(ManifestError, match="missing file blocks_08_10.onnx"):
        Classifier(model, precision="fp32", shared_pool=False).classify(CLIP, 16000, exit=10)


@pytest.mark.parametrize("where", ["../../etc/passwd", "/etc/passwd", "samples/../../x.onnx"])
def test_paths_outside_the_directory_are_refused(model, where):
    _edit_manifest(model, lambda raw: raw["chain"][1]["files"]["fp32"].update(file=where))
    with pytest.raises(ManifestError, match="outside the model directory"):
        load_manifest(model)


def test_heads_that_do_not_match_the_labels_are_refused(model):
    _edit_manifest(model, lambda raw: raw.update(labels=raw["labels"][:-1]))  # every answer would be mislabelled
    with pytest.raises(ManifestError, match="head scores 5 classes but the manifest lists 4 labels"):
        Classifier(model, shared_pool=False).classify(CLIP, 16000, exit=3)


@pytest.mark.parametrize("by_fd", [True, False], ids=["open-descriptor", "checked-bytes"])
@pytest.mark.parametrize("swap", ["rewrite", "rename"])
def test_a_file_swapped_between_its_check_and_its_load_never_runs(model, monkeypatch, swap, by_fd):
    """A head replaced on disk after its check, just before onnxruntime opens it (another valid head, same input
    and output names), rewritten in place or renamed over: the run either uses what was checked or refuses the
    file; the replacement never answers. Both ways of loading: an open descriptor (Linux) and the checked bytes."""
    import edge_ser.integrity
    from edge_ser.engine import Engine

    if not by_fd:
        monkeypatch.setattr(edge_ser.integrity, "PROC_FD", model / "no-proc")
    expected = Classifier(DEFAULT_MODEL, precision="fp32", shared_pool=False).exit_probabilities(CLIP)[3]
    head, other_head = (model / "exit_03.onnx").read_bytes(), (model / "exit_12.onnx").read_bytes()
    real_open = Engine.open_session
    swapped = []

    def swap_then_open(engine, source, options):
        is_head = source == head if isinstance(source, bytes) else os.path.realpath(source).endswith("/exit_03.onnx")
        if is_head and not swapped:
            if swap == "rewrite":
                (model / "exit_03.onnx").write_bytes(other_head)
            else:
                (model / "exit_03.new").write_bytes(other_head)
                (model / "exit_03.new").rename(model / "exit_03.onnx")
            swapped.append(True)
        return real_open(engine, source, options)

    monkeypatch.setattr(Engine, "open_session", swap_then_open)
    classifier = Classifier(model, precision="fp32", shared_pool=False)
    try:
        answer = classifier.exit_probabilities(CLIP)[3]
    except ManifestError as err:
        assert "exit_03.onnx" in str(err) and "changed while it was being loaded" in str(err)
        assert by_fd  # the descriptor's file was written to, or unlinked by the rename (its ctime moves either way)
    else:
        np.testing.assert_allclose(answer, expected, atol=1e-6)
    assert swapped and (model / "exit_03.onnx").read_bytes() == other_head  # the swap happened
    with pytest.raises(ManifestError, match="exit_03.onnx: .*refusing a modified model file"):  # caught on a new load
        Classifier(model, precision="fp32", shared_pool=False).exit_probabilities(CLIP)



# ---- signed models ------------------------------------------------------------------------------------------

def _key_pair(folder, name="device"):
    """An Ed25519 key pair as PEM files, made by openssl as the README says (pyca where openssl is missing)."""
    import subprocess

    private, public = folder / f"{name}.key", folder / f"{name}.pem"
    if shutil.which("openssl"):
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", private], check=True)
        subprocess.run(["openssl", "pkey", "-in", private, "-pubout", "-out", public], check=True)
    else:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    return _key_pair(folder)


def test_a_signed_model_runs_with_its_public_key_and_openssl_agrees(model, keys):
    import subprocess

    from edge_ser.signing import SIGNATURE_NAME, sign_model

    private, public = keys
    signature, key_id = sign_model(model, private)
    assert signature == model / SIGNATURE_NAME and signature.stat().st_size == 64 and len(key_id) == 16
    c = Classifier(model, public_key=public, shared_pool=False)
    assert c.classify(CLIP, 16000, exit=3).exit_layer == 3
    assert Classifier(model, public_key=public.parent, shared_pool=False).manifest.name == "demo"  # a folder of keys
    if shutil.which("openssl"):  # the signature is plain Ed25519 over the manifest's bytes: no edge-ser needed
        done = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", public, "-rawin", "-in",
                               model / "manifest.yaml", "-sigfile", signature], capture_output=True, text=True)
        assert done.returncode == 0 and "Verified Successfully" in done.stdout


def test_any_trusted_key_is_enough_which_is_how_keys_rotate(model, tmp_path, keys):
    from edge_ser.signing import sign_model

    old_private, old_public = keys
    new_private, new_public = _key_pair(tmp_path / "keys", "next")
    sign_model(model, new_private)  # the new key signs; devices trust old and new
    assert Classifier(model, public_key=[old_public, new_public], shared_pool=False).manifest.name == "demo"
    assert Classifier(model, public_key=tmp_path / "keys", shared_pool=False).manifest.name == "demo"
    with pytest.raises(ManifestError, match="matches none of the 1 trusted public key"):
        Classifier(model, public_key=old_public, shared_pool=False)  # a device that only has the old key


def _opened_nothing(monkeypatch):
    """Fail the test if any onnxruntime session is made: refusals must come before anything is loaded."""
    from edge_ser.engine import Engine

    def refuse(*_args, **_kwargs):
        raise AssertionError("a model file was loaded before the model was trusted")

    monkeypatch.setattr(Engine, "open_session", refuse)


@pytest.mark.parametrize("case, message", [
    ("unsigned", "the model is not signed"),
    ("wrong key", "matches none of the 1 trusted public key"),
    ("changed manifest", "matches none of the 1 trusted public key"),
    ("changed file", r"1 file\(s\) do not match the signed manifest: blocks_08_10.int8.onnx \(sha256"),
    ("missing file", r"do not match the signed manifest: exit_12.onnx \(missing\)"),
    ("short signature", "63 bytes; an Ed25519 signature is 64"),
    ("changed signature", "matches none of the 1 trusted public key"),
])
def test_every_untrusted_model_is_refused_in_one_line_before_anything_is_loaded(model, tmp_path, keys, case, message,
                                                                               monkeypatch):
    from edge_ser.signing import SIGNATURE_NAME, sign_model

    private, public = keys
    if case != "unsigned":
        sign_model(model, private)
    if case == "wrong key":
        _, public = _key_pair(tmp_path / "keys", "other")
    elif case == "changed manifest":  # a one-word change an attacker would make: another default precision
        text = (model / "manifest.yaml").read_text()
        (model / "manifest.yaml").write_text(text.replace("default_precision: int8", "default_precision: fp32"))
    elif case == "changed file":
        data = bytearray((model / "blocks_08_10.int8.onnx").read_bytes())
        data[100] ^= 1
        (model / "blocks_08_10.int8.onnx").write_bytes(bytes(data))
    elif case == "missing file":
        (model / "exit_12.onnx").unlink()
    elif case == "short signature":
        (model / SIGNATURE_NAME).write_bytes((model / SIGNATURE_NAME).read_bytes()[:63])
    elif case == "changed signature":
        sig = bytearray((model / SIGNATURE_NAME).read_bytes())
        sig[0] ^= 1
        (model / SIGNATURE_NAME).write_bytes(bytes(sig))
    _opened_nothing(monkeypatch)
    with pytest.raises(ManifestError, match=message) as refused:
        Classifier(model, precision="int8", public_key=public, shared_pool=False)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("content, message", [
    (None, "cannot read the public key"),
    (b"not a key", "not a PEM public key"),
    (b"x" * 70_000, "not a public key .over 64 KiB"),
    ("rsa", "an RSA public key; edge-ser signatures are Ed25519"),
])
def test_a_bad_public_key_is_one_line_naming_the_file(model, tmp_path, content, message):
    key = tmp_path / "public.pem"
    if content == "rsa":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        content = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if content is not None:
        key.write_bytes(content)
    with pytest.raises(ManifestError, match=f"{key}: {message}"):
        Classifier(model, public_key=key, shared_pool=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no public keys"):
        Classifier(model, public_key=tmp_path / "empty", shared_pool=False)


def test_sign_refuses_a_model_whose_files_do_not_match_and_a_key_that_is_not_ed25519(model, tmp_path, keys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from edge_ser.signing import SIGNATURE_NAME, sign_model

    (model / "exit_03.onnx").write_bytes(b"\0")
    with pytest.raises(ManifestError, match=r"not signing a model whose files do not match.*exit_03.onnx"):
        sign_model(model, keys[0])
    assert not (model / SIGNATURE_NAME).exists()
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(ManifestError, match=r"ec.key: an EC \(ECDSA\) private key; edge-ser signatures are Ed25519"):
        sign_model(model, ec_key)


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "edge_ser.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_the_commands_sign_verify_and_refuse_with_one_line(model, tmp_path, keys):
    private, public = keys
    sample = DEFAULT_MODEL / "samples" / "easy_high-rising.wav"
    unsigned = _cli("classify", sample, "--model", model, "--public-key", public, "--json")
    assert unsigned.returncode == 2 and unsigned.stdout == ""
    assert unsigned.stderr.strip().count("\n") == 0 and "the model is not signed" in unsigned.stderr

    signed = _cli("sign", model, "--key", private)
    assert signed.returncode == 0 and "wrote" in signed.stdout and "manifest.yaml.sig" in signed.stdout
    verified = _cli("verify", model, "--public-key", public)
    assert verified.returncode == 0 and "signed by a trusted key" in verified.stdout
    assert "all 16 files match the signed manifest" in verified.stdout
    assert "not checked" in _cli("verify", model).stdout  # a signature there, no key given: said, not claimed
    assert _cli("classify", sample, "--model", model, "--public-key", public, "--json").returncode == 0
    assert _cli("info", model, "--public-key", public).returncode == 0

    (model / "encoder.int8.onnx").write_bytes(b"\0" * 10)  # the file the default (int8) run opens first
    for command in (["classify", sample, "--model", model], ["info", model], ["verify", model],
                    ["calibrate", model, "--repeats", "1"], ["bench", "--model", model, "--repeats", "1"]):
        done = _cli(*command, "--public-key", public)
        refused = "do not match the signed manifest" in done.stderr or "missing or modified" in done.stderr
        if command[0] == "info":  # info reads the manifest only: its signature still holds
            assert done.returncode == 0, done.stderr
            continue
        assert done.returncode == 2 and refused and "Traceback" not in done.stderr, (command, done.stderr)
    wrong = _cli("verify", model, "--public-key", private)  # the private key where the public one belongs
    assert wrong.returncode == 2 and "not a PEM public key" in wrong.stderr


# ---- arrays from other libraries: channels either way round ----------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_channels_first_arrays_are_read_as_torchaudio_and_librosa_mean_them(dtype):
    """(2, 32000) is two channels of 2 s, not 2 samples of 32,000 channels: the same answer as (32000, 2) and as
    the mean of the two; a (1, n) tensor is mono."""
    from edge_ser.audio import to_mono

    left, right = speechlike(2.0, 1, level=0.3), speechlike(2.0, 2, level=0.2)
    stereo = np.stack([left, right])  # (2, 32000), as torchaudio.load gives it
    if dtype is np.int16:
        stereo = (stereo * 32767).astype(np.int16)
    c = Classifier(DEFAULT_MODEL, precision="fp32", shared_pool=False)
    first = c.classify(stereo, 16000, exit=3)
    last = c.classify(stereo.T, 16000, exit=3)
    assert first.seconds == pytest.approx(2.0) and first.probabilities == pytest.approx(last.probabilities, abs=1e-6)
    np.testing.assert_allclose(to_mono(stereo), to_mono(stereo.T), atol=1e-7)
    assert c.classify(left[None, :], 16000, exit=3).seconds == pytest.approx(2.0)  # (1, n)
    stream = c.stream(16000, exit=3, endpoint=None)
    stream.accept(np.stack([left[:320], right[:320]]))  # a (2, 320) chunk: channels first


@pytest.mark.parametrize("shape, message", [
    ((8, 8), r"shape \(8, 8\) is ambiguous"),
    ((9, 32000), r"shape \(9, 32000\) is not a layout of 1-8 channels"),
    ((32000, 12), r"shape \(32000, 12\) is not a layout of 1-8 channels"),
    ((1, 2, 32000), r"shape \(1, 2, 32000\): expected mono samples"),
])
def test_an_array_whose_layout_cannot_be_told_is_refused_saying_its_shape_and_what_is_expected(shape, message):
    from edge_ser import AudioError

    c = Classifier(DEFAULT_MODEL, shared_pool=False)
    with pytest.raises(AudioError, match=message) as refused:
        c.classify(np.zeros(shape, np.float32) + 0.1, 16000)
    assert "channels x samples (c, n) as torchaudio and librosa give them" in str(refused.value)
    with pytest.raises(AudioError, match=message.replace("audio", "chunk")):
        c.stream(16000, endpoint=None).accept(np.zeros(shape, np.float32))


@pytest.mark.parametrize("change, message", [
    (lambda raw: raw["policy"].update(default="loudness"), "field policy.default is 'loudness'"),
    (lambda raw: raw["policy"]["measures"]["max_prob"].update(threshold=1.5), "policy.measures.max_prob.threshold is 1.5"),
    (lambda raw: raw["policy"].update(measures=[1, 2]), "field policy.measures is \\[1, 2\\]; allowed: a mapping"),
    (lambda raw: raw["precisions"]["int8"]["dev_uar"].update(last=0.9), "precisions.int8.dev_uar has a key that is not"),
    (lambda raw: raw["precisions"]["int8"]["dev_uar"].update({"3": 95.5}), "precisions.int8.dev_uar is"),
    (lambda raw: raw["precisions"].update(int4={"dev_uar": {}}), "field precisions is 'int4'"),
    (lambda raw: raw.update(streaming="yes"), "field streaming is 'yes'; allowed: a mapping"),
])
def test_the_manifests_sections_are_typed_and_checked_once_when_it_is_read(model, change, message):
    """policy, precisions and streaming become typed values in load_manifest, each value checked there with one
    line naming the field: nothing downstream reads them by string keys."""
    _edit_manifest(model, change)
    with pytest.raises(ManifestError, match=message):
        load_manifest(model)


def test_typed_sections_round_trip_to_the_same_yaml():
    manifest = load_manifest(DEFAULT_MODEL)
    assert manifest.to_dict() == yaml.safe_load((DEFAULT_MODEL / "manifest.yaml").read_text())
    assert manifest.precisions["int8"].dev_uar[3] == manifest.exits[0].dev_uar  # exit layers as numbers
    assert manifest.policy.rule()[0] == "max_prob" and manifest.provenance.synthetic
