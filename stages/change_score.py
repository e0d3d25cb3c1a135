"""The training-free trigger score: how much a moment stands out from what this video usually does.

1. Evidence. For each sampled frame t we compare the mean of the `window` samples after the boundary
   (t .. t+w-1) with the mean of the `window` samples before it (t-w .. t-1), three ways:

   - feature_change: cosine distance of the mean encoder features (what is in the picture),
   - color_change: total-variation distance of the mean colour histograms (cuts, dissolves),
   - local_change: the largest change of mean colour among cells of a coarse grid, after removing
     the change shared by all cells (a light dimming); a small object entering or leaving a still
     scene moves few pixels, but moves them a lot.

   Each part is divided by the value that counts as a clear change on a still scene and the parts
   are combined as the root of their summed squares: the evidence E(t), in "clear changes". A hard
   cut, a dissolve spread over the window and an object sliding in all peak at the middle of the
   change; averaging over a window on each side averages sensor noise away.

2. Normalisation against the video's own recent variability. Around each moment, over `baseline_s`
   seconds (clipped at the ends of the video: half a window is still evidence) and leaving out the
   moment's own neighbourhood (its own peak must not raise its own bar), we take the median of E
   (what this footage usually does: a pan, a zoom, an evolving texture, flicker) and its median
   absolute deviation (how much that wobbles). The moment's excess over the median, in units of

       1 + activity_weight * median + spread_weight * MAD

   is its standing r: on a still scene the unit is one clear change, on busy footage it grows with
   the footage's own level and wobble, so sustained motion stays quiet while cuts, dissolves and
   objects entering a still scene stand out. Near the ends the windows hold fewer samples and their
   means are noisier, so the excess and the unit are both scaled by how much noisier.

3. The score is 1 - 2**-r for r > 0 (else 0), in [0, 1): 0.5 means the moment stands one unit above
   this footage's usual, on any footage; larger changes stay ordered (no flat tops at 1, which
   would blur where the peak is). The scales, weights and the default threshold were fitted on the
   tune part of the trigger corpus (`python bench/bench_triggers.py --fit`), never on its test part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vtm.stages.base import Resources

# Bump when what the score means changes: caches scored by another version are re-scored from
# their features (pipeline/rescore.py), never decoded again.
SCORE_VERSION = 2


def _window_means(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For boundaries t = 0..n-1: mean of x[t-w:t] and of x[t:t+w] (clipped at the ends), and how many samples each holds."""
    n = len(x)
    flat = x.reshape(n, -1).astype(np.float64)
    c = np.concatenate([np.zeros((1, flat.shape[1])), np.cumsum(flat, axis=0)])
    t = np.arange(n)
    lo, hi = np.maximum(t - w, 0), np.minimum(t + w, n)
    n_before, n_after = t - lo, hi - t
    before = (c[t] - c[lo]) / np.maximum(n_before, 1)[:, None]
    after = (c[hi] - c[t]) / n_after[:, None]
    return before.reshape(x.shape), after.reshape(x.shape), n_before, n_after


def rolling_median_and_mad(x: np.ndarray, half: int, guard: int) -> tuple[np.ndarray, np.ndarray]:
    """Median and median absolute deviation of x over [t-half, t+half], clipped at the ends and
    leaving out [t-guard, t+guard]. Where nothing is left (a very short video), the whole video is used."""
    n = len(x)
    padded = np.concatenate([np.full(half, np.nan), x.astype(np.float64), np.full(half, np.nan)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1).copy()  # (n, 2*half+1), centre at column `half`
    windows[:, max(0, half - guard) : half + guard + 1] = np.nan
    empty = np.all(np.isnan(windows), axis=1)
    if empty.any():
        windows[empty] = np.resize(x.astype(np.float64), windows.shape[1])
    with np.errstate(all="ignore"):
        median = np.nanmedian(windows, axis=1)
        mad = np.nanmedian(np.abs(windows - median[:, None]), axis=1)
    return median[:n], mad[:n]


@dataclass
class ChangeScoreStage:
    window_s: float = 1.0  # seconds compared on each side of a boundary
    baseline_s: float = 10.0  # seconds around a moment whose median and spread are "what this footage usually does"
    feature_scale: float = 0.085  # cosine distance that counts as a clear change
    color_scale: float = 0.30  # histogram total-variation distance that counts as a clear change
    local_scale: float = 0.12  # mean-colour change of a grid cell (fraction of 255) that counts as clear
    local_cells: int = 4  # the local change is the mean of this many most-changed cells
    activity_weight: float = 0.5  # how much the footage's usual change level raises the bar
    spread_weight: float = 2.0  # how much the footage's usual wobble raises the bar
    resources: Resources = Resources(cpus=1)

    def setup(self) -> None:
        pass

    def __call__(self, batch: dict) -> dict:
        parts = self.parts(batch)
        score = self.score(parts)
        as32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
        return {**batch, "change_score": as32(score), **{name: as32(parts[name]) for name in ("feature_change", "color_change", "local_change")}}

    def parts(self, batch: dict) -> dict:
        """The three measures of change across each boundary, and how many samples each side's window holds."""
        ts = np.asarray(batch["timestamps"], np.float64)
        n = len(ts)
        if n < 2:
            zeros = np.zeros(n)
            return {"feature_change": zeros, "color_change": zeros, "local_change": zeros, "n_before": zeros, "n_after": zeros + 1, "w": 1, "dt": 1.0}
        dt = float(np.median(np.diff(ts))) or 1.0
        w = max(1, int(round(self.window_s / dt)))

        # The first frame stands in for nothing: encoders start with a key frame compressed unlike
        # the frames after it, so a video's first sample is compared as if it were its second.
        first_as_second = lambda a: np.concatenate([a[1:2], a[1:]])  # noqa: E731
        f = first_as_second(np.asarray(batch["features"], np.float32))
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-6)
        fb, fa, n_before, n_after = _window_means(f, w)
        cos = (fb * fa).sum(1) / np.maximum(np.linalg.norm(fb, axis=1) * np.linalg.norm(fa, axis=1), 1e-9)
        feature_change = 1.0 - cos

        hb, ha, _, _ = _window_means(first_as_second(np.asarray(batch["hist"], np.float32)), w)
        color_change = 0.5 * np.abs(hb - ha).sum(1)

        gb, ga, _, _ = _window_means(first_as_second(np.asarray(batch["grid"], np.float32)) / 255.0, w)
        delta = (ga - gb).reshape(n, -1, 3)  # (n, cells, channel)
        shared = np.median(delta, axis=1, keepdims=True)  # what the whole picture did (light, exposure)
        cell_change = np.abs(delta - shared).mean(-1)  # (n, cells)
        k = min(self.local_cells, cell_change.shape[1])
        local_change = np.sort(cell_change, axis=1)[:, -k:].mean(1)

        for part in (feature_change, color_change, local_change):
            part[0] = 0.0  # nothing before the first frame to compare with
        return {"feature_change": feature_change, "color_change": color_change, "local_change": local_change, "n_before": n_before, "n_after": n_after, "w": w, "dt": dt}

    def score(self, parts: dict) -> np.ndarray:
        """The parts -> evidence in clear-change units -> score in [0, 1) (see the module docstring)."""
        evidence = np.sqrt(
            (parts["feature_change"] / self.feature_scale) ** 2 + (parts["color_change"] / self.color_scale) ** 2 + (parts["local_change"] / self.local_scale) ** 2
        )
        if len(evidence) < 2:
            return np.zeros(len(evidence))
        return self.normalise(evidence, parts["n_before"], parts["n_after"], parts["w"], parts["dt"])

    def normalise(self, evidence: np.ndarray, n_before: np.ndarray, n_after: np.ndarray, w: int, dt: float) -> np.ndarray:
        """Evidence (clear-change units) -> score in [0, 1) against this video's own recent variability."""
        half = max(w + 1, int(round(self.baseline_s / 2 / dt)))
        level, wobble = rolling_median_and_mad(evidence, half, guard=w)
        unit = 1.0 + self.activity_weight * level + self.spread_weight * wobble
        # Fewer samples in a window (the ends of the video) make its mean noisier by this much.
        noisier = np.sqrt((1.0 / np.maximum(n_before, 1) + 1.0 / np.maximum(n_after, 1)) / (2.0 / w))
        standing = (evidence - level * noisier) / (unit * noisier)
        standing[(n_before < max(1, w // 2)) | (n_after < max(1, w // 2))] = 0.0  # half a window on each side is evidence
        return 1.0 - np.exp2(-np.maximum(standing, 0.0))
