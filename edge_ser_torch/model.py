"""The self-distilled SER model of Ren et al.: a wav2vec2-family teacher with student exits.

    waveform (B, S)
      -> Backbone.embed                      (B, T, R)
      -> layers 1..a  -> exit a: M_a -> pool -> L1_a -> L2_a     (student, for a in A)
      -> layers ..N   -> teacher: pool -> L1 -> L2                (O, H_N)

Every exit, the teacher included, returns an ExitOutput holding the logits O,
the pooled embedding H (the paper's embedding level) and the L1 output
(the linear level), which the similarity loss compares.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .backbone import Backbone, load_encoder
from .config import ModelConfig
from .errors import InputError

BLOCKS = ("cnn", "lstm", "gru", "none")


def masked_mean(hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over valid frames only: (B, T, C), (B, T) -> (B, C). Padding never changes a clip's result."""
    if frame_mask is None:
        return hidden.mean(dim=1)
    weights = frame_mask.to(hidden.dtype)[..., None]  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class ExitBlock(nn.Module):
    """The block M_a that turns an unpooled layer output into exit features, as the paper sizes it.

    cnn:  one Conv2d with 1 in/out channel and kernel (1, 1) over the (T, R) map, then ReLU
          (a learned per-exit scale and shift: almost free, which is the point);
    lstm: a one-layer LSTM with R hidden features ("768" for the base size);
    gru:  the same with a GRU;
    none: identity (the teacher's own head).
    """

    def __init__(self, kind: str, features: int):
        super().__init__()
        if kind not in BLOCKS:
            raise InputError(f"unknown exit block {kind!r}; choose one of {', '.join(BLOCKS)}")
        self.kind = kind
        if kind == "cnn":
            self.net = nn.Conv2d(1, 1, kernel_size=(1, 1))
        elif kind == "lstm":
            self.net = nn.LSTM(features, features, batch_first=True)
        elif kind == "gru":
            self.net = nn.GRU(features, features, batch_first=True)
        else:
            self.net = nn.Identity()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, R) -> (B, T, R)
        if self.kind == "cnn":
            return torch.relu(self.net(hidden.unsqueeze(1)).squeeze(1))
        if self.kind in ("lstm", "gru"):
            # Padded frames come after the valid ones, so a forward RNN's outputs on
            # valid frames do not depend on padding; masked_mean then drops the rest.
            return self.net(hidden)[0]
        return self.net(hidden)


@dataclass
class ExitOutput:
    logits: torch.Tensor  # (B, classes): O or O_a
    embedding: torch.Tensor  # (B, R): H_N or H_Ma, the pooled block output
    linear: torch.Tensor  # (B, head_dim): H_L or H_La, the output of L1


class ExitHead(nn.Module):
    """M -> masked mean pooling -> L1 (R -> head_dim) -> ReLU -> L2 (head_dim -> classes)."""

    def __init__(self, block: str, features: int, head_dim: int, num_classes: int):
        super().__init__()
        self.block = ExitBlock(block, features)
        self.l1 = nn.Linear(features, head_dim)
        self.l2 = nn.Linear(head_dim, num_classes)

    def forward(self, hidden: torch.Tensor, frame_mask: torch.Tensor | None = None) -> ExitOutput:
        embedding = masked_mean(self.block(hidden), frame_mask)  # (B, R)
        linear = self.l1(embedding)  # (B, head_dim)
        return ExitOutput(self.l2(torch.relu(linear)), embedding, linear)


class SelfDistilledSER(nn.Module):
    """Teacher encoder + heads at `config.exit_layers`; the last layer is always the teacher's exit."""

    def __init__(self, config: ModelConfig, num_classes: int, encoder: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        hf = encoder if encoder is not None else load_encoder(config.base, config.family, config.backbone)
        if config.truncate_at is not None:
            if not 1 <= config.truncate_at <= hf.config.num_hidden_layers:
                raise InputError(f"truncate_at must lie in 1..{hf.config.num_hidden_layers}")
            hf.encoder.layers = hf.encoder.layers[: config.truncate_at]
            hf.config.num_hidden_layers = config.truncate_at
        self.backbone = Backbone(hf)
        n = self.backbone.num_layers
        students = sorted(set(config.exit_layers))
        if any(not 1 <= a < n for a in students):
            raise InputError(f"exit layers {students} must lie in 1..{n - 1} (layer {n} is the teacher)")
        self.student_layers: list[int] = students
        self.exit_layers: list[int] = students + [n]
        r = self.backbone.hidden_size
        self.heads = nn.ModuleDict(
            {str(a): ExitHead(config.block, r, config.head_dim, num_classes) for a in students}
            | {str(n): ExitHead("none", r, config.head_dim, num_classes)}
        )

    @property
    def teacher_layer(self) -> int:
        return self.exit_layers[-1]

    def forward(
        self, waveform: torch.Tensor, sample_lengths: torch.Tensor | None = None, up_to: int | None = None
    ) -> dict[int, ExitOutput]:
        """waveform (B, S) -> {exit layer: ExitOutput}, for every exit up to layer `up_to` (default: all)."""
        last = up_to or self.teacher_layer
        frame_mask = None
        if sample_lengths is not None:
            frames = self.backbone.frame_lengths(sample_lengths)
        hidden = self.backbone.embed(waveform, sample_lengths)  # (B, T, R)
        if sample_lengths is not None:
            frame_mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < frames[:, None]
        outputs: dict[int, ExitOutput] = {}
        done = 0
        for layer in self.exit_layers:
            if layer > last:
                break
            hidden = self.backbone.run_layers(hidden, done, layer, frame_mask)
            done = layer
            features = self.backbone.finish(hidden) if layer == self.teacher_layer else hidden
            outputs[layer] = self.heads[str(layer)](features, frame_mask)
        return outputs

    def path_parameters(self) -> dict[int, int]:
        """Parameters used to reach each exit: encoder + layers up to it + its own head (not other heads)."""
        bb = self.backbone.hf
        embed = sum(p.numel() for name, p in bb.named_parameters() if not name.startswith("encoder.layers."))
        per_layer = [sum(p.numel() for p in layer.parameters()) for layer in bb.encoder.layers]
        result = {}
        for a in self.exit_layers:
            head = sum(p.numel() for p in self.heads[str(a)].parameters())
            # The final LayerNorm of non-stable models belongs to embed(); counted once either way.
            result[a] = embed + sum(per_layer[:a]) + head
        return result
