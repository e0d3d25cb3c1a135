"""`vtm calibrate`: fit the change score to an annotated archive from its cache, then use the result."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from vtm.cache.store import FeatureCache
from vtm.pipeline.cli import main as cli
from vtm.pipeline.config import Config, load_config
from vtm.pipeline.rescore import scored_with


def test_calibrate_writes_a_config_that_triggers_uses_without_decoding(extracted, ground_truth, tmp_path):
    _, original = extracted
    cache_dir = tmp_path / "cache"
    shutil.copytree(original.root, cache_dir)  # the command re-scores the cache it is given
    lines = [
        json.dumps({"video": path, "start": t, "end": t})
        for path, times in ground_truth["events"].items()
        for t in times
    ]
    lines += [json.dumps({"video": path}) for path, times in ground_truth["events"].items() if not times]
    annotations = tmp_path / "annotations.jsonl"
    annotations.write_text("\n".join(lines) + "\n")
    out = tmp_path / "calibrated.yaml"

    args = ["calibrate", str(cache_dir), "--annotations", str(annotations), "--out", str(out)]
    result = CliRunner().invoke(cli, args + ["--max-false-per-hour", "0"])
    assert result.exit_code == 0, result.output
    line = lambda start: next(x for x in result.output.splitlines() if x.startswith(start))  # noqa: E731
    quiet = [path for path, times in ground_truth["events"].items() if not times]
    no_event = line(f"false triggers on the {len(quiet)} annotated videos with no event")
    assert no_event.split(" after")[0].endswith(", 0"), result.output  # none left on them
    f1 = line("event F1 on the annotated videos: ").split(": ")[1]
    before, after = (float(x.split()[0]) for x in f1.split(" before, "))
    assert after >= before
    calibrated = load_config(out)
    assert calibrated.extract == Config().extract  # only the change score and the threshold move

    result = CliRunner().invoke(cli, ["triggers", str(cache_dir), "--config", str(out)])
    assert result.exit_code == 0, result.output
    assert (
        scored_with(FeatureCache.open(cache_dir))["settings"]["feature_scale"] == calibrated.change_score.feature_scale
    )


def test_calibrate_names_a_bad_annotation_line(extracted, tmp_path):
    _, cache = extracted
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"video": "no/such/video.mp4"}\n')
    result = CliRunner().invoke(
        cli, ["calibrate", str(cache.root), "--annotations", str(bad), "--out", str(tmp_path / "c.yaml")]
    )
    assert result.exit_code == 2 and "bad.jsonl:1" in result.output and not (tmp_path / "c.yaml").exists()


def test_a_false_trigger_limit_needs_videos_annotated_with_no_event(extracted, ground_truth, tmp_path):
    _, cache = extracted
    path, times = next((p, t) for p, t in ground_truth["events"].items() if t)
    events_only = tmp_path / "events.jsonl"
    events_only.write_text(json.dumps({"video": path, "start": times[0], "end": times[0]}) + "\n")
    args = ["calibrate", str(cache.root), "--annotations", str(events_only), "--out", str(tmp_path / "c.yaml")]
    result = CliRunner().invoke(cli, args + ["--max-false-per-hour", "6"])
    assert result.exit_code == 2 and '{"video": "PATH"}' in result.output and "events.jsonl" in result.output
    assert not (tmp_path / "c.yaml").exists()


def test_calibrate_says_when_no_setting_meets_the_false_trigger_limit(extracted, tmp_path, monkeypatch):
    from vtm.pipeline import calibrate

    quiet = {"videos": 1, "seconds": 60.0, "false_triggers": 1, "per_hour": 60.0}
    result = {"f1": 1.0, "precision": 1.0, "recall": 1.0, "eventless": quiet}
    monkeypatch.setattr(calibrate, "calibrate_archive", lambda *a, **k: (Config(), result, result))
    _, cache = extracted
    annotations = tmp_path / "a.jsonl"
    annotations.write_text("{}\n")
    args = ["calibrate", str(cache.root), "--annotations", str(annotations), "--out", str(tmp_path / "c.yaml")]
    limited = CliRunner().invoke(cli, args + ["--max-false-per-hour", "6"])
    assert limited.exit_code == 0 and "no setting tried stays under 6 false triggers per hour" in limited.output
    assert "no setting tried" not in CliRunner().invoke(cli, args + ["--max-false-per-hour", "60"]).output


def _cut_video(path: str, magnitude: float, event: bool, seed: int):
    """20 s at 3 fps of a still scene with a change of `magnitude` at 10 s: an event, or one the labels say is none."""
    import numpy as np

    from vtm.pipeline.calibrate import CalibrationVideo

    rng = np.random.default_rng(seed)
    n = 60
    features = rng.normal(size=32) + rng.normal(0, 0.01, (n, 32))
    features[30:] += magnitude * rng.normal(size=32)
    inputs = {
        "features": features,
        "hist": np.full((n, 64), 1 / 64),
        "grid": np.full((n, 16, 16, 3), 100.0),
        "timestamps": np.arange(n) / 3.0,
    }
    return CalibrationVideo(path, "cuts", [10.0] if event else [], 20.0, inputs)


def test_the_fit_keeps_false_triggers_on_eventless_footage_under_the_limit():
    """A weak cut scores below a change in eventless footage: the best F1 takes both, the limit drops the weak cut."""
    from vtm.pipeline.calibrate import fit_change_score
    from vtm.stages.change_score import ChangeScoreStage
    from vtm.stages.select_windows import SelectWindowsStage

    stage = ChangeScoreStage()
    videos = [
        _cut_video("strong.mp4", 2.0, True, 0),
        _cut_video("weak.mp4", 0.5, True, 1),
        _cut_video("quiet.mp4", 0.7, False, 2),
    ]
    peak = {v.path: float(stage(v.inputs)["change_score"].max()) for v in videos}
    assert peak["weak.mp4"] < peak["quiet.mp4"] < peak["strong.mp4"], peak
    thresholds = [peak["weak.mp4"] - 0.01, (peak["weak.mp4"] + peak["quiet.mp4"]) / 2, peak["quiet.mp4"] + 0.01]
    fit = lambda **limit: fit_change_score(  # noqa: E731
        videos, stage, SelectWindowsStage(threshold=thresholds[1]), search={"threshold": thresholds}, **limit
    )
    free = fit()
    assert free["settings"]["threshold"] == thresholds[0] and free["recall"] == 1.0
    assert free["f1"] == 0.8  # the false trigger on quiet.mp4 costs less F1 than the weak cut gains
    limited = fit(eventless=frozenset({"quiet.mp4"}), max_false_per_hour=6.0)
    assert limited["settings"]["threshold"] == thresholds[2]
    assert limited["eventless"] == {"videos": 1, "seconds": 20.0, "false_triggers": 0, "per_hour": 0.0}
    assert limited["precision"] == 1.0 and limited["recall"] == 0.5


def test_the_cut_part_is_fitted_only_where_the_cache_has_its_measure(extracted, ground_truth, tmp_path, monkeypatch):
    """A cache extracted before the decoder measured the frames between samples has no `frame_change`: calibrate
    leaves `cut_scale` out of its search there (every value would score alike), and searches it elsewhere."""
    import h5py

    from vtm.pipeline import calibrate

    _, original = extracted
    annotations = tmp_path / "a.jsonl"
    annotations.write_text(
        "".join(
            json.dumps({"video": p, "start": t, "end": t}) + "\n"
            for p, ts in ground_truth["events"].items()
            for t in ts
        )
    )
    searched = []

    def fit(videos, *args, search, **kwargs):
        searched.append(set(search))
        return {"settings": {"threshold": 0.5}, "start": {}}

    monkeypatch.setattr(calibrate, "fit_change_score", fit)
    old = tmp_path / "old"
    shutil.copytree(original.root, old)
    for path in (old / "features").glob("*.h5"):
        with h5py.File(path, "a") as f:
            del f["frame_change"]
    for cache in (original.root, old):
        calibrate.calibrate_archive(cache, annotations, Config())
    assert "cut_scale" in searched[0] and "cut_scale" not in searched[1]
    assert searched[0] - {"cut_scale"} == searched[1]  # the other settings are searched alike
