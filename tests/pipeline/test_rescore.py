"""A cache scored by an older change score, or with other settings, is re-scored from its features, never refused."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from vtm.cache.store import FeatureCache
from vtm.pipeline.config import Config
from vtm.pipeline.rescore import CHANGE_SCORE_JSON, ensure_change_scores, scored_with
from vtm.stages.change_score import SCORE_VERSION


def _scores(cache: FeatureCache) -> pl.DataFrame:
    return cache.read_scores().sort(["video_id", "sample_index"])


def test_an_old_cache_is_rescored_in_place_and_keeps_its_other_columns(extracted, tmp_path):
    _, original = extracted
    shutil.copytree(original.root, tmp_path / "cache")
    cache = FeatureCache.open(tmp_path / "cache")
    assert scored_with(cache)["score_version"] == SCORE_VERSION
    expected = _scores(cache)
    # What a cache from before this version looks like: other scores, no record of how they were made.
    (cache.root / CHANGE_SCORE_JSON).unlink()
    for path in (cache.root / "scores").glob("*.parquet"):
        table = pq.read_table(path)
        table = table.set_column(
            table.schema.get_field_index("change_score"), "change_score", [np.full(len(table), 0.9, np.float32)]
        )
        table = table.set_column(table.schema.get_field_index("label"), "label", [["kept"] * len(table)])
        pq.write_table(table, path)

    assert ensure_change_scores(cache, Config().change_score) == len(list((cache.root / "scores").glob("*.parquet")))
    rescored = _scores(cache)
    np.testing.assert_allclose(rescored["change_score"].to_numpy(), expected["change_score"].to_numpy(), atol=1e-6)
    assert set(rescored["label"]) == {"kept"}
    assert json.loads((cache.root / CHANGE_SCORE_JSON).read_text())["score_version"] == SCORE_VERSION
    assert ensure_change_scores(cache, Config().change_score) == 0  # nothing left to do

    other = dataclasses.replace(Config().change_score, spread_weight=Config().change_score.spread_weight + 1.0)
    assert ensure_change_scores(cache, other) > 0
    assert scored_with(cache)["settings"]["spread_weight"] == other.spread_weight
