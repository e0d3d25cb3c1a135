"""The colour-grid encoder: a coarse grid of mean colours per frame -> one vector saying what is where.

The pooled visual feature says how much of what is in a picture; an event such as "a red object is
in view" is about a small part of it. Each grid cell is described by its colour, its colour against
the frame's mean (what stands out), its change since the previous frame (what moved in) and its
position; one small network shared by all cells turns that into a vector, and max- and mean-pooling
over the cells keep both "somewhere in the picture" and "how much of it". Sharing the network across
cells lets a few annotated events teach "red thing anywhere", not "red thing at these cells".
"""

from __future__ import annotations

import torch
from torch import nn

from vtm.models.configs import GridEncoderConfig

CELL_INPUTS = 11  # rgb, rgb - frame mean, rgb - previous frame, (y, x)


class GridEncoder(nn.Module):
    def __init__(self, config: GridEncoderConfig):
        super().__init__()
        self.config = config
        g = config.size
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, g), torch.linspace(-1, 1, g), indexing="ij")
        self.register_buffer("position", torch.stack([ys, xs], -1).reshape(g * g, 2), persistent=False)
        self.cell = nn.Sequential(
            nn.Linear(CELL_INPUTS, config.hidden), nn.GELU(), nn.Linear(config.hidden, config.hidden)
        )

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, T, size * size * 3) colours in [0, 1] -> (B, T, output_dim)."""
        b, t, _ = grid.shape
        cells = grid.float().reshape(b, t, -1, 3)
        standout = cells - cells.mean(dim=2, keepdim=True)
        change = torch.diff(cells, dim=1, prepend=cells[:, :1])
        position = self.position.expand(b, t, -1, -1)
        h = self.cell(torch.cat([cells, standout, change, position], dim=-1))  # (B, T, cells, hidden)
        return torch.cat([h.amax(dim=2), h.mean(dim=2)], dim=-1)
