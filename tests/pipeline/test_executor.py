"""The executor on tiny stages: bounds, failures as data, batching, retries after a killed actor, setup once."""

from __future__ import annotations

import dataclasses
import os
import time
from functools import partial

import pytest

from vtm.pipeline.executor import ActorPool, Batching, Call, Executor, TaskPool, ThreadPool
from vtm.pipeline.ray_runner import stage_actors, stage_task
from vtm.stages.base import Resources
from vtm.stages.decode import DecodeError


def _sleep_stage(seconds: float = 0.0, setup_log: str | None = None):
    """A stage that returns its batch after `seconds`, raises DecodeError where the batch says `fail`, and
    appends its pid to `setup_log` on each setup. Defined in a function so that Ray pickles it by value."""

    @dataclasses.dataclass
    class Sleep:
        seconds: float = 0.0
        setup_log: str | None = None
        resources: Resources = Resources(cpus=0.25)

        def setup(self) -> None:
            if self.setup_log:
                with open(self.setup_log, "a") as f:
                    f.write(f"{os.getpid()}\n")

        def __call__(self, batch: dict) -> dict:
            time.sleep(self.seconds)
            if batch.get("fail"):
                raise DecodeError(f"cannot decode item {batch['item']}")
            return {**batch, "pid": os.getpid(), "n": len(batch.get("xs", []))}

    return Sleep(seconds, setup_log)


def _executor(pools, failures: list, total: int) -> Executor:
    return Executor(pools, lambda item, reason: failures.append((item, reason)), lambda: None, total, "test", False)


def _fast_decodes_into_a_slow_actor(max_in_flight: int, max_held: int | None = None) -> tuple[list, list]:
    """20 items through instant decode tasks into an actor taking 0.05 s a call: at each result, the decode tasks
    running and the results held (running, waiting for the actor or on it)."""
    encode = ActorPool(stage_actors(_sleep_stage(0.05), 1), per_actor=1)
    decode = TaskPool(stage_task(_sleep_stage()), max_in_flight, fetch=False, results_wait_in=encode, max_held=max_held)
    running, held, done = [], [], []

    def encoded(item, result):
        running.append(len(decode.in_flight))
        held.append(len(decode.in_flight) + len(encode.queue) + len(encode.in_flight))
        assert result["item"] == item
        executor.done(item)
        done.append(item)

    def start(item):
        then = lambda ref: encode.submit(Call(item, (ref,), partial(encoded, item)))  # noqa: E731
        decode.submit(Call(item, ({"item": item},), then))

    failures: list = []
    executor = _executor([decode, encode], failures, 20)
    executor.run(range(20), start)
    assert sorted(done) == list(range(20)) and failures == []
    return running, held


def test_only_the_bounded_number_of_results_is_ever_held(ray_local):
    """Fast decodes feeding a slow actor: results wait in the actor's queue, never more than the decode bound."""
    _, held = _fast_decodes_into_a_slow_actor(max_in_flight=2)
    assert max(held) <= 2 + 1  # decode bound + the one call on the actor; unbounded, the fast decodes pile up


def test_a_backlog_of_results_drains_while_new_tasks_run(ray_local):
    """With `max_held` above `max_in_flight` (a backlog decoded while a model loaded), more results may wait for a
    slow actor, while no more tasks than `max_in_flight` ever run."""
    running, held = _fast_decodes_into_a_slow_actor(max_in_flight=1, max_held=4)
    assert max(running) <= 1
    assert 3 <= max(held) <= 4 + 1  # the larger bound is used (+ the one call on the actor), and kept


def test_a_failure_is_recorded_once_with_its_reason_and_the_items_other_calls_are_dropped(ray_local):
    decode = TaskPool(stage_task(_sleep_stage()), max_in_flight=1)
    returned: list = []
    failures: list = []

    def segment_back(item, segment, result):
        returned.append((item, segment))
        if segment == 1:
            executor.done(item)

    def start(item):
        for segment in range(2):
            batch = {"item": item, "fail": item == 2 and segment == 0}
            decode.submit(Call(item, (batch,), partial(segment_back, item, segment), failed_as="decode: "))

    executor = _executor([decode], failures, 4)
    executor.run(range(4), start)
    assert failures == [(2, "decode: cannot decode item 2")]
    assert sorted(returned) == [(i, s) for i in (0, 1, 3) for s in (0, 1)]  # item 2's second segment never ran
    assert executor.has_failed(2) and not executor.has_failed(1)


def test_single_calls_are_joined_into_batches_and_each_answered_once(ray_local):
    answered: list = []
    sizes: list = []

    def combine(calls):
        return ({"item": "batch", "xs": [c.args[0] for c in calls]},)

    def done(calls, result):
        sizes.append(result["n"])
        answered.extend(c.args[0] for c in calls)

    pool = ActorPool(stage_actors(_sleep_stage(0.02), 1), per_actor=1, batching=Batching(4, combine, done))
    executor = _executor([pool], [], 10)
    executor.run(range(10), lambda x: pool.submit(Call(x, (x,))))
    assert sorted(answered) == list(range(10))
    assert max(sizes) == 4 and sum(sizes) == 10 and len(sizes) < 10  # batched, none over the size


def test_a_killed_actor_is_restarted_and_its_calls_retried(ray_local, kill_an_actor_when):
    done: list = []
    killer, killed = kill_an_actor_when(lambda: len(done) >= 3, timeout_s=60)
    pool = ActorPool(stage_actors(_sleep_stage(0.1), 1), per_actor=2)
    failures: list = []
    executor = _executor([pool], failures, 20)

    def back(item, result):
        done.append(item)
        executor.done(item)

    executor.run(range(20), lambda x: pool.submit(Call(x, ({"item": x},), partial(back, x))))
    killer.join()
    assert killed, "no actor was found to kill"
    assert failures == [] and sorted(done) == list(range(20))


def test_a_task_stage_is_set_up_once_per_worker_process(ray_local, tmp_path):
    import ray

    log = tmp_path / "setups.txt"
    run = stage_task(_sleep_stage(0.01, str(log)))
    pids = [r["pid"] for r in ray.get([run({"item": i}) for i in range(24)])]
    setups = log.read_text().split()
    assert sorted(setups) == sorted(set(setups)) == sorted({str(p) for p in pids})  # one setup per worker that ran
    assert len(setups) < len(pids)


def test_a_stall_is_an_error_not_a_hang(ray_local):
    pool = TaskPool(stage_task(_sleep_stage()), max_in_flight=0)
    with pytest.raises(RuntimeError, match="stalled"):
        _executor([pool], [], 1).run([0], lambda x: pool.submit(Call(x, ({"item": x},))))


def test_thread_work_runs_beside_the_ray_calls_and_its_error_ends_the_run(ray_local):
    """A slow job-side write (a ThreadPool call) does not hold up the Ray calls queued behind it; an error in one
    is the job's: raised as it was, the calls queued after it dropped."""
    decode = TaskPool(stage_task(_sleep_stage(0.05)), max_in_flight=2)
    written: list = []

    def write(item):
        time.sleep(0.6 if item == 0 else 0.0)
        if item == 9:
            raise OSError(28, "No space left on device")
        return time.perf_counter()

    write_pool = ThreadPool(write, threads=2)
    decoded_at: dict = {}

    def start(item):
        def decoded(result):
            decoded_at[item] = time.perf_counter()
            write_pool.submit(Call(item, (item,), lambda t: (written.append((item, t)), executor.done(item))))

        decode.submit(Call(item, ({"item": item},), decoded))

    failures: list = []
    executor = _executor([decode, write_pool], failures, 8)
    t0 = time.perf_counter()
    executor.run(range(8), start)
    assert sorted(i for i, _ in written) == list(range(8)) and failures == []
    first_write_end = dict(written)[0]
    # every decode after the first was back while item 0's write still ran (the loop did not wait for it)
    assert max(decoded_at.values()) < first_write_end, (decoded_at, first_write_end - t0)

    write_pool = ThreadPool(write, threads=1)
    executor = _executor([decode, write_pool], failures, 12)
    with pytest.raises(OSError, match="No space left"):
        executor.run(range(12), start)
    assert 10 not in dict(written) and 11 not in dict(written)
    assert write_pool.workers._shutdown  # its threads were ended with the run


def test_the_local_ray_starts_without_its_token_notice(tmp_path):
    """The local Ray that vtm starts for a run does not announce its token authentication (Ray's default, nothing a
    vtm user chose) on every command; Ray's own run still works under it."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env["HOME"] = str(tmp_path)  # Ray keeps its token under ~/.ray
    code = (
        "import ray\nfrom vtm.pipeline.ray_runner import init_ray\n"
        "init_ray()\nprint(ray.get(ray.remote(lambda: 'ran').remote()))\nray.shutdown()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ran", run.stderr
    assert "Token authentication" not in run.stderr


def test_sigterm_ends_a_job_as_ctrl_c_does_once(tmp_path):
    """Ray's core answers SIGTERM by dying on the spot (no word of what was kept, its agents left running). Once vtm
    has started Ray, SIGTERM raises KeyboardInterrupt as Ctrl-C does, and a second signal during the cleanup is
    ignored."""
    import subprocess
    import sys

    code = (
        "import os, signal, time, ray\nfrom vtm.pipeline.ray_runner import init_ray\ninit_ray()\n"
        "try:\n    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(30)\n"
        "except KeyboardInterrupt:\n    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(0.5)\n"
        "    print('cleaned up')\n"
        "ray.shutdown()\n"
    )
    env = {**os.environ, "RAY_ADDRESS": "local"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "cleaned up", run.stderr
    assert "SIGTERM received" not in run.stderr
