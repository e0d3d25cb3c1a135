"""The trigger detector: per-frame contextual vectors -> how likely each frame is an event, and which.

One output per class plus one for "no event" (softmax): binary detection is the case of one event
class, and the trigger score is always 1 - p(no event), so a multi-class model ranks moments by the
same scale a binary one does.
"""

from __future__ import annotations

import torch
from torch import nn

from vtm.models.configs import TriggerDetectorConfig


class TriggerDetector(nn.Module):
    def __init__(self, config: TriggerDetectorConfig):
        super().__init__()
        if config.input_dim is None:
            raise ValueError("TriggerDetectorConfig.input_dim is not set (the time-aware encoder's d_model)")
        self.config = config
        layers: list[nn.Module] = []
        width = config.input_dim
        for hidden in config.hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(config.dropout)]
            width = hidden
        layers.append(nn.Linear(width, config.num_classes + 1))  # index 0 = no event
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, input_dim) -> logits (B, T, 1 + num_classes)."""
        return self.mlp(x)

    @staticmethod
    def trigger_score(logits: torch.Tensor) -> torch.Tensor:
        return 1.0 - logits.float().softmax(-1)[..., 0]
