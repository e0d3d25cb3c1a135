"""Defect 2a: a cache had no lock: two extracts (or --rebuild during an extract) wrote one cache together."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from vtm.cache.lock import LOCK_FILE, DirectoryLock, LockError
from vtm.cache.store import CacheError, CacheSettings, FeatureCache
from vtm.pipeline.config import load_config
from vtm.pipeline.extract import run_extract

SETTINGS = CacheSettings(
    encoder="tiny",
    weights="random",
    weights_digest="abc",
    pretrained=False,
    feature_dim=8,
    sample_fps=3.0,
    image_size=32,
    max_frames=None,
)


@pytest.fixture
def other_writer():
    """A function: start another process holding the writer lock of a folder; it is killed at the end."""
    procs = []

    def start(folder, command="vtm extract") -> subprocess.Popen:
        code = (
            f"import sys, time\nfrom vtm.cache.lock import DirectoryLock\nwith DirectoryLock({str(folder)!r}, "
            f"{command!r}):\n    print('held', flush=True)\n    time.sleep(600)\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_writer_is_refused_with_who_holds_the_lock(tmp_path, other_writer):
    FeatureCache.create(tmp_path / "cache", SETTINGS)
    holder = other_writer(tmp_path / "cache")
    with pytest.raises(CacheError, match=rf"vtm extract \(pid {holder.pid} on {socket.gethostname()}"):
        with FeatureCache.lock_for_writing(tmp_path / "cache", "vtm extract"):
            pass


def test_rebuild_while_another_extract_writes_is_refused_and_changes_nothing(tmp_path, other_writer):
    cache_dir = tmp_path / "cache"
    FeatureCache.create(cache_dir, SETTINGS)
    before = (cache_dir / "cache.json").read_bytes()
    other_writer(cache_dir)
    (tmp_path / "videos").mkdir()
    cfg = load_config(None, {"extract": {"rebuild": True, "fps": 2.0}})
    with pytest.raises(CacheError, match="is being written by vtm extract"):
        run_extract(tmp_path / "videos", cache_dir, cfg, progress=False)
    assert (cache_dir / "cache.json").read_bytes() == before


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, other_writer):
    holder = other_writer(tmp_path)
    holder.send_signal(signal.SIGKILL)  # like kill -9: its lock file stays
    holder.wait()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid
    with DirectoryLock(tmp_path, "vtm extract") as lock:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        assert lock.held
    assert not (tmp_path / LOCK_FILE).exists()  # released


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    # The pid is alive (it is ours) but the process that wrote the lock started at another time.
    (tmp_path / LOCK_FILE).write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "process_start": "1", "command": "vtm extract"})
    )
    with DirectoryLock(tmp_path, "vtm extract"):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["process_start"] != "1"


def test_a_lock_from_another_host_is_never_guessed_about(tmp_path):
    (tmp_path / LOCK_FILE).write_text(
        json.dumps({"pid": 1, "host": "elsewhere", "command": "vtm extract", "since": "today"})
    )
    with pytest.raises(LockError, match=f"pid 1 on elsewhere.*delete {tmp_path / LOCK_FILE}"):
        DirectoryLock(tmp_path, "vtm extract").acquire()


def test_describe_and_training_outputs_are_locked_too(tmp_path, other_writer):
    from vtm.pipeline.describe import run_describe
    from vtm.pipeline.train import run_train

    out = tmp_path / "out"
    out.mkdir()
    other_writer(out, "vtm describe")
    with pytest.raises(LockError, match="vtm describe"):
        run_describe(tmp_path / "no-cache", out)
    with pytest.raises(LockError, match="vtm describe"):
        run_train(tmp_path / "no-cache", tmp_path / "none.jsonl", out)
