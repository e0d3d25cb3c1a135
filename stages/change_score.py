"""The training-free trigger score: how much a moment differs from the moments just before it.

For each sampled frame t we compare the mean of the `window` samples after the boundary
(t .. t+w-1) with the mean of the `window` samples before it (t-w .. t-1), three ways:

- feature_change: cosine distance of the mean encoder features (what is in the picture),
- color_change: total-variation distance of the mean colour histograms (cuts, dissolves, light),
- local_change: the largest change of mean colour among cells of a coarse grid, after removing the
  change shared by all cells (a light dimming); a small object entering or leaving a still scene
  moves few pixels, but moves them a lot.

Averaging over a window on each side makes a hard cut, a dissolve spread over the window and an
object sliding in all peak at the middle of the change, and averages sensor noise away. Each part
is divided by the value that counts as a clear change and the parts are combined as the root of
their summed squares: a real change usually moves two or three parts at once while noise moves them
one at a time, which separates events from noise better than the largest part alone (on the sample
archives: weakest event / strongest non-event 1.9x, against 1.2x for the maximum). A slowly varying
baseline (running median) is subtracted so that steady motion (a pan, a crowd) is not one long
trigger. The result r maps to a score 1 - 2**-r in [0, 1): a quiet scene scores near 0, a change
at one part's scale scores 0.5, and larger changes stay ordered (no flat tops at 1, which would
blur where the peak is).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vtm.stages.base import Resources


def _window_means(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """For boundaries t = 0..n-1: mean of x[t-w:t] and mean of x[t:t+w] (clipped at the ends)."""
    n = len(x)
    flat = x.reshape(n, -1).astype(np.float64)
    c = np.concatenate([np.zeros((1, flat.shape[1])), np.cumsum(flat, axis=0)])
    t = np.arange(n)
    lo, hi = np.maximum(t - w, 0), np.minimum(t + w, n)
    before_n = np.maximum(t - lo, 1)[:, None]
    before = (c[t] - c[lo]) / before_n
    after = (c[hi] - c[t]) / (hi - t)[:, None]
    return before.reshape(x.shape), after.reshape(x.shape)


def _running_median(x: np.ndarray, w: int) -> np.ndarray:
    if len(x) == 0 or w <= 1:
        return np.zeros_like(x)
    pad = w // 2
    padded = np.pad(x, pad, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * pad + 1)
    return np.median(windows, axis=1)[: len(x)]


@dataclass
class ChangeScoreStage:
    window_s: float = 1.0  # seconds compared on each side of a boundary
    baseline_s: float = 20.0  # running-median window for the steady-motion baseline
    feature_scale: float = 0.085  # cosine distance that counts as a clear change
    color_scale: float = 0.30  # histogram total-variation distance that counts as a clear change
    local_scale: float = 0.12  # mean-colour change of a grid cell (fraction of 255) that counts as clear
    local_cells: int = 4  # the local change is the mean of this many most-changed cells
    resources: Resources = Resources(cpus=1)

    def setup(self) -> None:
        pass

    def __call__(self, batch: dict) -> dict:
        ts = np.asarray(batch["timestamps"], np.float64)
        n = len(ts)
        zeros = np.zeros(n, np.float32)
        if n < 2:
            return {**batch, "change_score": zeros, "feature_change": zeros, "color_change": zeros, "local_change": zeros}
        dt = float(np.median(np.diff(ts))) or 1.0
        w = max(1, int(round(self.window_s / dt)))

        f = np.asarray(batch["features"], np.float32)
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-6)
        fb, fa = _window_means(f, w)
        cos = (fb * fa).sum(1) / np.maximum(np.linalg.norm(fb, axis=1) * np.linalg.norm(fa, axis=1), 1e-9)
        feature_change = 1.0 - cos

        hb, ha = _window_means(np.asarray(batch["hist"], np.float32), w)
        color_change = 0.5 * np.abs(hb - ha).sum(1)

        gb, ga = _window_means(np.asarray(batch["grid"], np.float32) / 255.0, w)
        delta = (ga - gb).reshape(n, -1, 3)  # (n, cells, channel)
        shared = np.median(delta, axis=1, keepdims=True)  # what the whole picture did (light, exposure)
        cell_change = np.abs(delta - shared).mean(-1)  # (n, cells)
        k = min(self.local_cells, cell_change.shape[1])
        local_change = np.sort(cell_change, axis=1)[:, -k:].mean(1)

        for part in (feature_change, color_change, local_change):
            part[0] = 0.0  # nothing before the first frame to compare with
        raw = np.sqrt((feature_change / self.feature_scale) ** 2 + (color_change / self.color_scale) ** 2 + (local_change / self.local_scale) ** 2)
        baseline = _running_median(raw, max(1, int(round(self.baseline_s / dt))))
        score = 1.0 - np.exp2(-np.maximum(raw - baseline, 0.0))
        as32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
        return {
            **batch,
            "change_score": as32(score),
            "feature_change": as32(feature_change),
            "color_change": as32(color_change),
            "local_change": as32(local_change),
        }
