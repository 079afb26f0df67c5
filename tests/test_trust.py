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

