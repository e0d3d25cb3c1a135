"""Learned triggers from a handful of annotated videos (issue 14), scaled down to run in CI: the event is
"a red object is in view" (an interval); cuts and blue or green objects are distractors the change score
fires on as readily. Trained with the default recipe on a small model, scored on held-out videos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from vtm.cache.store import FeatureCache
from vtm.cache.windows import frame_inputs, read_model_inputs
from vtm.data.in_view_archive import make_in_view_archive
from vtm.pipeline import checkpoint as ckpt
from vtm.pipeline.annotations import load_annotations
from vtm.pipeline.cli import main as cli
from vtm.pipeline.config import load_config
from vtm.pipeline.extract import run_extract
from vtm.pipeline.learned_metrics import calibrate_threshold, label_report, score_videos
from vtm.pipeline.train import run_train

SMALL_MODEL = {"encoder": {"d_model": 64, "num_layers": 1, "num_heads": 4}, "detector": {"hidden_sizes": [32]}}


@pytest.fixture(scope="module")
def inview(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("inview")
    train = make_in_view_archive(root / "train_videos", 12, seconds=20, seed=21, red_share=0.5)
    test = make_in_view_archive(root / "test_videos", 6, seconds=20, seed=22, red_share=0.5)
    for data, cache in ((train, root / "train_cache"), (test, root / "test_cache")):
        assert run_extract(data, cache, progress=False).all_ok
    return root


@pytest.fixture(scope="module")
def trained(inview, tmp_path_factory):
    cfg = load_config(None, {"model": SMALL_MODEL, "train": {"data_workers": 0}})
    return run_train(
        inview / "train_cache",
        inview / "train_videos" / "annotations.jsonl",
        tmp_path_factory.mktemp("run") / "exp",
        cfg,
        progress=False,
    )


def test_learned_triggers_from_twelve_videos_find_red_objects_and_ignore_distractors(inview, trained):
    cache = FeatureCache.open(inview / "test_cache")
    model, _, _ = ckpt.load_trigger_model(trained.final, cache.settings, strict=True)
    truth = load_annotations(inview / "test_videos" / "annotations.jsonl", cache, model.config.labels)
    report = label_report(score_videos(model, cache, truth, sorted(truth.events)), model.config.detector.threshold)
    learned, change = report["all"], report["change score"]
    assert learned["events"] >= 4, report
    # Scaled down from the target (F1 >= 0.9 from <= 16 videos of 30 s, see bench/bench_learned.py): 10 training
    # videos of 20 s.
    assert learned["f1"] >= 0.75 and learned["f1"] >= change["f1"] + 0.3, report


def test_final_is_the_best_epoch_with_its_calibrated_threshold(trained):
    meta = json.loads((trained.final / "meta.json").read_text())
    assert meta["epoch"] == trained.best_epoch <= meta["trained_epochs"] == trained.epochs
    threshold = ckpt.decision_threshold(trained.final)
    assert threshold == meta["metrics"]["val/threshold"] == meta["threshold"]["value"]
    assert meta["threshold"]["calibrated_on_videos"] == meta["val_videos"] > 0


def test_calibration_picks_the_middle_of_the_best_thresholds(inview, trained):
    cache = FeatureCache.open(inview / "train_cache")
    model, _, _ = ckpt.load_trigger_model(trained.final, cache.settings)
    ann = load_annotations(inview / "train_videos" / "annotations.jsonl", cache, model.config.labels)
    scored = score_videos(model, cache, ann, sorted(ann.events)[:3])
    threshold, f1 = calibrate_threshold(scored)
    from vtm.pipeline.evaluation import event_scores

    assert event_scores(scored.predicted(threshold), scored.truth())["f1"] == f1
    assert all(event_scores(scored.predicted(t), scored.truth())["f1"] <= f1 for t in (0.1, 0.3, 0.5, 0.7, 0.9))


def test_triggers_and_evaluate_use_the_checkpoints_threshold_unless_given(inview, trained, tmp_path):
    runner = CliRunner()
    threshold = ckpt.decision_threshold(trained.final)
    res = runner.invoke(cli, ["triggers", str(inview / "test_cache"), "--checkpoint", str(trained.final)])
    assert res.exit_code == 0, res.output
    assert f"(threshold {threshold})" in res.output
    res = runner.invoke(
        cli, ["triggers", str(inview / "test_cache"), "--checkpoint", str(trained.final), "--threshold", "0.99"]
    )
    assert "(threshold 0.99)" in res.output
    res = runner.invoke(
        cli,
        [
            "evaluate",
            str(inview / "test_cache"),
            "--checkpoint",
            str(trained.final),
            "--annotations",
            str(inview / "test_videos" / "annotations.jsonl"),
            "--json",
            str(tmp_path / "m.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split() for line in res.output.splitlines()}
    assert {"red_object", "all", "change"} <= set(rows)
    saved = json.loads((tmp_path / "m.json").read_text())
    events, found, missed, false = (int(x) for x in rows["red_object"][1:5])
    assert found + missed == events and saved["labels"]["red_object"]["false"] == false
    assert saved["val/threshold"] == threshold


def test_one_function_builds_the_inputs_and_the_grid_is_pooled(inview):
    cache = FeatureCache.open(inview / "test_cache")
    vid = cache.manifest()["video_id"][0]
    from vtm.models.configs import TriggerModelConfig
    from vtm.pipeline.train import build_trigger_model_config

    spec: TriggerModelConfig = build_trigger_model_config(
        load_config(None, {"model": SMALL_MODEL}), cache.settings.feature_dim, ("red_object",)
    )
    inputs, ts = read_model_inputs(cache, vid, spec)
    feats, _, _ = cache.read_features(vid)
    hist, grid = cache.read_color_stats(vid)
    assert inputs.shape == (len(ts), spec.input_dim) == (len(ts), feats.shape[1] + 64 + 8 * 8 * 3)
    np.testing.assert_array_equal(inputs, frame_inputs(spec, feats, hist, grid))
    cell = grid[:, :2, :2].astype(np.float32).mean(axis=(1, 2)) / 255  # the top-left 2x2 cells -> the first pooled cell
    np.testing.assert_allclose(inputs[:, -192:-189], cell, rtol=1e-5)
