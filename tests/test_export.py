"""Export: segments that reproduce torch, a manifest the runtime trusts, int8 variants."""
import shutil

import numpy as np
import pytest
import torch
import yaml

from edge_ser.audio import normalize
from edge_ser.classifier import Classifier
from edge_ser.manifest import ManifestError, load_manifest

from conftest import TINY_LABELS


def test_manifest_describes_the_chain(tiny_export):
    m = load_manifest(tiny_export)
    assert [s.name for s in m.chain] == ["encoder", "context", "blocks_00_01", "blocks_01_03", "blocks_03_04"]
    assert [e.layer for e in m.exits] == [1, 3, 4]
    assert [e.after for e in m.exits] == ["blocks_00_01", "blocks_01_03", "blocks_03_04"]
    assert m.labels == TINY_LABELS and m.sample_rate == 16000 and m.normalize
    assert m.min_samples == 400 and m.samples_per_frame == 320  # wav2vec2's CNN: 25 ms window, 20 ms hop
    assert set(m.precisions) == {"fp32", "int8", "int8-blocks"}
    assert set(m.precisions["int8-blocks"].quantized) == {"blocks_00_01", "blocks_01_03", "blocks_03_04"}
    assert set(m.precisions["int8"].quantized) == {"encoder", "context", "blocks_00_01", "blocks_01_03", "blocks_03_04"}
    assert all(e.dev_uar is not None for e in m.exits)
    assert set(m.policy.measures) == {"max_prob", "entropy", "patience"} and m.policy.default == "max_prob"
    assert set(m.precisions["fp32"].dev_uar) == {1, 3, 4}  # exit layers, typed once when the manifest is read
    params = [e.path_parameters for e in m.exits]
    assert params == sorted(params)


@pytest.mark.parametrize("seconds", [0.5, 2.7])
def test_runtime_chain_matches_torch_at_every_exit(tiny_model, tiny_export, seconds):
    samples = np.random.default_rng(5).standard_normal(int(seconds * 16000)).astype(np.float32)
    probs = Classifier(tiny_export, shared_pool=False).exit_probabilities(samples)
    with torch.no_grad():
        expected = tiny_model(torch.from_numpy(normalize(samples))[None])
    for layer, out in expected.items():
        assert np.abs(probs[layer] - torch.softmax(out.logits[0], -1).numpy()).max() < 1e-5


def test_int8_variant_runs_and_agrees_with_fp32(tiny_export):
    rng = np.random.default_rng(6)
    clips = [rng.standard_normal(int(s * 16000)).astype(np.float32) * level
             for s, level in zip(rng.uniform(0.5, 3.0, 12), rng.uniform(0.05, 1.0, 12), strict=True)]
    fp32 = Classifier(tiny_export, shared_pool=False)
    int8 = Classifier(tiny_export, precision="int8", shared_pool=False)
    pairs = [(fp32.exit_probabilities(x), int8.exit_probabilities(x)) for x in clips]
    assert any(f.endswith(".int8.onnx") for f in int8.engine.opened)
    diffs = [np.abs(a[k] - b[k]).max() for a, b in pairs for k in a]
    agree = [a[k].argmax() == b[k].argmax() for a, b in pairs for k in a]
    # Measured: 0.002 at most. A constant (e.g. uniform) output would be 0.03-0.07 away from these clips.
    assert max(diffs) < 0.005 and np.mean(agree) >= 0.9
    blocks_only = Classifier(tiny_export, precision="int8-blocks", shared_pool=False)
    blocks_only.exit_probabilities(clips[0])
    assert blocks_only.engine.opened[:2] == ["encoder.onnx", "context.onnx"]
    assert blocks_only.engine.opened[2].endswith(".int8.onnx")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_manifest_errors_are_one_line(tmp_path):
    with pytest.raises(ManifestError, match="no manifest.yaml"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.yaml").write_text("format_version: 99\n")
    with pytest.raises(ManifestError, match="format version 99"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.yaml").write_text("format_version: 1\nname: x\n")
    with pytest.raises(ManifestError, match="missing or malformed"):
        load_manifest(tmp_path)


@pytest.mark.parametrize("block", ["lstm", "gru"])
def test_recurrent_exit_heads_export_exactly(block, tmp_path):
    """The RNN heads become native ONNX LSTM/GRU ops with a dynamic time axis; export's own check passes."""
    import onnx

    from edge_ser_torch.config import ModelConfig
    from edge_ser_torch.model import SelfDistilledSER
    from edge_ser_torch.onnx_export import ExportOptions, export_model

    from conftest import tiny_overrides

    torch.manual_seed(0)
    model = SelfDistilledSER(ModelConfig(backbone=tiny_overrides(2), exit_layers=[1], block=block, head_dim=8), 3).eval()
    options = ExportOptions(verify_seconds=(0.5, 2.1), int8=False)
    export_model(model, ["a", "b", "c"], tmp_path / "m", name="rnn", options=options)  # raises above 1e-4
    ops = {node.op_type for node in onnx.load(tmp_path / "m" / "exit_01.onnx").graph.node}
    assert block.upper() in ops


def test_export_verification_passes_the_model_it_exported_and_fails_another(tiny_model, tiny_export):
    import copy

    from edge_ser_torch.onnx_export import ExportError, ExportOptions, verify

    options = ExportOptions(verify_seconds=(0.7,))
    report = verify(tiny_model, tiny_export, 16000, options)
    assert report["max_abs_diff"] < options.tolerance
    for part in ("head", "layer"):  # a change the exported files do not have, in a head or in a block
        other = copy.deepcopy(tiny_model)
        module = other.heads["3"] if part == "head" else other.backbone.hf.encoder.layers[2]
        weight = next(p for p in module.parameters() if p.dim() > 1)
        with torch.no_grad():  # random, not constant: a constant shift can cancel after a layer norm
            weight.add_(0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
        with pytest.raises(ExportError, match=r"exported segments differ from torch by"):
            verify(other, tiny_export, 16000, options)


def test_group_norm_encoder_exports_as_one_scaled_instance_norm(tmp_path):
    """wav2vec2-base's per-channel GroupNorm: one InstanceNormalization carrying the trained scale and bias (not
    an unscaled one and Mul/Add passes after it), and the same frames as torch, down to a single frame."""
    import onnx
    import onnx.numpy_helper
    import onnxruntime as ort

    from edge_ser_torch.backbone import load_encoder
    from edge_ser_torch.config import ModelConfig
    from edge_ser_torch.model import SelfDistilledSER
    from edge_ser_torch.onnx_export import EncoderGraph, export_graph

    from conftest import tiny_overrides

    torch.manual_seed(0)
    config = ModelConfig(backbone=tiny_overrides(2) | {"feat_extract_norm": "group"}, exit_layers=[1], head_dim=8)
    model = SelfDistilledSER(config, 3, encoder=load_encoder(None, "wav2vec2", config.backbone)).eval()
    norm = model.backbone.hf.feature_extractor.conv_layers[0].layer_norm
    torch.nn.init.normal_(norm.weight)  # a trained affine, not the identity it starts as
    torch.nn.init.normal_(norm.bias)
    path = tmp_path / "encoder.onnx"
    export_graph(EncoderGraph(model), torch.randn(1, 16000), path, "waveform", ["frames"])
    graph = onnx.load(str(path)).graph
    norms = [n for n in graph.node if n.op_type == "InstanceNormalization"]
    assert len(norms) == 1
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    scale, bias = (weights[name] for name in norms[0].input[1:3])
    assert np.allclose(scale, norm.weight.detach().numpy()) and np.allclose(bias, norm.bias.detach().numpy())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for samples in (400, 401, 8000, 52817):
        wave = torch.randn(1, samples) * 0.1
        with torch.no_grad():
            expected = model.backbone.frames(wave).numpy()
        got = session.run(None, {"waveform": wave.numpy()})[0]
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4, samples


def test_int8_encoder_keeps_the_waveform_convolution_fp32(tiny_export):
    """The first convolution sees the raw waveform: kept fp32 it made the base encoder faster and closer to fp32
    (benchmarks/bench_encoder.py). Every later convolution runs on int8 weights."""
    import onnx

    graph = onnx.load(str(tiny_export / "encoder.int8.onnx")).graph
    made_by = {out: n.op_type for n in graph.node for out in n.output}
    floats = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs[0].input[1] in floats and made_by.get(convs[0].input[0]) != "DequantizeLinear"
    assert len(convs) == 7 and all(made_by.get(c.input[1]) == "DequantizeLinear" for c in convs[1:])


def test_export_records_its_default_precision_and_runs_use_it(tiny_export, tmp_path):
    from edge_ser.classifier import DEFAULT_MODEL
    from edge_ser.precision import fastest, verified_precisions

    m = load_manifest(tiny_export)  # exported with default_precision="fp32" (conftest): set, not timed
    assert m.default_precision == "fp32" and m.provenance.default_precision_rule == "set by the exporter"
    assert m.max_precision_loss == 0.005  # recorded even when set: a device's calibrate applies the same rule
    assert set(m.precisions) == {"fp32", "int8", "int8-blocks"} and all(v.full_depth_ms > 0 for v in m.precisions.values())
    demo = load_manifest(DEFAULT_MODEL)  # exported with the timed choice
    ms = {p: v.full_depth_ms for p, v in demo.precisions.items()}
    assert demo.default_precision == fastest({p: ms[p] for p in verified_precisions(demo)})
    assert "fastest full-depth run" in demo.provenance.default_precision_rule
    model = _copy(tiny_export, tmp_path / "m")
    raw = yaml.safe_load((model / "manifest.yaml").read_text())
    for precision in ("int8-blocks", "int8"):
        raw["default_precision"] = precision
        (model / "manifest.yaml").write_text(yaml.safe_dump(raw))
        assert Classifier(model, shared_pool=False).engine.precision == precision
        assert Classifier(model, precision="fp32", shared_pool=False).engine.precision == "fp32"  # asked for wins


def test_cpu_sessions_leave_out_the_skip_layer_norm_fusion(tiny_export, tmp_path):
    """On CPU the engine opens blocks without onnxruntime's SkipLayerNormalization rewrite (slower here than the
    Add + LayerNormalization it replaces: edge_ser.engine.CPU_DISABLED_OPTIMIZERS); onnxruntime's default keeps it."""
    import onnx
    import onnxruntime as ort

    from edge_ser.engine import Engine

    m = load_manifest(tiny_export)
    engine = Engine(tiny_export, m, "fp32", shared_pool=False)
    path = tiny_export / next(s for s in m.chain if s.kind == "blocks").files["fp32"].file

    def optimised_ops(open_session, name):
        options = engine._options()
        options.optimized_model_filepath = str(tmp_path / name)
        open_session(options)
        return {n.op_type for n in onnx.load(str(tmp_path / name)).graph.node}

    ours = optimised_ops(lambda options: engine.open_session(path, options), "engine.onnx")
    default = optimised_ops(lambda options: ort.InferenceSession(str(path), options, providers=engine.providers), "default.onnx")
    assert "SkipLayerNormalization" in default and "SkipLayerNormalization" not in ours and "LayerNormalization" in ours
