"""A wav2vec2-family encoder that can be run one transformer layer at a time.

The paper's exits read the *unpooled* output of intermediate layers, and the
exporter cuts the encoder into segments between exits. Hugging Face models only
run all layers at once, so this adapter re-states their forward pass in three
pieces that compose to exactly the same computation:

    embed(waveform)            CNN feature encoder + projection (frames), then positional conv (+ norm) (context)
    run_layers(h, start, end)  transformer layers start+1 .. end
    finish(h)                  the encoder's final LayerNorm ("stable layer norm" models only)

Supported families: wav2vec2, HuBERT (same layout) and WavLM (relative
position bias, recomputed per segment from layer 0's embedding, so that no
(B*heads, T, T) tensor has to cross a segment boundary).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig
from transformers.masking_utils import create_bidirectional_mask

from .errors import InputError

FAMILIES = ("wav2vec2", "hubert", "wavlm")


def load_encoder(base: str | Path | None, family: str = "wav2vec2", overrides: dict | None = None) -> nn.Module:
    """Load a pretrained encoder from a local checkpoint directory, or build one with random weights.

    base: a directory holding a Hugging Face config.json (+ weights). No hub access is attempted.
    family/overrides: with base=None, a fresh `family` config with `overrides` applied (tiny test models).
    """
    if base is not None:
        path = Path(base)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face checkpoint directory (no config.json)")
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
    else:
        if family not in FAMILIES:
            raise InputError(f"unknown family {family!r}; supported: {', '.join(FAMILIES)}")
        config = AutoConfig.for_model(family, **(overrides or {}))
        model = AutoModel.from_config(config)
    if model.config.model_type not in FAMILIES:
        raise InputError(f"{model.config.model_type!r} is not a supported family ({', '.join(FAMILIES)})")
    # Pretraining-time augmentation must not leak into fine-tuning or export.
    model.config.mask_time_prob = 0.0
    model.config.mask_feature_prob = 0.0
    model.config.layerdrop = 0.0
    if getattr(model, "masked_spec_embed", None) is not None:
        del model.masked_spec_embed  # a pretraining-only parameter; keeps checkpoints and counts clean
    # Eager attention exports cleanly and is exact; sdpa gives the same numbers.
    model.config._attn_implementation = "eager"
    return model


class Backbone(nn.Module):
    """Layer-by-layer view of a Hugging Face wav2vec2-family model."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model
        self.config: PretrainedConfig = hf_model.config
        self.family: str = self.config.model_type
        self.stable_layer_norm: bool = bool(getattr(self.config, "do_stable_layer_norm", False))

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        """Number of encoder frames for each clip length in samples (the CNN's arithmetic)."""
        lengths = sample_lengths
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride, strict=True):
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths

    def embed(self, waveform: torch.Tensor, sample_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """waveform (B, S) -> hidden states (B, T, R) before layer 1.

        With sample_lengths and a group-norm CNN (wav2vec2-base), each clip's CNN runs on
        its own samples only: group norm normalises over time, so zero padding would change
        a clip's features. A layer-norm CNN is per-frame, and its valid frames never see
        padding (no conv padding), so it runs batched.
        """
        group_norm = getattr(self.config, "feat_extract_norm", "group") == "group"
        if sample_lengths is None or not group_norm:
            features = self.hf.feature_extractor(waveform)  # (B, C, T)
            frame_mask = None
            if sample_lengths is not None:
                frames = self.frame_lengths(sample_lengths)
                frame_mask = torch.arange(features.shape[-1], device=waveform.device)[None, :] < frames[:, None]
        else:
            frames = self.frame_lengths(sample_lengths)
            per_clip = [self.hf.feature_extractor(waveform[i : i + 1, : int(n)]) for i, n in enumerate(sample_lengths)]
            features = torch.zeros(
                waveform.shape[0], per_clip[0].shape[1], int(frames.max()), dtype=waveform.dtype, device=waveform.device
            )
            for i, f in enumerate(per_clip):
                features[i, :, : f.shape[-1]] = f[0]
            frame_mask = torch.arange(features.shape[-1], device=waveform.device)[None, :] < frames[:, None]
        hidden = self.project(features)
        if frame_mask is not None:
            hidden = hidden * frame_mask[..., None]  # padded frames are zero before the positional conv
        return self.context(hidden)

    def frames(self, waveform: torch.Tensor) -> torch.Tensor:
        """waveform (B, S) -> projected CNN frames (B, T, R): the part of `embed` that looks at 25 ms of audio
        per frame (with a layer-norm CNN), so it can run on chunks as audio arrives (edge_ser.stream)."""
        return self.project(self.hf.feature_extractor(waveform))

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """CNN features (B, C, T) -> (B, T, R): the feature projection (per frame)."""
        hidden = self.hf.feature_projection(features.transpose(1, 2))
        return hidden[0] if isinstance(hidden, tuple) else hidden  # wav2vec2/WavLM also return the pre-projection features

    def context(self, hidden: torch.Tensor) -> torch.Tensor:
        """Projected frames (B, T, R) -> hidden states before layer 1: the positional convolution (which looks
        64 frames ahead at base size, so it needs the whole utterance) and, in post-norm models, the LayerNorm."""
        encoder = self.hf.encoder
        hidden = hidden + encoder.pos_conv_embed(hidden)
        if not self.stable_layer_norm:
            hidden = encoder.layer_norm(hidden)
        return encoder.dropout(hidden)

    def run_layers(
        self, hidden: torch.Tensor, start: int, end: int, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run transformer layers start+1 .. end (1-based, as the paper counts) on (B, T, R)."""
        layers = self.hf.encoder.layers
        if self.family == "wavlm":
            bsz, frames, _ = hidden.shape
            attention = layers[0].attention
            bias = attention.compute_bias(frames, frames)  # (heads, T, T), a function of T and layer 0 only
            position_bias = bias.unsqueeze(0).expand(bsz, -1, -1, -1).reshape(bsz * attention.num_heads, frames, frames)
            for index in range(start, end):
                hidden, position_bias = layers[index](
                    hidden, attention_mask=frame_mask, position_bias=position_bias, index=index
                )
            return hidden
        mask = None
        if frame_mask is not None:
            mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=frame_mask)
        for index in range(start, end):
            out = layers[index](hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out  # transformers < 5 returned tuples
        return hidden

    def finish(self, hidden: torch.Tensor) -> torch.Tensor:
        """The encoder's final LayerNorm, which stable-layer-norm models apply after the last layer."""
        return self.hf.encoder.layer_norm(hidden) if self.stable_layer_norm else hidden


def tiny_config(num_layers: int = 12, hidden: int = 64, heads: int = 4, ffn: int = 128, conv_dim: int = 32) -> dict:
    """Overrides for a small randomly initialised wav2vec2 (tests, the demo model).

    Same CNN strides and kernels as wav2vec2-base (20 ms frames at 16 kHz), thinner everywhere.
    feat_extract_norm='layer' normalises per frame, so batched and single-clip runs agree exactly.
    """
    return dict(
        num_hidden_layers=num_layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=ffn,
        conv_dim=(conv_dim,) * 7,
        feat_extract_norm="layer",
        conv_bias=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
    )
