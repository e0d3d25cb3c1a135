"""What every stage shares: the resources it asks for, declared as data.

A stage is a plain class (dataclass fields are its settings) with `setup()` that loads what is heavy
once per worker and `__call__(batch) -> batch` over dicts of numpy arrays. Stages never import Ray;
`vtm.pipeline.ray_runner` is the one place that runs them on a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0
