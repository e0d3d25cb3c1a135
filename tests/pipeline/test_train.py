"""End to end: train-from-cache on a set where the event is a red object entering (cuts and other
colours are not events), so the training-free change score alone cannot tell events apart."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from vtm.cache.store import FeatureCache
from vtm.cache.windows import frame_inputs, input_parts
from vtm.data.sample_archive import make_red_object_archive
from vtm.models.trigger_model import TriggerModel
from vtm.pipeline import checkpoint as ckpt
from vtm.pipeline.annotations import load_annotations
from vtm.pipeline.cli import main as cli
from vtm.pipeline.config import ConfigError, load_config
from vtm.pipeline.extract import run_extract
from vtm.pipeline.train import build_trigger_model_config, evaluate_model, run_train
from vtm.stages.decode import frame_statistics

SMALL = {
    "model": {"encoder": {"d_model": 64, "num_layers": 1, "num_heads": 4}, "detector": {"hidden_sizes": [32]}},
    "train": {
        "epochs": 20,
        "batch_size": 16,
        "lr": 0.003,
        "warmup_steps": 10,
        "save_every": 10,
        "data_workers": 0,
        "patience": 0,
    },
}


@pytest.fixture(scope="module")
def red(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("red")
    train = make_red_object_archive(root / "train_videos", 24, seed=1)
    test = make_red_object_archive(root / "test_videos", 10, seed=2)
    for data, cache in ((train, root / "train_cache"), (test, root / "test_cache")):
        assert run_extract(data, cache, progress=False).all_ok
    return root


def _config(tmp_path, **train):
    cfg = {k: dict(v) for k, v in SMALL.items()}
    cfg["train"].update(train)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained(red, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg_path = _config(out)
    result = run_train(
        red / "train_cache",
        red / "train_videos" / "annotations.jsonl",
        out / "exp",
        load_config(cfg_path),
        progress=False,
    )
    return result, cfg_path


def test_learned_score_beats_the_change_score_on_held_out_videos(red, trained):
    result, _ = trained
    cache = FeatureCache.open(red / "test_cache")
    model, meta, report = ckpt.load_trigger_model(result.final, cache.settings, strict=True)
    ann = load_annotations(red / "test_videos" / "annotations.jsonl", cache, model.config.labels)
    metrics = evaluate_model(model, cache, ann, sorted(ann.events))
    assert metrics["val/event_f1"] > metrics["val/change_score_event_f1"] + 0.1, metrics
    assert metrics["val/frame_ap"] > 0.3
    assert meta["labels"] == ["red_object"] and meta["features"]["encoder"] == "efficientnet_lite0"


def test_run_directory_has_checkpoints_logs_and_config(trained):
    result, _ = trained
    out = result.out_dir
    assert {p.name for p in out.iterdir()} >= {"checkpoint-epoch-10", "checkpoint-epoch-20", "final", "config.yaml"}
    assert list(out.glob("events.out.tfevents.*")), "no TensorBoard log"
    for name in ("model.safetensors", "config.json", "meta.json", "training_state/state.safetensors"):
        assert (result.final / name).is_file(), name
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.bin"))  # no pickles anywhere
    assert 0.0 <= result.data_wait_share < 1.0


@pytest.mark.parametrize("color_inputs, grid_size", [(True, 8), (False, 4), (True, 0), (False, 0)])
def test_the_model_built_for_training_takes_the_inputs_the_cache_builds(color_inputs, grid_size):
    grid = {"size": grid_size} if grid_size else None
    cfg = load_config(None, {"model": {**SMALL["model"], "color_inputs": color_inputs, "grid": grid}})
    model_config = build_trigger_model_config(cfg, 12, ("event",))
    assert model_config.input_parts == input_parts(cfg.model, 12) == input_parts(model_config, 12)
    rng = np.random.default_rng(0)
    hist, grid = frame_statistics(rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8))
    inputs = frame_inputs(model_config, rng.normal(size=(20, 12)), hist, grid)
    assert inputs.shape == (20, model_config.input_dim)
    _, logits = TriggerModel(model_config)(torch.from_numpy(inputs)[None], torch.arange(20.0)[None])
    assert logits.shape == (1, 20, 2)


def test_checkpoint_round_trips_to_the_same_scores(red, trained):
    result, _ = trained
    cache = FeatureCache.open(red / "test_cache")
    a, _, _ = ckpt.load_trigger_model(result.final, cache.settings)
    b, _, _ = ckpt.load_trigger_model(result.final, cache.settings)
    feats = np.random.default_rng(0).normal(size=(40, a.config.input_dim)).astype(np.float32)
    np.testing.assert_array_equal(
        a.score_video(feats, np.arange(40) / 3)[0], b.score_video(feats, np.arange(40) / 3)[0]
    )


def test_loading_reports_what_does_not_match(red, trained):
    result, _ = trained
    settings = FeatureCache.open(red / "test_cache").settings
    import dataclasses

    other = dataclasses.replace(settings, encoder="resnet18", weights_digest="x")
    _, _, report = ckpt.load_trigger_model(result.final, other)
    assert any("encoder" in m for m in report.mismatches)
    with pytest.raises(ckpt.CheckpointError, match="--strict"):
        ckpt.load_trigger_model(result.final, other, strict=True)
    wider = dataclasses.replace(settings, feature_dim=512)
    with pytest.raises(ckpt.CheckpointError, match="re-extract"):
        ckpt.load_trigger_model(result.final, wider)
    bigger = load_config(None, {"model": {**SMALL["model"], "detector": {"hidden_sizes": [48]}}})
    cfg = build_trigger_model_config(bigger, settings.feature_dim, ("red_object",))
    _, _, report = ckpt.load_trigger_model(result.final, settings, config=cfg)
    assert report.fresh and all(name.startswith("detector.") for name in report.fresh)


def test_killed_training_resumes_to_the_same_weights(red, tmp_path):
    cfg = _config(tmp_path, epochs=6, save_every=1)
    args = [
        "train-from-cache",
        str(red / "train_cache"),
        "--annotations",
        str(red / "train_videos" / "annotations.jsonl"),
        "--config",
        str(cfg),
        "--no-progress",
    ]
    straight = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "straight")])
    assert straight.exit_code == 0, straight.output

    proc = subprocess.Popen(
        [sys.executable, "-m", "vtm.pipeline.cli", *args, "--out", str(tmp_path / "killed")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (tmp_path / "killed" / "checkpoint-epoch-2").is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    resumed = CliRunner().invoke(
        cli, args + ["--out", str(tmp_path / "killed"), "--resume", str(tmp_path / "killed" / "checkpoint-epoch-2")]
    )
    assert resumed.exit_code == 0, resumed.output
    a = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_cli_annotate_then_train_and_triggers_with_the_checkpoint(red, trained, tmp_path):
    runner = CliRunner()
    out = tmp_path / "start.jsonl"
    res = runner.invoke(
        cli, ["annotate", str(red / "test_videos"), "--cache", str(red / "test_cache"), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert load_annotations(out, FeatureCache.open(red / "test_cache")).events  # a valid starting file

    result, _ = trained
    res = runner.invoke(cli, ["triggers", str(red / "test_cache"), "--checkpoint", str(result.final)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        cli,
        [
            "evaluate",
            str(red / "test_cache"),
            "--checkpoint",
            str(result.final),
            "--annotations",
            str(red / "test_videos" / "annotations.jsonl"),
        ],
    )
    assert res.exit_code == 0 and "red_object" in res.output and "change score" in res.output, res.output


def test_contradictory_training_settings_are_refused():
    with pytest.raises(ConfigError, match="visual backbone"):
        load_config(None, {"train": {"freeze_visual_backbone": False}})


def test_adapter_trains_with_a_tiny_llava_and_lands_in_the_checkpoint(red, tmp_path):
    import json

    from vtm.models.configs import AdapterConfig
    from vtm.models.llava_adapter import VideoLanguageAdapter
    from vtm.models.tiny import make_tiny_llava

    llava = make_tiny_llava(tmp_path / "tiny-llava")
    cfg = load_config(
        _config(tmp_path, epochs=3, save_every=3, adapter_lr=0.02),
        {"adapter": {"llm": str(llava), "num_soft_tokens": 2, "hidden_dim": 32}},
    )
    result = run_train(
        red / "train_cache", red / "train_videos" / "annotations.jsonl", tmp_path / "exp", cfg, progress=False
    )
    assert (result.final / "adapter.safetensors").is_file()
    saved = json.loads((result.final / "config.json").read_text())["adapter"]
    assert saved["llm"] == str(llava) and saved["llm_kind"] == "llava" and saved["num_soft_tokens"] == 2
    weights = load_file(str(result.final / "adapter.safetensors"))
    assert weights and all(
        "vision_tower" not in k and "embed_tokens" not in k for k in weights
    )  # no frozen base inside
    adapter = VideoLanguageAdapter.load(
        AdapterConfig(**{k: v for k, v in saved.items() if k not in ("llm", "llm_kind")}), saved["llm"]
    )
    adapter.load_trainable_state_dict(weights)
    import torch

    texts = adapter.generate(torch.randn(2, 16, 64))
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_extract_with_a_trigger_checkpoint_stores_the_learned_score(red, trained, tmp_path):
    import polars as pl

    from vtm.pipeline.triggers import find_triggers, learned_scores

    result, _ = trained
    cfg = load_config(None, {"extract": {"trigger_checkpoint": str(result.final)}})
    assert run_extract(red / "test_videos", tmp_path / "cache", cfg, progress=False).all_ok
    cache = FeatureCache.open(tmp_path / "cache")
    scores = pl.read_parquet(tmp_path / "cache" / "scores" / "*.parquet")
    assert scores["trigger_score"].null_count() == 0
    model, _, _ = ckpt.load_trigger_model(result.final, cache.settings)
    on_the_fly = learned_scores(cache, model)
    for vid, values in on_the_fly.items():  # stored at extract == re-scored later from the cache
        stored = scores.filter(pl.col("video_id") == vid).sort("sample_index")["trigger_score"].to_numpy()
        np.testing.assert_allclose(stored, values, atol=1e-5)
    stored_picks = find_triggers(cache, load_config().triggers, "learned")
    assert stored_picks == find_triggers(cache, load_config().triggers, "learned", on_the_fly)


def test_data_parallel_ray_train_workers_stay_in_sync(red, tmp_path):
    """Two Ray Train workers, each on half the windows, gradients averaged; the recipe checks the
    replicas end identical (it raises otherwise) and rank 0 writes the run."""
    cfg = load_config(_config(tmp_path, epochs=2, save_every=2, workers=2))
    result = run_train(
        red / "train_cache", red / "train_videos" / "annotations.jsonl", tmp_path / "dp", cfg, progress=False
    )
    assert (result.final / "model.safetensors").is_file()
    assert result.metrics["val/frame_ap"] >= 0.0
    assert len(list((tmp_path / "dp").glob("events.out.tfevents.*"))) == 1  # one writer, not one per rank


def test_unfrozen_llm_is_fine_tuned_and_saved_whole(red, tmp_path):
    from vtm.models.tiny import make_tiny_llava

    llava = make_tiny_llava(tmp_path / "tiny-llava")
    cfg = load_config(
        _config(tmp_path, epochs=1, save_every=1, freeze_llm=False, adapter_lr=0.01),
        {"adapter": {"llm": str(llava), "num_soft_tokens": 2, "hidden_dim": 32}},
    )
    result = run_train(
        red / "train_cache", red / "train_videos" / "annotations.jsonl", tmp_path / "exp", cfg, progress=False
    )
    source = ckpt.adapter_llm_source(result.final)
    assert source == str(result.final / "llm")
    before = load_file(str(next(llava.glob("*.safetensors"))))
    after = load_file(str(next((result.final / "llm").glob("*.safetensors"))))
    changed = [k for k in before if k in after and "vision_tower" not in k and not torch_equal(before[k], after[k])]
    assert changed, "the language model did not change"
    assert all("vision_tower" not in k for k in changed)


def torch_equal(a, b):
    return a.shape == b.shape and bool((a == b).all())


def test_worker_processes_train_the_same_weights_and_resume_exactly(red, tmp_path):
    """One DataLoader with persistent workers serves every epoch: the same batches and random numbers as reads
    in the training process, and a run resumed from a checkpoint with workers ends on the same weights."""
    data, annotations = red / "train_cache", red / "train_videos" / "annotations.jsonl"

    def train(name: str, workers: int, resume=None) -> dict:
        cfg = load_config(_config(tmp_path, epochs=3, save_every=1, data_workers=workers))
        result = run_train(data, annotations, tmp_path / name, cfg, resume=resume, progress=False)
        return load_file(str(result.final / "model.safetensors"))

    in_process = train("in-process", 0)
    workers = train("workers", 2)
    resumed = train("resumed", 2, resume=tmp_path / "workers" / "checkpoint-epoch-1")
    for other in (workers, resumed):
        assert other.keys() == in_process.keys() and all(torch.equal(other[k], in_process[k]) for k in in_process)
