"""The layer-by-layer backbone equals the Hugging Face forward; exits; padding; parameter counts."""
import pytest
import torch

from edge_ser_torch.backbone import Backbone, load_encoder
from edge_ser_torch.config import ModelConfig
from edge_ser_torch.model import SelfDistilledSER

from conftest import tiny_overrides


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm"])
def test_backbone_reproduces_hugging_face_hidden_states(family):
    torch.manual_seed(0)
    overrides = tiny_overrides(3)
    if family == "wavlm":
        overrides.pop("feat_extract_norm")  # WavLM: group-norm CNN and relative position bias
    hf = load_encoder(None, family, overrides).eval()
    backbone = Backbone(hf)
    x = torch.randn(2, 8000)
    with torch.no_grad():
        reference = hf(x, output_hidden_states=True).hidden_states
        hidden = backbone.embed(x)
        assert torch.allclose(hidden, reference[0], atol=1e-5)
        for layer in range(3):
            hidden = backbone.run_layers(hidden, layer, layer + 1)
            assert torch.allclose(hidden, reference[layer + 1], atol=1e-5), f"layer {layer + 1}"


def test_stable_layer_norm_teacher_gets_final_norm():
    overrides = tiny_overrides(2) | {"do_stable_layer_norm": True}
    hf = load_encoder(None, "wav2vec2", overrides).eval()
    x = torch.randn(1, 8000)
    with torch.no_grad():
        expected = hf(x).last_hidden_state
        b = Backbone(hf)
        got = b.finish(b.run_layers(b.embed(x), 0, 2))
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("block", ["cnn", "lstm", "gru"])
@pytest.mark.parametrize("norm", ["layer", "group"])
def test_padding_does_not_change_a_clips_result(block, norm):
    torch.manual_seed(0)
    config = ModelConfig(backbone=tiny_overrides(3) | {"feat_extract_norm": norm}, exit_layers=[1, 2], block=block, head_dim=8)
    model = SelfDistilledSER(config, 4).eval()
    short, long = torch.randn(1, 6000), torch.randn(1, 9000)
    batch = torch.zeros(2, 9000)
    batch[0, :6000], batch[1] = short[0], long[0]
    with torch.no_grad():
        alone = model(short)
        together = model(batch, torch.tensor([6000, 9000]))
    for layer in (1, 2, 3):
        assert torch.allclose(alone[layer].logits, together[layer].logits[:1], atol=1e-5), (block, norm, layer)


def test_exits_and_shapes():
    model = SelfDistilledSER(ModelConfig(backbone=tiny_overrides(4), exit_layers=[3, 1], head_dim=8), 5).eval()
    assert model.exit_layers == [1, 3, 4]
    with torch.no_grad():
        out = model(torch.randn(2, 8000))
    assert sorted(out) == [1, 3, 4]
    assert out[1].logits.shape == (2, 5) and out[1].linear.shape == (2, 8) and out[1].embedding.shape == (2, 32)
    with torch.no_grad():
        assert sorted(model(torch.randn(1, 8000), up_to=3)) == [1, 3]


def test_exit_layers_must_be_inside_the_encoder():
    with pytest.raises(ValueError, match="must lie in 1..3"):
        SelfDistilledSER(ModelConfig(backbone=tiny_overrides(4), exit_layers=[4]), 3)


def test_path_parameters_count_encoder_layers_and_own_head_only():
    model = SelfDistilledSER(ModelConfig(backbone=tiny_overrides(4), exit_layers=[1, 3], head_dim=8), 3)
    counts = model.path_parameters()
    layer = sum(p.numel() for p in model.backbone.hf.encoder.layers[0].parameters())
    head = sum(p.numel() for p in model.heads["1"].parameters())
    total_encoder = sum(p.numel() for p in model.backbone.hf.parameters())
    assert counts[3] - counts[1] == 2 * layer
    assert counts[4] == total_encoder + sum(p.numel() for p in model.heads["4"].parameters())
    assert counts[1] == total_encoder - 3 * layer + head


def test_lstm_block_is_sized_like_the_paper():
    model = SelfDistilledSER(ModelConfig(backbone=tiny_overrides(2), exit_layers=[1], block="lstm"), 7)
    lstm = model.heads["1"].block.net
    assert lstm.hidden_size == lstm.input_size == 32  # "768 features" at base size: the hidden width
    assert model.heads["1"].l1.out_features == 256 and model.heads["1"].l2.out_features == 7


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm"])
def test_loads_a_local_hugging_face_checkpoint_directory(family, tmp_path):
    torch.manual_seed(0)
    source = load_encoder(None, family, tiny_overrides(2)).eval()
    source.save_pretrained(tmp_path / "ckpt")
    model = SelfDistilledSER(ModelConfig(base=str(tmp_path / "ckpt"), exit_layers=[1]), 3).eval()
    assert model.backbone.family == family
    for (name, a), (_, b) in zip(source.state_dict().items(), model.backbone.hf.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_encoder(tmp_path / "missing")


def test_yaml_paths_are_relative_to_the_file(tmp_path):
    from edge_ser_torch.config import ExperimentConfig

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "x.yaml").write_text("model: {base: ../enc}\ndata: {manifest: ../data/m.csv}\n")
    config = ExperimentConfig.from_yaml(tmp_path / "cfg" / "x.yaml")
    assert config.model.base == str(tmp_path / "enc") and config.data.manifest == str(tmp_path / "data" / "m.csv")
