"""The one scheduling loop of the jobs: streams items (videos) through pools of Ray tasks and actors.

A job declares its pools — a stage run as CPU tasks (`TaskPool`), or actors holding a model (`ActorPool`) —
and what to do with each result; `Executor.run` starts items while the job's `admit()` allows, keeps each
pool's calls in flight within its bounds, sends each actor call to the least-loaded actor, hands results to
the job's callbacks, records a failure once per item with its reason (the item's other calls are dropped)
and goes on, flushes the job's manifest every few seconds and keeps the progress bar. Retries are Ray's,
set in `ray_runner`: a task whose worker dies is retried, a killed actor restarts and its calls are retried.
Work on the job's own files (scoring and writing a finished video) runs in threads of this process
(`ThreadPool`), so that the loop keeps Ray's workers fed meanwhile.

Why our own and not Ray Data (`bench/bench_executor.py`, 2-core machine under other load): on the shape of
extract (CPU tasks making 0.6 MB segments, one actor consuming them, 100 items) Ray Data is no faster
(4.98 s against this loop's 5.08 s, best of 2), `import ray.data` adds 1.2-2.3 s to every process that
imports Ray (the no-op re-run included), and its dataset of rows does not fit what the jobs need: a video
is many segments whose results join back into one write, one item's failure is data (Ray Data stops the
dataset, or with `max_errored_blocks` drops rows without a reason), and describe's summary call goes to
the same actors as the windows before it. Ray Data also needed care not to deadlock on 2 CPUs beside a
model actor holding one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from tqdm import tqdm

from vtm.cache.storage import StorageError
from vtm.stages.decode import DecodeError

FLUSH_EVERY_S = 5.0  # a killed run loses at most this much of its manifest
THREAD_POLL_S = 0.005  # how often Ray's results are looked at while threads work (a thread's end ends no wait)


def failure_reason(err: BaseException) -> str:
    """A person-readable reason from a task error (the original DecodeError text where there is one)."""
    cause = getattr(err, "cause", None) or err
    if isinstance(cause, (DecodeError, StorageError)):
        return str(cause)
    if (
        isinstance(err, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError))
        or "crash" in type(err).__name__.lower()
    ):
        return "the decoder process crashed on this file (corrupted stream?)"
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]


@dataclass(eq=False)
class Call:
    """One call of a pool, for one item: `then(result)` gets what it returned.

    An actor call runs `actor.<method>.remote(*args)`; a task call `run(*args)`. A call that raises fails
    its item with `failed_as` + the reason.
    """

    item: Any
    args: tuple
    then: Callable[[Any], None] | None = None
    method: str = "call"
    failed_as: str = ""


@dataclass
class Batching:
    """How an actor pool joins single `call` calls into one: `combine(calls)` gives the batch's args,
    `done(calls, result)` takes its result (for all its calls, in order: some items may have failed since).
    A batch goes out full, or partly full when an actor would otherwise idle or nothing more can come."""

    size: int
    combine: Callable[[list[Call]], tuple]
    done: Callable[[list[Call], Any], None]


class _Pool:
    def __init__(self, fetch: bool):
        self.fetch = fetch  # False: `then` gets the ObjectRef (the result stays in the object store)
        self.queue: deque[Call | list[Call]] = deque()
        self.in_flight: dict = {}  # ObjectRef -> Call, or list of Calls for a batch

    def submit(self, call: Call, first: bool = False) -> None:
        """Queue `call`; `first` puts it ahead of everything queued."""
        if first:
            self.queue.appendleft(call)
        else:
            self.queue.append(call)

    @property
    def backlog(self) -> int:
        """Calls queued or running."""
        return len(self.queue) + len(self.in_flight)

    def returned(self, ref) -> Call | list[Call]:
        return self.in_flight.pop(ref)


class TaskPool(_Pool):
    """A stage run as Ray tasks (`ray_runner.stage_task`): at most `max_in_flight` running, and at most `max_held`
    (default `max_in_flight`) running or back and still waiting in `results_wait_in`'s queue, so only that many
    results are ever held. A larger `max_held` lets a backlog (decoded while a model loaded) drain while new tasks
    run."""

    def __init__(
        self,
        run: Callable[..., Any],
        max_in_flight: int,
        fetch: bool = True,
        results_wait_in: _Pool | None = None,
        max_held: int | None = None,
    ):
        super().__init__(fetch)
        self.run, self.max_in_flight, self.results_wait_in = run, max_in_flight, results_wait_in
        self.max_held = max_in_flight if max_held is None else max_held

    def track(self, ref, call: Call) -> None:
        """A call started before the executor ran (e.g. while a model loads)."""
        self.in_flight[ref] = call

    def dispatch(self, executor: Executor, nothing_more_comes: bool) -> None:
        waiting = self.results_wait_in.queue if self.results_wait_in is not None else ()
        while self.queue:
            if len(self.in_flight) >= self.max_in_flight or len(self.in_flight) + len(waiting) >= self.max_held:
                break
            call = self.queue.popleft()
            if not executor.has_failed(call.item):
                self.in_flight[self.run(*call.args)] = call


class ActorPool(_Pool):
    """Calls sent to `actors` (`ray_runner.stage_actors`), each to the least-loaded one, at most `per_actor`
    queued on each; with `batching`, single `call` calls are joined into batches."""

    def __init__(self, actors: list, per_actor: int = 2, fetch: bool = True, batching: Batching | None = None):
        super().__init__(fetch)
        self.actors, self.per_actor, self.batching = actors, per_actor, batching
        self.load = [0] * len(actors)
        self.actor_of: dict = {}  # ObjectRef -> actor number

    def dispatch(self, executor: Executor, nothing_more_comes: bool) -> None:
        while self.queue and min(self.load) < self.per_actor:
            k = int(np.argmin(self.load))
            if self.batching is not None and self.queue[0].method == "call":
                if len(self.queue) < self.batching.size and self.load[k] > 0 and not nothing_more_comes:
                    break  # wait for a fuller batch: this actor still has work
                calls = []
                while self.queue and self.queue[0].method == "call" and len(calls) < self.batching.size:
                    call = self.queue.popleft()
                    if not executor.has_failed(call.item):
                        calls.append(call)
                if calls:
                    self._send(k, calls, self.actors[k].call.remote(*self.batching.combine(calls)))
                continue
            call = self.queue.popleft()
            if not executor.has_failed(call.item):
                self._send(k, call, getattr(self.actors[k], call.method).remote(*call.args))

    def _send(self, k: int, what: Call | list[Call], ref) -> None:
        self.in_flight[ref] = what
        self.actor_of[ref] = k
        self.load[k] += 1

    def returned(self, ref) -> Call | list[Call]:
        self.load[self.actor_of.pop(ref)] -= 1
        return super().returned(ref)


class ThreadPool(_Pool):
    """`run(*args)` in `threads` threads of this process: the job's own work between Ray's calls.

    An error here is the job's, not one item's (a full disk, a bug): it ends the run, raised as it was.
    """

    def __init__(self, run: Callable[..., Any], threads: int):
        super().__init__(fetch=True)
        self.run, self.threads = run, threads
        self.workers = futures.ThreadPoolExecutor(threads, thread_name_prefix="vtm-job")

    def dispatch(self, executor: Executor, nothing_more_comes: bool) -> None:
        while self.queue and len(self.in_flight) < self.threads:
            call = self.queue.popleft()
            if not executor.has_failed(call.item):
                self.in_flight[self.workers.submit(self.run, *call.args)] = call

    def close(self) -> None:
        """Wait for the calls running (each ends whole) and drop those queued."""
        self.workers.shutdown(wait=True, cancel_futures=True)


class Executor:
    """Runs items through `pools` (dispatched in this order each round) on Ray; see the module docstring.

    `on_failure(item, reason)` records a failed item (once); `flush()` writes the job's manifest, every
    FLUSH_EVERY_S and at the end, however the run ends. The job calls `done(item)` when an item is complete
    and `fail(item, reason)` for failures it finds itself. `postfix()` adds figures to the progress bar.
    """

    def __init__(
        self,
        pools: list[_Pool],
        on_failure: Callable[[Any, str], None],
        flush: Callable[[], None],
        total: int,
        desc: str,
        progress: bool = True,
        postfix: Callable[[], dict] | None = None,
    ):
        self.pools, self.on_failure, self.flush, self.postfix = pools, on_failure, flush, postfix
        self.bar = tqdm(total=total, unit="video", disable=not progress, dynamic_ncols=True, desc=desc)
        self.failed: dict[int, Any] = {}  # id() -> failed item (held, so that its id is never reused)

    def has_failed(self, item) -> bool:
        return id(item) in self.failed

    def fail(self, item, reason: str) -> None:
        if self.has_failed(item):
            return
        self.failed[id(item)] = item
        self.on_failure(item, reason)
        self.bar.update(1)

    def done(self, item) -> None:
        self.bar.update(1)
        if self.postfix is not None:
            self.bar.set_postfix(**self.postfix())

    def run(self, items: Iterable, start: Callable[[Any], None], admit: Callable[[], bool] = lambda: True) -> None:
        """`start(item)` for each of `items` while `admit()`, until every item is done or failed."""
        waiting = deque(items)
        last_flush = time.perf_counter()
        try:
            while waiting or any(p.backlog for p in self.pools):
                while waiting and admit():
                    start(waiting.popleft())
                for pool in self.pools:
                    nothing_more_comes = not waiting and not any(p.backlog for p in self.pools if p is not pool)
                    pool.dispatch(self, nothing_more_comes)
                refs = [ref for p in self.pools if not isinstance(p, ThreadPool) for ref in p.in_flight]
                threads = [f for p in self.pools if isinstance(p, ThreadPool) for f in p.in_flight]
                if not refs and not threads:
                    if waiting or any(p.backlog for p in self.pools):
                        raise RuntimeError("executor stalled: calls queued, none running (a bound set to 0?)")
                    break
                for ref in self._wait(refs, threads):
                    self._returned(ref)
                if time.perf_counter() - last_flush > FLUSH_EVERY_S:
                    self.flush()
                    last_flush = time.perf_counter()
        finally:
            for pool in self.pools:
                if isinstance(pool, ThreadPool):
                    pool.close()
            self.flush()
            self.bar.close()

    @staticmethod
    def _wait(refs: list, threads: list) -> list:
        """Some calls that have returned: Ray's (`refs`) or threads' (`threads`), waiting up to a second."""
        if not threads:
            return ray.wait(refs, num_returns=1, timeout=1.0)[0]
        if not refs:
            return list(futures.wait(threads, timeout=1.0, return_when=futures.FIRST_COMPLETED).done)
        deadline = time.perf_counter() + 1.0
        while time.perf_counter() < deadline:
            done = [f for f in threads if f.done()]
            ready = ray.wait(refs, num_returns=1, timeout=0 if done else THREAD_POLL_S)[0]
            if done or ready:
                return done + ready
        return []

    def _returned(self, ref) -> None:
        pool = next(p for p in self.pools if ref in p.in_flight)
        what = pool.returned(ref)
        calls = what if isinstance(what, list) else [what]
        live = [c for c in calls if not self.has_failed(c.item)]
        if not live:
            return
        if isinstance(pool, ThreadPool):
            result = ref.result()  # the job's error: raised, it ends the run
        else:
            try:
                result = ray.get(ref) if pool.fetch else ref
            except Exception as e:  # noqa: BLE001 - one item's failure is data; Ray already retried the call
                reason = failure_reason(e)
                for call in live:
                    self.fail(call.item, call.failed_as + reason)
                return
        if isinstance(what, list):
            pool.batching.done(calls, result)  # in the batch's order; the job skips items failed meanwhile
        elif what.then is not None:
            what.then(result)
