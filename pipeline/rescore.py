"""Keep a cache's change scores in step with the change score's definition and settings, without decoding.

The change score is derived data: it is recomputed from each video's cached features and colour
statistics. `CACHE/change_score.json` records the definition (`SCORE_VERSION`) and settings that
made the stored scores; a cache without it (built before it existed) or with other settings is
re-scored in place, one video's scores file at a time, atomically. Its learned trigger scores and
labels are kept as they are.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from tqdm import tqdm

from vtm.cache import schema
from vtm.cache.atomic import atomic_path, write_json
from vtm.cache.store import FeatureCache
from vtm.stages.change_score import PARTS, SCORE_VERSION, ChangeScoreStage

CHANGE_SCORE_JSON = schema.CHANGE_SCORE_JSON
_PARTS = ("change_score", *PARTS)


def read_change_inputs(cache: FeatureCache, video_id: str) -> dict:
    """One video's change-score inputs as stored in the cache."""
    features, timestamps, _ = cache.read_features(video_id)
    hist, grid = cache.read_color_stats(video_id)
    frame_change = cache.read_frame_change(video_id)
    return {
        "features": features.astype(np.float32),
        "hist": hist.astype(np.float32),
        "grid": grid.astype(np.float32),
        "timestamps": timestamps,
        **({"frame_change": frame_change.astype(np.float32)} if frame_change is not None else {}),
    }


def score_record(stage: ChangeScoreStage) -> dict:
    settings = {k: v for k, v in dataclasses.asdict(stage).items() if k != "resources"}
    return {"score_version": SCORE_VERSION, "settings": settings}


def scored_with(cache: FeatureCache) -> dict | None:
    path = cache.root / CHANGE_SCORE_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def rescore_reason(cache: FeatureCache, stage: ChangeScoreStage) -> str | None:
    """Why `ensure_change_scores` would re-score `cache` with `stage`, in words; None if it would not."""
    record, stored = score_record(stage), scored_with(cache)
    if stored == record:
        return None
    if stored is None or stored.get("score_version") != SCORE_VERSION:
        return f"the change scores in {cache.root} were made by another version of the change score: re-scoring them"
    before = stored.get("settings", {})
    changed = [f"{k} {before.get(k)} -> {v}" for k, v in record["settings"].items() if before.get(k) != v]
    return (
        f"the change scores in {cache.root} were made with other change_score settings ({', '.join(changed)}): "
        "re-scoring them with these; pass the --config that made them to keep them"
    )


def ensure_change_scores(cache: FeatureCache, stage: ChangeScoreStage, progress: bool = False) -> int:
    """Re-score every `ok` video of `cache` whose stored change score was made otherwise (saying why, with `progress`);
    return how many."""
    reason = rescore_reason(cache, stage)
    if reason is None:
        return 0
    record = score_record(stage)
    ids = cache.manifest().filter(pl.col("status") == schema.STATUS_OK)["video_id"].to_list()
    if progress and ids:
        tqdm.write(reason, file=sys.stderr)
    done = unmeasured = 0
    for video_id in tqdm(ids, desc="re-scoring the change score", unit="video", disable=not progress or not ids):
        path = cache.scores_path(video_id)
        if not path.is_file() or not cache.features_path(video_id).is_file():
            continue
        table = pq.read_table(path).sort_by("sample_index")
        inputs = read_change_inputs(cache, video_id)
        unmeasured += "frame_change" not in inputs
        scored = stage(inputs)
        for name in _PARTS:
            at = table.schema.get_field_index(name)
            if at < 0:  # a scores file from before the part existed
                table = table.append_column(schema.SCORES_SCHEMA.field(name), [scored[name]])
            else:
                table = table.set_column(at, schema.SCORES_SCHEMA.field(name), [scored[name]])
        table = table.select(schema.SCORES_SCHEMA.names)  # the columns in the order of the format
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        done += 1
    if progress and unmeasured:
        tqdm.write(
            f"{unmeasured} of {done} videos in {cache.root} were extracted before vtm measured the frames between "
            "samples: their change score has no cut part; `vtm extract --rebuild` decodes them again to add it",
            file=sys.stderr,
        )
    write_json(cache.root / CHANGE_SCORE_JSON, record)  # last: a killed re-score is redone next time
    return done
