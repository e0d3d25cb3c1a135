"""The time-aware encoder: a window of per-frame features -> per-frame vectors that know their context.

Frames are sampled by timestamp, and a window may span a gap (a clip boundary, a dropped stretch,
variable frame rate), so the encoder is told each frame's time, not just its position: a sinusoidal
encoding of seconds since the window start is added to the projected features. Offline analysis
can look both ways, so the Transformer is unmasked in time and the LSTM is bidirectional.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vtm.models.configs import TemporalEncoderConfig


def time_encoding(seconds: torch.Tensor, dim: int, max_period_s: float) -> torch.Tensor:
    """Sinusoidal encoding of times in seconds: (B, T) -> (B, T, dim). Periods from ~0.5 s to max."""
    half = dim // 2
    periods = torch.logspace(math.log10(0.5), math.log10(max_period_s), half, device=seconds.device)
    angles = 2 * math.pi * seconds.unsqueeze(-1).float() / periods
    enc = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return nn.functional.pad(enc, (0, dim - 2 * half))


class TemporalEncoder(nn.Module):
    def __init__(self, config: TemporalEncoderConfig):
        super().__init__()
        self.config = config
        self.gradient_checkpointing = False
        k = 2 if config.use_deltas else 1
        if config.input_groups:
            self.inputs = nn.ModuleList(
                nn.Sequential(nn.LayerNorm(k * w), nn.Linear(k * w, config.d_model)) for w in config.input_groups
            )
        else:
            self.input = nn.Sequential(
                nn.LayerNorm(k * config.input_dim), nn.Linear(k * config.input_dim, config.d_model)
            )
        if config.kind == "transformer":
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(
                    config.d_model,
                    config.num_heads,
                    4 * config.d_model,
                    config.dropout,
                    batch_first=True,
                    norm_first=True,
                )
                for _ in range(config.num_layers)
            )
        else:
            self.lstm = nn.LSTM(
                config.d_model,
                config.d_model // 2,
                config.num_layers,
                batch_first=True,
                bidirectional=True,
                dropout=config.dropout if config.num_layers > 1 else 0.0,
            )
        self.norm = nn.LayerNorm(config.d_model)

    def forward(
        self, features: torch.Tensor, timestamps: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """features (B, T, input_dim), timestamps (B, T) seconds, mask (B, T) True where a frame is real."""
        relative = timestamps - timestamps[:, :1]
        x = self._project(features.float()) + time_encoding(relative, self.config.d_model, self.config.max_period_s)
        if self.config.kind == "transformer":
            padding = None if mask is None else ~mask
            for layer in self.layers:
                if self.gradient_checkpointing and self.training:
                    x = checkpoint(layer, x, None, padding, use_reentrant=False)
                else:
                    x = layer(x, src_key_padding_mask=padding)
        else:
            x, _ = self.lstm(x)
        x = self.norm(x)
        return x if mask is None else x * mask.unsqueeze(-1)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, list(self.config.input_groups), dim=-1) if self.config.input_groups else [x]
        layers = self.inputs if self.config.input_groups else [self.input]
        out = 0
        for part, layer in zip(parts, layers):
            if self.config.use_deltas:
                part = torch.cat([part, torch.diff(part, dim=1, prepend=part[:, :1])], dim=-1)
            out = out + layer(part)
        return out
