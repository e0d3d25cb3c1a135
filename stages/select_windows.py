"""Turn per-frame trigger scores into trigger moments and the windows around them.

threshold -> local peaks -> peaks on one plateau merge (the score never dips by `min_dip` of the lower
peak between them: a learned score stays high while an event lasts) -> non-maximum suppression within
`min_gap_s` (near peaks merge into the strongest) -> optional budget (at most N triggers, or a share of the sampled
frames) -> windows of
`before_s`/`after_s` around each trigger, overlapping or touching windows merged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vtm.stages.base import Resources, Stage


def find_peaks(score: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of local maxima at or above threshold (the first sample of a flat top)."""
    s = np.asarray(score, np.float64)
    if len(s) == 0:
        return np.zeros(0, np.int64)
    left = np.concatenate([[-np.inf], s[:-1]])
    right = np.concatenate([s[1:], [-np.inf]])
    return np.flatnonzero((s >= threshold) & (s > left) & (s >= right))


def merge_plateaus(score: np.ndarray, peaks: np.ndarray, min_dip: float) -> np.ndarray:
    """Keep the higher of two neighbouring peaks when the score between them stays above (1 - min_dip) x the lower."""
    kept: list[int] = []
    for i in peaks:
        if kept and score[kept[-1] : i + 1].min() >= (1 - min_dip) * min(score[kept[-1]], score[i]):
            if score[i] > score[kept[-1]]:
                kept[-1] = int(i)
            continue
        kept.append(int(i))
    return np.asarray(kept, np.int64)


def suppress_near(times: np.ndarray, score: np.ndarray, peaks: np.ndarray, min_gap_s: float) -> np.ndarray:
    """Keep the strongest peaks so that no two kept ones are closer than min_gap_s."""
    kept: list[int] = []
    for i in peaks[np.argsort(-score[peaks], kind="stable")]:
        if all(abs(times[i] - times[j]) >= min_gap_s for j in kept):
            kept.append(int(i))
    return np.sort(np.asarray(kept, np.int64))


@dataclass
class SelectWindowsStage(Stage):
    """Batch {timestamps, score} -> trigger indices/times/scores and merged windows [start, end] in s."""

    reads = ("timestamps", "score")
    writes = ("trigger_index", "trigger_time", "trigger_score", "windows")

    threshold: float = 0.5
    min_gap_s: float = 1.0
    before_s: float = 1.0
    after_s: float = 1.0
    max_triggers: int | None = None
    max_fraction: float | None = None  # at most this share of sampled frames inside windows
    min_dip: float = (
        0.1  # two peaks are separate events only if the score dips by this share of the lower one between them
    )
    resources: Resources = Resources(cpus=1)

    def __call__(self, batch: dict) -> dict:
        ts = np.asarray(batch["timestamps"], np.float64)
        score = np.asarray(batch["score"], np.float64)
        idx = suppress_near(
            ts, score, merge_plateaus(score, find_peaks(score, self.threshold), self.min_dip), self.min_gap_s
        )
        idx = self._apply_budget(ts, score, idx)
        windows = merge_windows([(ts[i] - self.before_s, ts[i] + self.after_s) for i in idx])
        return {
            **batch,
            "trigger_index": idx,
            "trigger_time": ts[idx],
            "trigger_score": score[idx],
            "windows": np.asarray(windows, np.float64).reshape(-1, 2),
        }

    def _apply_budget(self, ts: np.ndarray, score: np.ndarray, idx: np.ndarray) -> np.ndarray:
        limit = len(idx) if self.max_triggers is None else self.max_triggers
        if self.max_fraction is not None and len(ts) > 1:
            dt = float(np.median(np.diff(ts)))
            frames_per_window = max(1.0, (self.before_s + self.after_s) / dt + 1)
            limit = min(limit, int(self.max_fraction * len(ts) / frames_per_window))
        if len(idx) <= limit:
            return idx
        strongest = idx[np.argsort(-score[idx], kind="stable")[:limit]]
        return np.sort(strongest)


def merge_windows(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(windows):
        start = max(start, 0.0)
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]
