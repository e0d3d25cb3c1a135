"""Defect 6: wrong types and NaN in configs, flags and annotations; damaged checkpoints and weights files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vtm.cache.store import CacheSettings, FeatureCache
from vtm.pipeline.cli import main
from vtm.pipeline.config import ConfigError, load_config


@pytest.mark.parametrize(
    "yaml_text, key",
    [
        ('extract: {fps: "fast"}', "extract.fps must be a number"),
        ('train: {epochs: "ten"}', "train.epochs must be a whole number"),
        ("model: {detector: {hidden_sizes: 128}}", "model.detector.hidden_sizes must be a list"),
        ("extract: {fps: .nan}", "extract.fps must be a finite number"),
        ("extract: {fps: .inf}", "extract.fps must be a finite number"),
        ("train: {lr: .nan}", "train.lr must be a finite number"),
        ("train: {epochs: " + "9" * 400 + "}", "train.epochs is too large"),
        ("triggers: {max_triggers: -1}", "triggers.max_triggers must be >= 1"),
        ("train: {dropout_typo: 1}", "unknown setting"),
        ("extract: 5", "section 'extract'"),
        ("model: {encoder: {dropout: 1.5}}", "model.encoder: dropout must be within"),
        ("extract: {allow_random_weights: 'yes'}", "extract.allow_random_weights must be true or false"),
    ],
)
def test_config_values_are_checked_with_the_key_named(tmp_path, yaml_text, key):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("(", r"\(")):
        load_config(path)


def test_right_values_still_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "extract: {fps: 2, max_frames: null}\nmodel: {detector: {hidden_sizes: [64, 32]}}\ntrain: {lr: 0.01}\n"
    )
    cfg = load_config(path)
    assert cfg.extract.fps == 2.0 and isinstance(cfg.extract.fps, float) and cfg.model.detector.hidden_sizes == (64, 32)


@pytest.mark.parametrize(
    "args, key",
    [
        (["extract", ".", "--cache", "c", "--fps", "nan"], "extract.fps"),
        (["triggers", ".", "--max-triggers", "-1"], "triggers.max_triggers"),
    ],
)
def test_flags_are_checked_too(tmp_path, monkeypatch, args, key):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and key in result.output, result.output
    assert not (tmp_path / "c").exists()  # refused before anything was written


@pytest.fixture
def small_cache(tmp_path) -> FeatureCache:
    settings = CacheSettings(
        encoder="tiny",
        weights="random",
        weights_digest="abc",
        pretrained=False,
        feature_dim=8,
        sample_fps=3.0,
        image_size=32,
        max_frames=None,
    )
    cache = FeatureCache.create(tmp_path / "cache", settings, dataset_root=tmp_path)
    row = {
        "video_id": "0" * 16,
        "path": "v.mp4",
        "size_bytes": 1,
        "mtime_ns": 1,
        "digest": "d",
        "status": "ok",
        "fingerprint": settings.fingerprint,
        "duration_s": 10.0,
    }
    cache.write_manifest([row])
    return cache


@pytest.mark.parametrize(
    "line, words",
    [
        ('{"video": "v.mp4", "start": NaN, "end": 2}', '"start" must be a finite number'),
        ('{"video": "v.mp4", "start": 1, "end": Infinity}', '"end" must be a finite number'),
        ('{"video": "v.mp4", "start": 1, "end": 1e999}', '"end" must be a finite number'),
        ('{"video": "v.mp4", "start": ' + "1" * 400 + ', "end": 2}', '"start" must be a finite number'),
        ('{"video": "v.mp4", "start": ' + "1" * 5000 + ', "end": 2}', "not valid JSON"),
        ('{"video": "v.mp4", "start": true, "end": 2}', '"start" is True'),
        ('{"video": "v.mp4", "start": "1", "end": 2}', "must both be numbers"),
        ('{"video": "v.mp4", "start": 1, "end": 2, "label": 7}', '"label" must be text'),
    ],
)
def test_annotation_values_are_checked(small_cache, tmp_path, line, words):
    from vtm.pipeline.annotations import AnnotationError, load_annotations

    path = tmp_path / "a.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(AnnotationError, match=f"{path}:1: .*" + words.replace("(", r"\(")):
        load_annotations(path, small_cache)


@pytest.mark.parametrize(
    "line, words",
    [
        (
            '{"video": "v.mp4", "start": -1, "end": 2}',
            "start (-1.0) is negative; times are seconds from the start of the video",
        ),
        ('{"video": "v.mp4", "start": 3, "end": 2}', "end (2.0) before start (3.0)"),
    ],
)
def test_a_negative_start_and_an_end_before_the_start_get_their_own_messages(small_cache, tmp_path, line, words):
    import re

    from vtm.pipeline.annotations import AnnotationError, load_annotations

    path = tmp_path / "a.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(AnnotationError, match=re.escape(f"{path}:1: {words}") + "$"):
        load_annotations(path, small_cache)


@pytest.fixture
def checkpoint(tmp_path):
    from vtm.models.configs import TemporalEncoderConfig, TriggerDetectorConfig, TriggerModelConfig
    from vtm.models.trigger_model import TriggerModel
    from vtm.pipeline.checkpoint import save_checkpoint

    config = TriggerModelConfig(
        encoder=TemporalEncoderConfig(input_dim=8, d_model=8, num_layers=1, num_heads=2),
        detector=TriggerDetectorConfig(input_dim=8, hidden_sizes=(4,)),
        window=4,
        grid=None,
    )
    return save_checkpoint(
        tmp_path / "runs" / "exp" / "final", TriggerModel(config), {"epoch": 1, "features": {"encoder": "tiny"}}
    )


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("model.safetensors", b"garbage", "model.safetensors is not a readable safetensors file"),
        ("config.json", b"{not json", "config.json cannot be read"),
        ("config.json", b'{"model": {"window": 4}}', "config.json does not describe a trigger model"),
        ("config.json", b"[1, 2]", "config.json holds a JSON list"),
        ("meta.json", b"\xff\xfe", "meta.json cannot be read"),
    ],
)
def test_a_damaged_checkpoint_names_the_file_and_what_is_wrong(checkpoint, name, content, words):
    from vtm.pipeline.checkpoint import CheckpointError, load_trigger_model

    load_trigger_model(checkpoint)  # loads while intact
    (checkpoint / name).write_bytes(content)
    with pytest.raises(
        CheckpointError,
        match=str(checkpoint / words.split()[0]).replace(".", r"\.") + " " + " ".join(words.split()[1:]),
    ):
        load_trigger_model(checkpoint)


def test_a_pickled_weights_file_is_refused_without_torchs_unsafe_hint(tmp_path):
    import argparse

    torch.save(
        {"layer.weight": torch.zeros(2), "extra": argparse.Namespace(code="would run on load")}, tmp_path / "w.pth"
    )
    result = CliRunner().invoke(
        main,
        [
            "extract",
            str(tmp_path),
            "--cache",
            str(tmp_path / "c"),
            "--encoder",
            "resnet18",
            "--weights",
            str(tmp_path / "w.pth"),
        ],
    )
    assert result.exit_code == 2 and "w.pth holds pickled Python objects" in result.output, result.output
    assert "weights_only" not in result.output and "Traceback" not in result.output


def test_the_page_skips_a_damaged_checkpoint_with_a_note(checkpoint, tmp_path):
    from vtm.ui.web import scan_checkpoints

    runs = tmp_path / "runs"
    for name, meta in (
        ("broken", b"{not json"),
        ("null", b"null"),
        ("list-metrics", json.dumps({"metrics": [1], "features": "x"}).encode()),
    ):
        (runs / name).mkdir()
        (runs / name / "meta.json").write_bytes(meta)
        (runs / name / "model.safetensors").write_bytes(np.zeros(1).tobytes())
    found, skipped = scan_checkpoints(runs)
    assert sorted(path for _, path in found) == sorted([str(checkpoint), str(runs / "list-metrics")])
    assert skipped == [
        "broken (its meta.json is not valid JSON: Expecting property name enclosed in double quotes)",
        "null (its meta.json holds null, not a JSON object)",
    ]


def test_the_page_names_each_skipped_checkpoint_and_why_in_the_page_and_the_log(tmp_path, caplog):
    from vtm.ui.web import Analyser, UiSettings

    runs = tmp_path / "runs"
    for name, meta in (("a/final", b'{"epoch": "x", '), ("b/final", b"[1]")):
        (runs / name).mkdir(parents=True)
        (runs / name / "meta.json").write_bytes(meta)
        (runs / name / "model.safetensors").write_bytes(b"")
    with caplog.at_level("WARNING", logger="vtm.ui.web"):
        status = Analyser(UiSettings(checkpoints_dir=runs)).load_status(None, progress=None)
    assert status.startswith(f"No usable checkpoints under `{runs}`") and "train one" not in status
    assert "a/final (its meta.json is not valid JSON: Expecting property name" in status
    assert "b/final (its meta.json holds a list, not a JSON object)" in status
    logged = [r.getMessage() for r in caplog.records]
    assert any(str(runs / "a" / "final") in m and "not valid JSON" in m for m in logged), logged
    assert any(str(runs / "b" / "final") in m and "holds a list" in m for m in logged), logged
