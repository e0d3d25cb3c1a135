"""The one place that runs stages on Ray: as stateless tasks, or as actors that hold a model.

A stage declares its resources (`stage.resources`); this module turns that into Ray options.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from collections import OrderedDict

import ray

from vtm.stages.base import Resources


def _not_token_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def init_ray(address: str | None = None) -> None:
    """Connect to `address` (or RAY_ADDRESS; "auto" finds a cluster started on this machine), or
    start a local Ray for this process."""
    if ray.is_initialized():
        return
    # "local" starts a Ray for this run. Without it ray.init() would attach to whatever cluster
    # /tmp/ray last recorded (a stale `ray start`), which is not what "no address" should mean.
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        # Ray announces that the cluster it starts uses token authentication, its secure default, on every run: to a
        # vtm user that is noise about a cluster they never chose. Any other word of Ray's still shows.
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_not_token_notice)
    # Workers import vtm from the installed package, so no working-directory upload is needed.
    ray.init(
        address=address,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
        configure_logging=True,
    )
    if threading.current_thread() is threading.main_thread():
        # Ray's core answers SIGTERM (kill, timeout, docker stop) by dumping a stack and dying without Python's
        # cleanup: no word of what was kept, Ray's agents left running. Both signals now end a job as Ctrl-C does,
        # once: a second one while it cleans up would only break that cleanup.
        signal.signal(signal.SIGINT, _interrupt_once)
        signal.signal(signal.SIGTERM, _interrupt_once)


def _interrupt_once(signum, frame) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def _options(resources: Resources) -> dict:
    return {"num_cpus": resources.cpus, "num_gpus": resources.gpus}


# In each worker process: the stages it has set up, by stage_task token, so setup() runs once per worker
# and not once per call. A few only: a worker serves one run's stages, but lives on across runs.
_SET_UP: OrderedDict[str, object] = OrderedDict()
_KEEP_SET_UP = 4


def _run_stage(token: str, stage, batch):
    ready = _SET_UP.get(token)
    if ready is None:
        stage.setup()  # a setup that fails raises here, and again on the next call
        ready = _SET_UP[token] = stage
        while len(_SET_UP) > _KEEP_SET_UP:
            _SET_UP.popitem(last=False)
    else:
        _SET_UP.move_to_end(token)
    return ready(batch)


def stage_task(stage, resources: Resources | None = None, max_retries: int = 1):
    """A function starting `stage` on a batch as a Ray task: `stage_task(s)(batch)` -> ObjectRef.

    Each worker process sets the stage up once, on its first call. A worker process that crashes
    (a decoder segfault on a corrupt file) fails only this task, after `max_retries` retries.
    """
    fn = ray.remote(_run_stage).options(**_options(resources or stage.resources), max_retries=max_retries)
    token = uuid.uuid4().hex
    return lambda batch: fn.remote(token, stage, batch)


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


def get_plain(ref, *errors: type[Exception]):
    """`ray.get(ref)`, re-raising an error of one of these types with its own message, without Ray's traceback
    around it (a model that cannot load is a usage error, said once)."""
    try:
        return ray.get(ref)
    except Exception as e:
        cause = getattr(e, "cause", None) or e
        for kind in errors:
            if isinstance(cause, kind):
                raise kind(str(cause)) from None
        raise


def release(actors: list) -> None:
    """End a job's actors now: a reference left anywhere (a traceback, a progress bar's closure) would otherwise
    keep them, and the CPUs/GPUs they hold, until it is collected, starving whatever runs next on the cluster."""
    for actor in actors:
        ray.kill(actor, no_restart=True)
