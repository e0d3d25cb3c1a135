"""Fit the change score's settings and threshold to videos with known events, from the cache alone.

Nothing is decoded: every candidate setting re-scores the cached features and colour statistics
(`ChangeScoreStage` on `read_change_inputs`) and is judged by event F1 at a 1 s tolerance.
Used by `python bench/bench_triggers.py --fit` (the shipped defaults) and `vtm calibrate` (an archive).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from vtm.cache import schema
from vtm.cache.store import FeatureCache
from vtm.pipeline.config import ConfigError
from vtm.pipeline.evaluation import event_scores
from vtm.pipeline.rescore import read_change_inputs
from vtm.stages.change_score import PARTS_SETTINGS, ChangeScoreStage
from vtm.stages.select_windows import SelectWindowsStage

TOLERANCE_S = 1.0


@dataclass
class CalibrationVideo:
    path: str
    kind: str
    events: list[float]
    seconds: float
    inputs: dict  # what ChangeScoreStage reads: features, hist, grid, timestamps


def load_calibration_videos(
    cache_dir: Path, videos_dir: Path | None = None, events: dict[str, list[float]] | None = None
) -> list[CalibrationVideo]:
    """Every ok video of a cache with its true events: `events` ({path: [s, ...]}) or the
    ground_truth.json of `videos_dir` (its `kinds` name each video's kind of content)."""
    import json

    cache = FeatureCache.open(cache_dir)
    kinds: dict[str, str] = {}
    if events is None:
        truth = json.loads((Path(videos_dir) / "ground_truth.json").read_text(encoding="utf-8"))
        events, kinds = truth["events"], truth.get("kinds", {})
    manifest = cache.manifest().filter(pl.col("status") == schema.STATUS_OK).sort("path")
    out = []
    for row in manifest.iter_rows(named=True):
        if row["path"] not in events:
            continue
        inputs = read_change_inputs(cache, row["video_id"])
        out.append(
            CalibrationVideo(
                row["path"],
                kinds.get(row["path"], "video"),
                list(events[row["path"]]),
                float(row["duration_s"] or 0.0),
                inputs,
            )
        )
    return out


def predict(
    videos: list[CalibrationVideo], stage: ChangeScoreStage, select: SelectWindowsStage
) -> dict[str, list[float]]:
    out = {}
    for v in videos:
        score = stage(v.inputs)["change_score"]
        out[v.path] = select({"timestamps": v.inputs["timestamps"], "score": score})["trigger_time"].tolist()
    return out


# Candidate values per setting, searched one setting at a time (coordinate ascent): the full grid
# would be ~10^6 settings, and F1 is flat enough near its top that a few sweeps find it. The
# threshold is not searched for the shipped defaults: 0.5 means "one unit above this footage's
# usual" by definition, and the scales are fitted around it. `vtm calibrate` may search it too.
SEARCH = {
    "feature_scale": [0.065, 0.085, 0.1, 0.11, 0.125, 0.14, 0.16, 0.2, 0.24],
    "color_scale": [0.1, 0.15, 0.2, 0.23, 0.26, 0.3, 0.4, 0.55],
    "local_scale": [0.06, 0.08, 0.1, 0.12, 0.14, 0.16, 0.22],
    "cut_scale": [0.05, 0.07, 0.1, 0.15, 0.25],
    "activity_weight": [0.0, 0.25, 0.5, 0.75, 1.0, 1.5],
    "spread_weight": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0],
    "baseline_s": [2.0, 3.0, 4.0, 6.0, 10.0, 20.0],
    "guard_s": [0.34, 0.67, 1.0],
    "window_s": [0.34, 0.67, 1.0],
    "slow_window_s": [0.0, 1.0, 1.5, 2.0],
    "local_radius": [2, 3, 5],
    "light_from": [0.7, 0.8, 0.9, 1.0],
}
THRESHOLDS = [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8]


def evaluate(
    videos: list[CalibrationVideo],
    parts: list[dict],
    stage: ChangeScoreStage,
    select: SelectWindowsStage,
    eventless: frozenset[str] = frozenset(),
) -> dict:
    """Event precision / recall / F1 of `stage` + `select` over videos whose parts are already computed, and the
    false triggers per hour on the videos named in `eventless` (paths of videos with no event)."""
    pred = {}
    for v, p in zip(videos, parts):
        pred[v.path] = select({"timestamps": v.inputs["timestamps"], "score": stage.score(p)})["trigger_time"].tolist()
    result = event_scores(pred, {v.path: v.events for v in videos}, TOLERANCE_S)
    result["eventless"] = false_triggers([v for v in videos if v.path in eventless], pred)
    return result


def false_triggers(quiet: list[CalibrationVideo], predictions: dict[str, list[float]]) -> dict:
    """Triggers on videos with no event (every one is false), and how many that makes per hour of them."""
    seconds = sum(v.seconds for v in quiet)
    false = sum(len(predictions.get(v.path, [])) for v in quiet)
    return {
        "videos": len(quiet),
        "seconds": seconds,
        "false_triggers": false,
        "per_hour": 3600.0 * false / seconds if seconds else 0.0,
    }


def _rank(result: dict, max_false_per_hour: float | None) -> tuple:
    """Higher is better: any setting within the false-trigger limit beats every setting over it; within the limit the
    higher F1 wins, over it the fewer false triggers (then the higher F1)."""
    if max_false_per_hour is None:
        return (1, round(result["f1"], 9))
    rate = result["eventless"]["per_hour"]
    f1 = round(result["f1"], 9)
    return (1, f1) if rate <= max_false_per_hour + 1e-9 else (0, -rate, f1)


def _eventless(result: dict) -> str:
    return f"eventless: {result['eventless']['false_triggers']} false in {result['eventless']['seconds']:.0f} s"


def fit_change_score(
    videos: list[CalibrationVideo],
    stage: ChangeScoreStage,
    select: SelectWindowsStage,
    search: dict | None = None,
    sweeps: int = 3,
    progress: bool = False,
    eventless: frozenset[str] = frozenset(),
    max_false_per_hour: float | None = None,
) -> dict:
    """Search the change score's settings (and the threshold, if `search` names it) for the best event F1 over `videos`,
    subject to at most `max_false_per_hour` false triggers per hour on the `eventless` ones (paths of videos with no
    event; None: no limit).

    Starts from `stage` and `select.threshold`; each sweep tries every value of one setting with the
    others fixed and keeps the best (ties keep the current value; see `_rank` for how the limit counts). Returns the
    best settings, their precision, recall and F1, and the false triggers on the eventless videos; under "start", the
    same figures at the settings it started from.
    """
    search = search or SEARCH
    parts_by: dict[tuple, list[dict]] = {}  # by the settings the parts depend on (the rest only weigh them)
    current = {name: (select.threshold if name == "threshold" else getattr(stage, name)) for name in search}

    def run(setting: dict) -> dict:
        candidate = dataclasses.replace(stage, **{k: v for k, v in setting.items() if k != "threshold"})
        key = tuple(getattr(candidate, name) for name in PARTS_SETTINGS)
        if key not in parts_by:
            parts_by[key] = [candidate.parts(v.inputs) for v in videos]
        return evaluate(
            videos,
            parts_by[key],
            candidate,
            dataclasses.replace(select, threshold=setting.get("threshold", select.threshold)),
            eventless,
        )

    start = best = run(current)
    # Over the limit, the first change of one setting that gets under it would win whatever it costs in F1: so, while
    # over it, every single change is tried before the one ranked best is taken.
    while _rank(best, max_false_per_hour)[0] == 0:
        moves = [(name, value) for name, values in search.items() for value in values if value != current[name]]
        trials = [(run({**current, name: value}), name, value) for name, value in moves]
        trial, name, value = max(trials, key=lambda t: _rank(t[0], max_false_per_hour))
        if _rank(trial, max_false_per_hour) <= _rank(best, max_false_per_hour):
            break
        best, current = trial, {**current, name: value}
        if progress:
            print(f"  over the limit: {name} = {value}: F1 {best['f1']:.3f}, {_eventless(best)}", flush=True)
    for sweep in range(sweeps):
        for name, values in search.items():
            for value in values:
                if value == current[name]:
                    continue
                trial = run({**current, name: value})
                if _rank(trial, max_false_per_hour) > _rank(best, max_false_per_hour):
                    best, current = trial, {**current, name: value}
            if progress:
                print(
                    f"  sweep {sweep + 1}, {name} = {current[name]}: F1 {best['f1']:.3f} (P "
                    f"{best['precision']:.3f}, R {best['recall']:.3f}), {_eventless(best)}",
                    flush=True,
                )
    return {**best, "settings": {"threshold": select.threshold, **current}, "start": start}


def calibrate_archive(
    cache_dir: Path, annotations_path: Path, config, progress: bool = False, max_false_per_hour: float | None = None
) -> tuple:
    """Fit `config`'s change score and trigger threshold to an annotated archive's cache, with at most
    `max_false_per_hour` false triggers per hour on its annotated videos with no event (None: no limit).

    Returns (the config with the fitted change_score and triggers.threshold, result before, result after): each with
    precision, recall, F1 and the false triggers on the videos with no event. Both are on the annotated videos the fit
    saw: check the result on videos it did not see.
    """
    from vtm.pipeline.annotations import load_annotations

    cache = FeatureCache.open(cache_dir)
    events = load_annotations(annotations_path, cache).event_times()
    eventless = frozenset(path for path, times in events.items() if not times)
    if max_false_per_hour is not None and not eventless:
        raise ConfigError(
            f"a limit on false triggers needs annotated videos where nothing happens: add a line "
            f'{{"video": "PATH"}} to {annotations_path} for each of them'
        )
    videos = load_calibration_videos(cache_dir, events=events)
    search = {"threshold": THRESHOLDS, **SEARCH}
    if not any("frame_change" in v.inputs for v in videos):  # a cache from before the cut part: nothing to fit
        search.pop("cut_scale")
    best = fit_change_score(
        videos,
        config.change_score,
        config.triggers,
        search=search,
        progress=progress,
        eventless=eventless,
        max_false_per_hour=max_false_per_hour,
    )
    before = best.pop("start")
    settings = dict(best["settings"])
    threshold = settings.pop("threshold")
    fitted = dataclasses.replace(
        config,
        change_score=dataclasses.replace(config.change_score, **settings),
        triggers=dataclasses.replace(config.triggers, threshold=threshold),
    )
    return fitted, before, best
