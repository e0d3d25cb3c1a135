"""The trigger detector: per-frame contextual vectors -> how likely each frame is an event, and which.

One output per class plus one for "no event" (softmax): binary detection is the case of one event
class, and the trigger score is always 1 - p(no event), so a multi-class model ranks moments by the
same scale a binary one does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class TriggerDetectorConfig:
    """The `model.detector` section of vtm's configuration; fields with `set_by` metadata are filled from the data."""

    # None: the time-aware encoder's d_model (TriggerModelConfig fills it in)
    input_dim: int | None = field(default=None, metadata={"set_by": "the time-aware encoder's d_model"})
    hidden_sizes: tuple[int, ...] = (32,)
    num_classes: int = field(default=1, metadata={"set_by": "the annotations' labels"})  # 1 = binary trigger
    dropout: float = 0.1
    threshold: float = 0.5  # decision threshold on the trigger score (train.calibrate_threshold replaces it)

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))  # a list from YAML/JSON
        if any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be >= 1, got {list(self.hidden_sizes)}")
        if self.num_classes < 1 or (self.input_dim is not None and self.input_dim < 1):
            raise ValueError(f"num_classes and input_dim must be >= 1, got {self.num_classes} and {self.input_dim}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be within [0, 1), got {self.dropout}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be within 0..1, got {self.threshold}")


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
