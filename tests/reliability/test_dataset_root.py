"""Defect 2b: a cache could be tied to two datasets; the manifest then listed one's files under the other's root."""

from __future__ import annotations

import json

import pytest

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


def test_another_dataset_root_is_refused_naming_the_recorded_one(tmp_path):
    a, b = tmp_path / "archive-a", tmp_path / "archive-b"
    a.mkdir()
    b.mkdir()
    FeatureCache.create(tmp_path / "cache", SETTINGS, dataset_root=a)
    with pytest.raises(CacheError, match=f"belongs to the dataset at {a}, not {b}.*--rebuild"):
        FeatureCache.create(tmp_path / "cache", SETTINGS, dataset_root=b)
    assert FeatureCache.open(tmp_path / "cache").dataset_root == a
    FeatureCache.create(tmp_path / "cache", SETTINGS, dataset_root=a)  # the same root: fine
    FeatureCache.create(tmp_path / "cache", SETTINGS, dataset_root=b, rebuild=True)  # starting over: fine
    assert FeatureCache.open(tmp_path / "cache").dataset_root == b


def test_the_same_root_spelled_differently_is_the_same(tmp_path):
    (tmp_path / "a").mkdir()
    FeatureCache.create(tmp_path / "cache", SETTINGS, dataset_root=tmp_path / "a")
    FeatureCache.create(tmp_path / "cache", SETTINGS, dataset_root=tmp_path / "x" / ".." / "a")


def test_opening_without_a_root_keeps_the_recorded_one(tmp_path):
    FeatureCache.create(tmp_path / "cache", SETTINGS, dataset_root=tmp_path)
    FeatureCache.create(tmp_path / "cache", SETTINGS)
    assert json.loads((tmp_path / "cache" / "cache.json").read_text())["dataset_root"] == str(tmp_path)
