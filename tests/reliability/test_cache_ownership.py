"""Defect 1: `--cache` pointed at a user's folder deleted files there (stale-temp clean-up, --rebuild)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vtm.cache import schema
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
VIDEO_ID = "0123456789abcdef"


def _users_folder(root):
    """A folder of someone's files, with names that look like vtm's."""
    files = {
        "notes/report.tmp-final.docx": b"my report",
        "draft.tmp-12345678": b"my draft",
        "features/plan.h5": b"my data",
        "scores/results.parquet": b"my table",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _intact(root, files):
    return all((root / rel).read_bytes() == data for rel, data in files.items())


def _write_video(cache):
    n = 4
    scores = {k: np.zeros(n, np.float32) for k in ("change_score", "feature_change", "color_change", "local_change")}
    cache.write_video(VIDEO_ID, np.zeros((n, 8), np.float32), np.arange(n) / 3.0, np.arange(n), scores)


def test_extract_into_a_users_folder_is_refused_and_deletes_nothing(tmp_path):
    users = tmp_path / "P"
    files = _users_folder(users)
    (tmp_path / "videos").mkdir()
    with pytest.raises(CacheError, match="not empty and is not a vtm feature cache"):
        run_extract(tmp_path / "videos", users, load_config(), progress=False)
    assert _intact(users, files)
    assert sorted(p.name for p in users.iterdir()) == [
        "draft.tmp-12345678",
        "features",
        "notes",
        "scores",
    ]  # not even a lock file left


@pytest.mark.parametrize("rebuild", [False, True])
def test_create_and_rebuild_refuse_a_folder_that_is_not_a_cache(tmp_path, rebuild):
    files = _users_folder(tmp_path)
    with pytest.raises(CacheError, match="not a vtm feature cache"):
        FeatureCache.create(tmp_path, SETTINGS, rebuild=rebuild)
    assert _intact(tmp_path, files)


def test_a_cache_json_vtm_did_not_write_is_not_taken_for_a_cache(tmp_path):
    (tmp_path / "cache.json").write_text('{"my": "settings"}')
    with pytest.raises(CacheError, match="not written by vtm"):
        FeatureCache.create(tmp_path, SETTINGS, rebuild=True)
    assert (tmp_path / "cache.json").read_text() == '{"my": "settings"}'


def test_rebuild_removes_only_what_vtm_wrote(tmp_path):
    cache = FeatureCache.create(tmp_path, SETTINGS)
    _write_video(cache)
    cache.write_manifest([])
    files = _users_folder(tmp_path)  # a person later put their own files into the cache folder
    FeatureCache.create(tmp_path, dataclasses.replace(SETTINGS, sample_fps=2.0), rebuild=True)
    assert _intact(tmp_path, files)
    assert not cache.has_video(VIDEO_ID) and not (tmp_path / schema.MANIFEST_FILE).exists()
    assert FeatureCache.open(tmp_path).settings.sample_fps == 2.0


def test_stale_temp_clean_up_takes_only_vtms_own_temporaries(tmp_path):
    FeatureCache.create(tmp_path, SETTINGS)
    ours = [tmp_path / "manifest.parquet.tmp-0a1b2c3d", tmp_path / "features" / f"{VIDEO_ID}.h5.tmp-deadbeef"]
    for p in ours:
        p.write_bytes(b"half-written")
    files = _users_folder(tmp_path)
    FeatureCache.create(tmp_path, SETTINGS)
    assert not any(p.exists() for p in ours)
    assert _intact(tmp_path, files)


def test_an_empty_folder_and_a_new_path_are_fine(tmp_path):
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "empty", tmp_path / "new" / "cache"):
        FeatureCache.create(root, SETTINGS)
        assert FeatureCache.open(root).settings == SETTINGS


def test_training_never_replaces_a_folder_that_is_not_a_checkpoint(tmp_path):
    from vtm.models.configs import TemporalEncoderConfig, TriggerDetectorConfig, TriggerModelConfig
    from vtm.models.trigger_model import TriggerModel
    from vtm.pipeline.checkpoint import CheckpointError, save_checkpoint

    config = TriggerModelConfig(
        encoder=TemporalEncoderConfig(input_dim=8, d_model=8, num_layers=1, num_heads=2),
        detector=TriggerDetectorConfig(input_dim=8, hidden_sizes=(4,)),
        window=4,
        grid=None,
    )
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "thesis.docx").write_bytes(b"mine")
    with pytest.raises(CheckpointError, match="is not a vtm checkpoint"):
        save_checkpoint(tmp_path / "final", TriggerModel(config), {})
    assert (tmp_path / "final" / "thesis.docx").read_bytes() == b"mine"
    save_checkpoint(tmp_path / "epoch-1", TriggerModel(config), {})
    save_checkpoint(tmp_path / "epoch-1", TriggerModel(config), {})  # an older checkpoint is replaced
