"""Fixtures for describe and infer: a small red-object archive, its cache, a tiny LLaVA and a checkpoint
with an adapter trained on it (a few epochs: the files matter here, not how good the model is)."""

from __future__ import annotations

from pathlib import Path

import pytest


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
