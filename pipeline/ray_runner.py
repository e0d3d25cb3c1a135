"""The one place that runs stages on Ray: as stateless tasks, or as actors that hold a model.

A stage declares its resources (`stage.resources`); this module turns that into Ray options.
"""

from __future__ import annotations

import logging
import os

import ray

from vtm.stages.base import Resources


def init_ray(address: str | None = None) -> None:
    """Connect to `address` (or RAY_ADDRESS; "auto" finds a cluster started on this machine), or
    start a local Ray for this process."""
    if ray.is_initialized():
        return
    # "local" starts a Ray for this run. Without it ray.init() would attach to whatever cluster
    # /tmp/ray last recorded (a stale `ray start`), which is not what "no address" should mean.
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    # Workers import vtm from the installed package, so no working-directory upload is needed.
    ray.init(
        address=address,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
        configure_logging=True,
    )


def cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def _options(resources: Resources) -> dict:
    return {"num_cpus": resources.cpus, "num_gpus": resources.gpus}


def _run_stage(stage, batch):
    stage.setup()
    return stage(batch)


def stage_task(stage, resources: Resources | None = None, max_retries: int = 1):
    """A remote function running `stage` once on a batch: `stage_task(s).remote(batch)`.

    A worker process that crashes (a decoder segfault on a corrupt file) fails only this task,
    after `max_retries` retries.
    """
    fn = ray.remote(_run_stage).options(**_options(resources or stage.resources), max_retries=max_retries)
    return lambda batch: fn.remote(stage, batch)


@ray.remote
class StageActor:
    """Holds one set-up stage (a loaded model) and applies it to batches."""

    def __init__(self, stage):
        self.stage = stage
        # A setup failure (a model that cannot load) is re-raised by every call, as the original
        # exception type, instead of killing the actor with an opaque "actor died" error.
        self.setup_error = None
        try:
            self.stage.setup()
        except Exception as e:  # noqa: BLE001
            self.setup_error = e

    def call(self, batch):
        if self.setup_error is not None:
            raise self.setup_error
        return self.stage(batch)

    def invoke(self, method: str, *args):
        if self.setup_error is not None:
            raise self.setup_error
        return getattr(self.stage, method)(*args)


def stage_actors(stage, n: int, resources: Resources | None = None, max_restarts: int = 3) -> list:
    """`n` actors each holding `stage`; a killed actor restarts and its pending calls are retried."""
    opts = _options(resources or stage.resources)
    return [
        StageActor.options(**opts, max_restarts=max_restarts, max_task_retries=max_restarts).remote(stage)
        for _ in range(n)
    ]
