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
from vtm.pipeline.rescore import CHANGE_SCORE_JSON, ensure_change_scores, rescore_reason, scored_with
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

    assert "another version" in rescore_reason(cache, Config().change_score)
    assert ensure_change_scores(cache, Config().change_score) == len(list((cache.root / "scores").glob("*.parquet")))
    rescored = _scores(cache)
    np.testing.assert_allclose(rescored["change_score"].to_numpy(), expected["change_score"].to_numpy(), atol=1e-6)
    assert set(rescored["label"]) == {"kept"}
    assert json.loads((cache.root / CHANGE_SCORE_JSON).read_text())["score_version"] == SCORE_VERSION
    assert ensure_change_scores(cache, Config().change_score) == 0  # nothing left to do

    assert rescore_reason(cache, Config().change_score) is None
    other = dataclasses.replace(Config().change_score, spread_weight=Config().change_score.spread_weight + 1.0)
    # A command run without the --config that made the scores says so, naming what differs.
    reason = rescore_reason(cache, other)
    assert f"(spread_weight {Config().change_score.spread_weight} -> {other.spread_weight})" in reason
    assert ensure_change_scores(cache, other) > 0
    assert scored_with(cache)["settings"]["spread_weight"] == other.spread_weight


def test_a_cache_from_before_the_cut_measure_is_read_rescored_and_scored_from_the_other_parts(
    extracted, tmp_path, capsys
):
    """Score version 4 added the cut part, from a feature (`frame_change`) and a scores column (`cut_change`) that older
    caches lack. Such a cache, even half rewritten, still reads whole; re-scoring gives its scores files the column
    (NaN: not measured), and its scores are those of the other parts."""
    import h5py

    from vtm.cache import schema
    from vtm.pipeline.rescore import read_change_inputs

    _, original = extracted
    shutil.copytree(original.root, tmp_path / "cache")
    cache = FeatureCache.open(tmp_path / "cache")
    (cache.root / CHANGE_SCORE_JSON).unlink()
    for path in sorted((cache.root / "features").glob("*.h5")):
        with h5py.File(path, "a") as f:
            del f[schema.H5_FRAME_CHANGE]
    old = sorted((cache.root / "scores").glob("*.parquet"))[::2]  # half the files as an older vtm wrote them
    for path in old:
        pq.write_table(pq.read_table(path).drop_columns(["cut_change"]), path)
    mixed = _scores(cache)
    assert mixed.columns == schema.SCORES_SCHEMA.names and mixed["cut_change"].null_count() > 0

    ensure_change_scores(cache, Config().change_score, progress=True)
    said = capsys.readouterr().err
    assert "another version of the change score" in said
    n = len(list((cache.root / "scores").glob("*.parquet")))
    assert f"{n} of {n} videos in {cache.root} were extracted before vtm measured the frames between samples" in said
    assert "vtm extract --rebuild" in said
    for path in old:
        assert pq.read_schema(path).names == schema.SCORES_SCHEMA.names
    rescored = _scores(cache)
    assert rescored["cut_change"].null_count() == 0 and rescored["cut_change"].is_nan().all()
    video_id = rescored["video_id"][0]
    inputs = read_change_inputs(cache, video_id)
    assert "frame_change" not in inputs
    np.testing.assert_allclose(
        rescored.filter(pl.col("video_id") == video_id)["change_score"].to_numpy(),
        Config().change_score(inputs)["change_score"],
        atol=1e-6,
    )
