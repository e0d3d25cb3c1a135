"""A synthetic archive for learned triggers: the event is "a red object is in view", an interval.

Each video is a still camera on a few shots joined by hard cuts; objects slide in from an edge, stay
a while and slide out, one at a time, each red or (more often) blue or green. Only the red ones are
events; the cuts and the other colours are distractors that the training-free change score fires on
as readily. Used by `bench/bench_learned.py` (the learning curve) and its scaled-down CI test.

Writes beside the videos:

    annotations.jsonl   the documented annotation format: one line per red interval, from the
                        moment the object starts to come in until it has left
                        (`{"video": path}` for a video without one)
    ground_truth.json   as `make_sample_dataset` writes it, but `events` holds the red intervals as
                        [start, end] pairs in seconds
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vtm.data.sample_archive import (
    NOT_RED,
    RED,
    Clip,
    GroundTruth,
    Shot,
    _shot_starts,
    _write_clip,
    random_object,
    random_scene,
)

LABEL = "red_object"


def make_in_view_archive(
    out_dir: Path,
    n_videos: int,
    seconds: float = 30.0,
    seed: int = 0,
    *,
    red_share: float = 0.35,
    fps: int = 12,
    width: int = 160,
    height: int = 120,
) -> Path:
    """Write `n_videos` videos of `seconds` each under `out_dir/inview/`, with annotations and ground truth.

    About `red_share` of the objects are red; a video has one object per ~6 s and one cut per ~8 s.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = GroundTruth()
    lines: list[dict] = []
    intervals: dict[str, list[list[float]]] = {}
    for i in range(n_videos):
        n_shots = max(2, round(seconds / 8))
        shots = [Shot(random_scene(rng, width, height), s) for s in _shot_starts(rng, seconds, n_shots, min_gap=3.0)]
        objects, red = [], []
        slot = seconds / max(1, round(seconds / 6))  # one object per slot, so objects never overlap in time
        for k in range(round(seconds / slot)):
            stay = float(rng.uniform(1.5, min(4.0, slot - 2.5)))
            enter = k * slot + float(rng.uniform(0.5, slot - stay - 1.9))
            is_red = bool(rng.random() < red_share)
            colour = RED if is_red else NOT_RED[int(rng.integers(0, 2))]
            obj = random_object(
                rng,
                width,
                height,
                enter_s=enter,
                leave_s=enter + stay,
                area=(0.04, 0.08),
                colour=colour * rng.uniform(0.85, 1.0),
            )
            objects.append(obj)
            if is_red:
                red.append(obj)
        relative = f"inview/clip_{i:04d}.mp4"
        _write_clip(
            truth,
            out_dir,
            relative,
            Clip(width, height, shots, objects, noise_sigma=2.0),
            rng,
            seconds=seconds,
            fps=fps,
        )
        spans = [[round(o.enter_s, 3), round(o.leave_s + o.slide_s, 3)] for o in red]
        intervals[relative] = spans
        lines += [
            {"video": relative, "start": a, "end": b, "label": LABEL, "description": "a red object is in view"}
            for a, b in spans
        ]
        if not spans:
            lines.append({"video": relative})
    truth.events = intervals
    truth.write(out_dir)
    (out_dir / "annotations.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return out_dir


def subset_annotations(annotations: Path, out: Path, n_videos: int) -> Path:
    """Write the lines of the first `n_videos` videos (in file order) of `annotations` to `out`."""
    kept: list[str] = []
    videos: list[str] = []
    for line in Path(annotations).read_text(encoding="utf-8").splitlines():
        video = json.loads(line)["video"]
        if video not in videos:
            if len(videos) == n_videos:
                break
            videos.append(video)
        kept.append(line)
    Path(out).write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return Path(out)
