"""Annotated events: the JSONL format, its validation, and per-frame labels.

One JSON object per line:

    {"video": "cam1/2024-05-01.mp4", "start": 12.0, "end": 14.5, "label": "person", "description": "A man walks in."}
    {"video": "cam2/quiet.mp4"}

`video` is the path relative to the dataset root (as in the cache manifest; an absolute path under
the root works too). `start`/`end` are seconds; `end` may equal `start` for a moment. `label`
defaults to "event", `description` is optional (the adapter learns from it). A line with only
`video` says: this video was looked at and has no events. Videos not named in the file are not
used. Blank lines and lines starting with # are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from vtm.cache import schema
from vtm.cache.store import FeatureCache
from vtm.pipeline.config import finite_float, is_number

DEFAULT_LABEL = "event"


class AnnotationError(ValueError):
    """The annotation file is wrong; the message names the line and what to fix."""


@dataclass(frozen=True)
class Event:
    start: float
    end: float
    label: str = DEFAULT_LABEL
    description: str = ""


@dataclass
class Annotations:
    events: dict[str, list[Event]]  # video_id -> its events (empty list: annotated, no events)
    paths: dict[str, str]  # video_id -> relative path
    labels: tuple[str, ...]  # sorted event labels seen

    def frame_labels(self, video_id: str, timestamps: np.ndarray, sample_interval: float) -> np.ndarray:
        """Class per sampled frame: 0 = no event, i + 1 = labels[i].

        An event covers the frames whose time falls in [start, end] widened by half a sample
        interval, so that even a momentary event (start == end) labels the nearest frame.
        """
        out = np.zeros(len(timestamps), np.int64)
        pad = sample_interval / 2
        for ev in self.events.get(video_id, []):
            inside = (timestamps >= ev.start - pad) & (timestamps <= ev.end + pad)
            out[inside] = self.labels.index(ev.label) + 1
        return out

    def event_times(self) -> dict[str, list[float]]:
        """{relative path: [event midpoints]} for event-level scoring."""
        return {self.paths[v]: [(e.start + e.end) / 2 for e in evs] for v, evs in self.events.items()}


def load_annotations(path: Path, cache: FeatureCache, labels: tuple[str, ...] | None = None) -> Annotations:
    """Read and validate `path` against the videos in `cache`. Raises AnnotationError."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} not found")
    manifest = cache.manifest()
    ok = manifest.filter(pl.col("status") == schema.STATUS_OK)
    by_path = dict(zip(ok["path"], ok["video_id"]))
    duration = dict(zip(ok["video_id"], ok["duration_s"]))
    failed = set(manifest.filter(pl.col("status") != schema.STATUS_OK)["path"])
    root = cache.dataset_root
    events: dict[str, list[Event]] = {}
    paths: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except ValueError as e:  # also a number too long for Python to read
            raise AnnotationError(f"{where}: not valid JSON ({getattr(e, 'msg', str(e)[:100])})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("video"), str):
            raise AnnotationError(f'{where}: each line must be an object with a "video" path')
        unknown = set(obj) - {"video", "start", "end", "label", "description"}
        if unknown:
            raise AnnotationError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        rel = obj["video"]
        if root is not None and Path(rel).is_absolute():
            try:
                rel = Path(rel).relative_to(root).as_posix()
            except ValueError:
                raise AnnotationError(f"{where}: {rel} is not under the cache's dataset root {root}") from None
        if rel not in by_path:
            hint = (
                "it failed in extract (see `vtm cache info`)"
                if rel in failed
                else "it is not in the cache; run `vtm extract` on its folder first"
            )
            raise AnnotationError(f"{where}: unknown video {rel!r}: {hint}")
        vid = by_path[rel]
        paths[vid] = rel
        events.setdefault(vid, [])
        if "start" not in obj and "end" not in obj:
            continue
        start, end = _seconds(obj, "start", where), _seconds(obj, "end", where)
        if start < 0:
            raise AnnotationError(
                f"{where}: start ({start}) is negative; times are seconds from the start of the video"
            )
        if end < start:
            raise AnnotationError(f"{where}: end ({end}) before start ({start})")
        if start > duration[vid] + 0.5:
            raise AnnotationError(
                f"{where}: event starts at {start} s, past the end of the video ({duration[vid]:.1f} s)"
            )
        for name in ("label", "description"):
            if obj.get(name) is not None and not isinstance(obj[name], str):
                raise AnnotationError(f'{where}: "{name}" must be text, got {str(obj[name])[:40]}')
        label = obj.get("label") or DEFAULT_LABEL
        if labels is not None and label not in labels:
            raise AnnotationError(f"{where}: label {label!r} is not one the model knows ({', '.join(labels)})")
        events[vid].append(Event(start, min(end, duration[vid]), label, obj.get("description") or ""))
    if not events:
        raise AnnotationError(f"{path} names no videos")
    seen = sorted({e.label for evs in events.values() for e in evs}) or [DEFAULT_LABEL]
    return Annotations(events, paths, tuple(labels) if labels is not None else tuple(seen))


def _seconds(obj: dict, name: str, where: str) -> float:
    """obj[name] as finite seconds; JSON allows NaN, Infinity and 400-digit numbers, none of them a time."""
    value = obj.get(name)
    if not is_number(value):
        raise AnnotationError(
            f'{where}: "start" and "end" must both be numbers of seconds; "{name}" is {str(value)[:40]}'
        )
    seconds = finite_float(value)
    if seconds is None:
        raise AnnotationError(f'{where}: "{name}" must be a finite number of seconds, got {str(value)[:40]}')
    return seconds


def write_annotations(path: Path, rows: list[dict]) -> None:
    from vtm.cache.atomic import atomic_path

    with atomic_path(Path(path)) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
