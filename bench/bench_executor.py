"""Our executor against Ray Data on the shape of extract: CPU tasks making segments, an actor consuming them.

    python bench/bench_executor.py [--items 200] [--repeats 3]

Both run the same two stages on the same local Ray, alternately, after an untimed warm-up of each: a
"decode" task that makes a 16 x 112 x 112 x 3 uint8 segment (about 0.6 MB) in a few milliseconds, and one
"encoder" actor that reduces each segment (a few milliseconds). It prints the best wall time of each over
`--repeats`, their ratio, and what importing Ray Data adds to a process that imports Ray (best of 3 fresh
processes each) — every vtm run pays that import, the no-op re-run included.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import ray

from vtm.pipeline.executor import ActorPool, Call, Executor, TaskPool
from vtm.pipeline.ray_runner import stage_actors, stage_task
from vtm.stages.base import Resources

SEGMENT = (16, 112, 112, 3)


class MakeSegment:
    resources = Resources(cpus=1)

    def setup(self) -> None:
        pass

    def __call__(self, batch: dict) -> dict:
        rng = np.random.default_rng(int(batch["item"]))
        return {"item": batch["item"], "frames": rng.integers(0, 255, SEGMENT, dtype=np.uint8)}


class Reduce:
    resources = Resources(cpus=1)

    def setup(self) -> None:
        pass

    def __call__(self, batch: dict) -> dict:
        return {"item": batch["item"], "mean": float(batch["frames"].mean())}


def run_executor(n: int) -> float:
    """Our executor, with its own encoder actor (gone at the end: on 2 CPUs a held CPU would starve Ray Data)."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    t = time.perf_counter()  # from the actor's start, as Ray Data's time includes starting its actor pool
    actors = stage_actors(Reduce(), 1)
    encode = ActorPool(actors, per_actor=2)
    decode = TaskPool(stage_task(MakeSegment()), 2 * cpus, fetch=False, results_wait_in=encode)
    got = []
    executor = Executor([decode, encode], lambda item, reason: None, lambda: None, n, "executor", progress=False)

    def start(i):
        decode.submit(Call(i, ({"item": i},), lambda ref, i=i: encode.submit(Call(i, (ref,), got.append))))

    executor.run(range(n), start)
    seconds = time.perf_counter() - t
    assert len(got) == n
    ray.kill(actors[0])
    return seconds


class _ReduceBatch:
    def __init__(self):
        self.stage = Reduce()

    def __call__(self, batch: dict) -> dict:
        out = [self.stage({"item": i, "frames": f}) for i, f in zip(batch["item"], batch["frames"])]
        return {"item": np.array([o["item"] for o in out]), "mean": np.array([o["mean"] for o in out])}


def run_ray_data(n: int) -> float:
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    make = MakeSegment()
    t = time.perf_counter()
    ds = (
        ray.data.range(n)
        .map(lambda row: make({"item": row["id"]}), num_cpus=1)
        .map_batches(_ReduceBatch, concurrency=1, batch_size=1, num_cpus=1)
    )
    count = sum(1 for _ in ds.iter_rows())
    assert count == n
    return time.perf_counter() - t


def import_seconds(code: str) -> float:
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    run_executor(10)  # warm-up: workers started, functions exported
    run_ray_data(10)
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(run_executor(args.items))
        theirs.append(run_ray_data(args.items))
    ray.shutdown()
    plain = import_seconds("import ray")
    with_data = import_seconds("import ray, ray.data")
    print(f"{args.items} items, {ray_cpus()} CPUs, best of {args.repeats}")
    print(f"executor          {min(ours):7.2f} s   (all: {', '.join(f'{x:.2f}' for x in ours)})")
    print(f"Ray Data          {min(theirs):7.2f} s   (all: {', '.join(f'{x:.2f}' for x in theirs)})")
    print(f"Ray Data / executor {min(theirs) / min(ours):5.2f}")
    print(f"import ray {plain:.2f} s, import ray + ray.data {with_data:.2f} s: +{with_data - plain:.2f} s per run")


def ray_cpus() -> int:
    return os.cpu_count() or 1


if __name__ == "__main__":
    main()
