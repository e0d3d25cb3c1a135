"""Trigger moments per video from the cache's scores (no decoding, no model)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl

from vtm.cache import schema
from vtm.cache.store import FeatureCache
from vtm.cache.windows import read_model_inputs
from vtm.stages.select_windows import SelectWindowsStage

SCORE_COLUMNS = {"change": "change_score", "learned": "trigger_score"}


def find_triggers(
    cache: FeatureCache, select: SelectWindowsStage, score: str = "auto", learned: dict[str, np.ndarray] | None = None
) -> dict[str, list[dict]]:
    """{video path: [{"time": s, "score": x, "frame_index": i}, ...]} for every `ok` video.

    score: "change" (training-free), "learned" (a trained checkpoint's scores: `learned`, computed
    by `learned_scores`, or else the cache's stored trigger_score), or "auto" (learned where there
    is one, else change).
    """
    manifest = cache.manifest().filter(pl.col("status") == schema.STATUS_OK).sort("path")
    select = dataclasses.replace(select)
    out: dict[str, list[dict]] = {}
    for video_id, path in zip(manifest["video_id"], manifest["path"]):
        rows = cache.read_scores([video_id]).sort("sample_index")  # one small file: memory stays flat
        if learned is not None and score != "change":
            values = learned[video_id]
        else:
            values = rows[_score_column(rows, score)].fill_null(0.0).to_numpy()
        picked = select({"timestamps": rows["timestamp_s"].to_numpy(), "score": values})
        frame_index = rows["frame_index"].to_numpy()
        out[path] = [
            {"time": round(float(t), 3), "score": round(float(s), 4), "frame_index": int(frame_index[i])}
            for i, t, s in zip(picked["trigger_index"], picked["trigger_time"], picked["trigger_score"])
        ]
    return out


def _score_column(rows: pl.DataFrame, score: str) -> str:
    if score == "auto":
        learned = rows["trigger_score"]
        return "trigger_score" if len(learned) and learned.null_count() == 0 else "change_score"
    if score not in SCORE_COLUMNS:
        raise ValueError(f"score must be one of auto, {', '.join(SCORE_COLUMNS)}; got {score!r}")
    column = SCORE_COLUMNS[score]
    if rows[column].null_count() == len(rows) and len(rows):
        raise ValueError(f"the cache has no {score} scores (train a checkpoint and re-score first)")
    return column


def learned_scores(cache: FeatureCache, model, video_ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """Re-score videos of a cache with a trained trigger model, from cached features only."""
    if video_ids is None:
        video_ids = cache.manifest().filter(pl.col("status") == schema.STATUS_OK)["video_id"].to_list()
    out = {}
    for video_id in video_ids:
        feats, ts = read_model_inputs(cache, video_id, model.config)
        out[video_id], _ = model.score_video(feats, ts)
    return out


def trigger_times(triggers: dict[str, list[dict]], dataset_root: Path | str | None = None) -> dict[str, list[float]]:
    """The JSON written by `vtm triggers --json`: {video_path: [seconds, ...]}."""

    def where(path: str) -> str:
        if isinstance(dataset_root, str):  # an object-storage URL
            return f"{dataset_root}/{path}"
        return str(dataset_root / path) if dataset_root else path

    return {where(p): [t["time"] for t in ts] for p, ts in triggers.items()}
