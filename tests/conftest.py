"""Shared fixtures: a sample archive made on the fly, one local Ray for the session, tiny models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local Ray for tests needs no token
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: fail fast instead of retrying


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    from vtm.data.sample_archive import make_sample_dataset

    return make_sample_dataset(tmp_path_factory.mktemp("sample"), seed=0)


@pytest.fixture(scope="session")
def ground_truth(sample_dir) -> dict:
    return json.loads((sample_dir / "ground_truth.json").read_text())


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole session (2 CPUs, like the CI machine)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def extracted(sample_dir, ray_local, tmp_path_factory):
    """The sample archive extracted once with the default settings: (summary, cache)."""
    from vtm.cache.store import FeatureCache
    from vtm.pipeline.config import Config
    from vtm.pipeline.extract import run_extract

    cache_dir = tmp_path_factory.mktemp("cache")
    summary = run_extract(sample_dir, cache_dir, Config(), progress=False)
    return summary, FeatureCache.open(cache_dir)


@pytest.fixture
def own_stage_actors():
    """A function listing this test session's Ray actor processes (StageActor), never another job's."""
    import psutil

    def find() -> list:
        found = []
        for p in psutil.Process().children(recursive=True):
            try:
                if any("StageActor" in part for part in p.cmdline()):
                    found.append(p)
            except psutil.Error:
                continue  # exited meanwhile
        return found

    return find


@pytest.fixture
def power_cut():
    """A function that waits (at most `timeout_s`) until `ready()`, then kills a running `vtm` subprocess
    and every process it started, like a power cut: no clean-up runs. Fails if the run ended first."""
    import time

    import psutil

    def cut(proc, ready, timeout_s: float = 120.0) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed:\n" + proc.stdout.read()
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()

    return cut


@pytest.fixture
def kill_an_actor_when(own_stage_actors):
    """Start a thread that, once `ready()` is true, kills one of this session's actors that did not
    exist when it was started. Returns (thread, killed pids); join the thread after the run."""
    import threading
    import time

    def start(ready, timeout_s: float = 120.0):
        existing = {p.pid for p in own_stage_actors()}
        killed: list[int] = []

        def watch():
            deadline = time.time() + timeout_s
            while time.time() < deadline:
                if ready():
                    for p in own_stage_actors():
                        if p.pid not in existing:
                            p.kill()
                            killed.append(p.pid)
                            return
                time.sleep(0.02)

        thread = threading.Thread(target=watch)
        thread.start()
        return thread, killed

    return start


def _s3_server_module():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("s3_server", Path(__file__).with_name("s3_server.py"))
    module = sys.modules.get("s3_server")
    if module is None:
        module = sys.modules["s3_server"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


# Object-storage tests talk to a local S3 server (the s3_server fixture) through the standard AWS variables,
# set before any Ray worker starts so that workers see them too; and no test can reach a real AWS account.
_S3_ENDPOINT = _s3_server_module().free_endpoint()
os.environ.update({**_s3_server_module().ACCESS, "AWS_ENDPOINT_URL": _S3_ENDPOINT})
for _key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(_key, None)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's) on 127.0.0.1 for the whole session, at AWS_ENDPOINT_URL."""
    server = _s3_server_module().start_server(_S3_ENDPOINT)
    yield server
    server.process.terminate()
    server.process.wait(timeout=30)


# Describe, infer and the web page: a small red-object archive, its cache, a tiny LLaVA and a checkpoint with an
# adapter trained on it (a few epochs: the files matter here, not how good the model is).
@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    from vtm.models.tiny import make_tiny_llava

    return make_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


@pytest.fixture(scope="session")
def red_cache(ray_local, tmp_path_factory) -> tuple[Path, Path]:
    """(videos, cache): 5 red-object videos of 10 s, extracted with the default settings."""
    from vtm.data.sample_archive import make_red_object_archive
    from vtm.pipeline.extract import run_extract

    root = tmp_path_factory.mktemp("describe")
    videos = make_red_object_archive(root / "videos", 5, seed=4)
    assert run_extract(videos, root / "cache", progress=False).all_ok
    return videos, root / "cache"


@pytest.fixture(scope="session")
def adapter_checkpoint(red_cache, tiny_llava, tmp_path_factory) -> Path:
    from vtm.pipeline.config import load_config
    from vtm.pipeline.train import run_train

    videos, cache = red_cache
    cfg = load_config(
        None,
        {
            "model": {"encoder": {"d_model": 32, "num_layers": 1, "num_heads": 4}, "detector": {"hidden_sizes": [16]}},
            "adapter": {"llm": str(tiny_llava), "num_soft_tokens": 2, "hidden_dim": 32},
            "train": {"epochs": 2, "batch_size": 16, "save_every": 2, "data_workers": 0, "val_fraction": 0.0},
        },
    )
    return run_train(
        cache, videos / "annotations.jsonl", tmp_path_factory.mktemp("run") / "exp", cfg, progress=False
    ).final
