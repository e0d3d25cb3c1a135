import dataclasses

import h5py
import numpy as np
import polars as pl
import pytest

from vtm.cache import schema
from vtm.cache.atomic import TMP_MARKER, atomic_path
from vtm.cache.store import CacheError, CacheSettings, FeatureCache

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


def _write_one(cache: FeatureCache, video_id: str = "v1", n: int = 10):
    feats = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    ts = np.arange(n) / 3.0
    scores = {
        k: np.linspace(0, 1, n, dtype=np.float32)
        for k in ("change_score", "feature_change", "color_change", "local_change")
    }
    cache.write_video(video_id, feats, ts, np.arange(n) * 10, scores)
    return feats, ts


def test_roundtrip_with_polars_and_h5py(tmp_path):
    cache = FeatureCache.create(tmp_path, SETTINGS)
    feats, ts = _write_one(cache)
    cache.write_manifest(
        [
            {
                "video_id": "v1",
                "path": "a.mp4",
                "size_bytes": 1,
                "mtime_ns": 2,
                "digest": "d",
                "status": "ok",
                "fingerprint": SETTINGS.fingerprint,
            }
        ]
    )

    scores = pl.read_parquet(tmp_path / "scores" / "*.parquet")
    assert scores.columns == schema.SCORES_SCHEMA.names
    assert scores["timestamp_s"].to_list() == pytest.approx(ts.tolist())
    assert scores["trigger_score"].null_count() == len(scores)  # no checkpoint: learned score is null
    with h5py.File(tmp_path / "features" / "v1.h5") as f:
        assert f["features"].dtype == np.float16 and f["features"].shape == (10, 8)
        assert f["features"].chunks is not None
    window, wts, _ = cache.read_features("v1", 3, 6)
    np.testing.assert_allclose(window, feats[3:6], atol=1e-2)
    assert wts.tolist() == pytest.approx(ts[3:6].tolist())
    assert FeatureCache.open(tmp_path).manifest()["path"].to_list() == ["a.mp4"]


def test_other_settings_are_refused_until_rebuild(tmp_path):
    FeatureCache.create(tmp_path, SETTINGS)
    other = dataclasses.replace(SETTINGS, sample_fps=2.0)
    with pytest.raises(CacheError, match=r"sample_fps.*--rebuild"):
        FeatureCache.create(tmp_path, other)
    cache = FeatureCache.create(tmp_path, other, rebuild=True)
    assert FeatureCache.open(tmp_path).settings.sample_fps == 2.0
    assert cache.manifest().is_empty()


def test_weights_location_alone_does_not_change_the_fingerprint():
    moved = dataclasses.replace(SETTINGS, weights="/elsewhere/w.pth")
    assert moved.fingerprint == SETTINGS.fingerprint
    assert dataclasses.replace(SETTINGS, weights_digest="other").fingerprint != SETTINGS.fingerprint


def test_not_a_cache_says_what_to_do(tmp_path):
    with pytest.raises(CacheError, match=r"run `vtm extract DATASET --cache .*` first"):
        FeatureCache.open(tmp_path)
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip.mp4").write_bytes(b"")  # the videos given where the cache was meant
    with pytest.raises(CacheError, match=r"extract them first \(`vtm extract .*videos --cache CACHE_DIR`\)"):
        FeatureCache.open(tmp_path / "videos")


def test_failed_write_leaves_nothing_behind(tmp_path):
    final = tmp_path / "x.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert not final.exists()
    assert not list(tmp_path.glob(f"*{TMP_MARKER}*"))


def test_stale_temp_files_are_removed_on_open_for_writing(tmp_path):
    cache = FeatureCache.create(tmp_path, SETTINGS)
    stale = cache.root / "features" / ("9" * 16 + f".h5{TMP_MARKER}0123dead")
    stale.write_bytes(b"partial")
    FeatureCache.create(tmp_path, SETTINGS)
    assert not stale.exists()
    assert not cache.has_video("9" * 16)


def test_manifest_is_sorted_so_equal_content_gives_equal_files(tmp_path):
    cache = FeatureCache.create(tmp_path, SETTINGS)
    rows = [
        {
            "video_id": str(i),
            "path": p,
            "size_bytes": 0,
            "mtime_ns": 0,
            "digest": "",
            "status": "ok",
            "fingerprint": "f",
        }
        for i, p in enumerate(["b", "a", "c"])
    ]
    cache.write_manifest(rows)
    first = (tmp_path / "manifest.parquet").read_bytes()
    cache.write_manifest(list(reversed(rows)))
    assert (tmp_path / "manifest.parquet").read_bytes() == first
    assert cache.manifest()["path"].to_list() == ["a", "b", "c"]
