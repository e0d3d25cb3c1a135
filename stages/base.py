"""The stage contract, written once: every stage in this package follows it (tests/stages/test_contract.py checks).

A stage is a dataclass subclassing `Stage`. Its fields are its settings, `resources` among them (what one
worker of it asks the cluster for). `setup()` loads what is heavy, once per worker, before the first batch;
`__call__(batch) -> batch` maps a dict of arrays to a dict of arrays. What a stage does to a batch is declared
as class-level data, so that a runner or a reader knows it without running the stage:

    reads     keys every batch must hold
    optional  keys that only some settings or batches use (read when present, or written only with some settings)
    writes    keys it adds to the batch (replacing any of the same name)
    drops     keys it takes out of the batch (large arrays it used up)

Every other key passes through unchanged. Stages never import Ray: `vtm.pipeline.ray_runner` is the one place
that runs them on a cluster.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0


class Stage:
    """Base of every stage: the declaration (see the module docstring) and a `setup()` with nothing to load."""

    reads: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    drops: ClassVar[tuple[str, ...]] = ()
    resources: Resources  # a dataclass field of each stage, so that a run can ask for more (a GPU)

    def setup(self) -> None:
        """Load what is heavy (a model), once per worker. Most stages have nothing to load."""

    def __call__(self, batch: dict) -> dict:
        raise NotImplementedError


def inference_mode(method):
    """`torch.inference_mode()` around a stage's method, torch imported when it runs: the configs build stages, and
    reading a config should not import torch."""

    @functools.wraps(method)
    def run(*args, **kwargs):
        import torch

        with torch.inference_mode():
            return method(*args, **kwargs)

    return run
