"""The training-free trigger score: how much a moment stands out from what this video usually does.

1. Evidence. For each sampled frame t we compare the mean of the samples in the `window_s` after the
   boundary with the mean of those in the `window_s` before it, three ways, and add a fourth that the
   decoder measured between the samples:

   - feature_change: cosine distance of the mean encoder features (what is in the picture),
   - color_change: total-variation distance of the mean colour histograms (cuts, dissolves),
   - local_change: the largest changes of mean colour among cells of a 16x16 grid that the cells
     around them did not share: light (a headlight's pool, a lamp, exposure) changes a broad region
     smoothly, while a small object entering or leaving a still scene changes its own few cells a lot.
     A moving camera (a shake, a pan) changes every textured cell, so the grid before the boundary is
     first moved by the global shift that best explains the change, and the smaller of the two
     changes counts: the camera's motion explains change away only where it does. Where it moved,
     the grids are aligned both ways and the grid not moved is smoothed as moving smooths the other,
     which halves what a shake leaves, so an object entering a shaking view stands out.
   - cut_change: the largest change between two consecutive decoded frames shown since the sample
     before, minus the median one (`frame_change`, see vtm.stages.decode.FrameChanges): a cut changes
     one pair of frames a lot, motion changes every pair a little, so a cut stands out even where the
     picture moves so fast that consecutive samples differ as much as two shots do. Caches made before
     it was kept have no `frame_change`: their score has the other three parts.

   Light is no event by itself: where most of a moment's change is a smooth field of brightness
   alike in the three colour channels (a headlight's pool sweeping the street, flicker, exposure:
   each channel's change of log brightness is the neighbourhood median of their mean), every part
   counts less: fully up to a light share of `light_from`, then less in proportion, and not at all
   when light explains all of it. What the light reveals (an object stepping into its pool) is not
   smooth, and stays.

   At 3 fps the default window is one sample: consecutive samples, so a cut stands out from motion
   as sharply as possible. A second, slower window (`slow_window_s`) catches slow cross-fades, whose
   every step is small. Each part is divided by the value that counts as a clear change on a still
   scene (its scale).

2. Against the video's own recent variability. Each part, at each window, is set against its own
   median and median absolute deviation (MAD) over the `baseline_s` seconds around the moment,
   clipped at the ends of the video (half a window is still evidence) and leaving out the moment's
   own neighbourhood, `guard_s` each side (its own peak, and an object's slide into view that lasts
   most of a second, must not raise its own bar). Its standing is its excess over the
   median in units of

       1 + activity_weight * median + spread_weight * MAD

   so on a still scene the unit is one clear change, while on busy footage (a pan, a zoom, an
   evolving texture, flicker, noise, compression artefacts) it grows with that part's own usual
   level and wobble. Each part is judged against its own usual: flicker keeps the histogram busy,
   but an object entering still stands out in the local part. Near the ends the windows hold fewer
   samples and their means are noisier, so the excess and the unit are both scaled by how much.
   The first frame is compared as if it were the second: an encoder's first key frame looks unlike
   the frames after it, which is no event.

3. The parts' standings (the larger of the two windows for each; the cut part has no windows)
   combine as the root of their summed squares, r, and the score is 1 - 2**-r, in [0, 1): 0.5 means
   the moment stands one unit above what this footage usually does, on any footage; larger changes
   stay ordered (no flat tops at 1, which would blur where the peak is).

The scales, weights and windows were fitted on the tune part of the trigger corpus
(`python bench/bench_triggers.py --fit`, see vtm.data.trigger_corpus) with the threshold held at
0.5; figures are reported on its test part only (`python bench/bench_triggers.py`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from vtm.stages.base import Resources, Stage

# Bump when what the score means changes: caches scored by another version are re-scored from
# their features (pipeline/rescore.py), never decoded again.
SCORE_VERSION = 5
PARTS = ("feature_change", "color_change", "local_change", "cut_change")
# The settings `ChangeScoreStage.parts` depends on; the others only weigh the parts (`score`).
PARTS_SETTINGS = ("window_s", "slow_window_s", "local_cells", "local_radius", "light_from")
# The camera moved across a boundary where aligning the grids leaves less than this share of the picture's typical
# change of a cell (both ways). Anywhere from 0.5 to 0.85 found the same events on the tune parts.
CAMERA_MOVED = 0.7


def _window_means(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For boundaries t = 0..n-1: mean of x[t-w:t] and of x[t:t+w] (clipped at the ends), and how many samples each
    holds."""
    n = len(x)
    flat = x.reshape(n, -1).astype(np.float64)
    c = np.concatenate([np.zeros((1, flat.shape[1])), np.cumsum(flat, axis=0)])
    t = np.arange(n)
    lo, hi = np.maximum(t - w, 0), np.minimum(t + w, n)
    n_before, n_after = t - lo, hi - t
    before = (c[t] - c[lo]) / np.maximum(n_before, 1)[:, None]
    after = (c[hi] - c[t]) / n_after[:, None]
    return before.reshape(x.shape), after.reshape(x.shape), n_before, n_after


def rolling_median_and_mad(
    x: np.ndarray, half: int, guard: int, valid: np.ndarray, min_count: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Median and median absolute deviation of the `valid` samples of x over [t-half, t+half], clipped
    at the ends and leaving out [t-guard, t+guard]. Where fewer than `min_count` are left (a short
    video), all valid samples of the video are used instead: a statistic of one or two samples is noise."""
    values = np.where(valid, x.astype(np.float64), np.nan)
    padded = np.concatenate([np.full(half, np.nan), values, np.full(half, np.nan)])
    windows = np.lib.stride_tricks.sliding_window_view(
        padded, 2 * half + 1
    ).copy()  # (n, 2*half+1), centre at column `half`
    windows[:, max(0, half - guard) : half + guard + 1] = np.nan
    few = np.sum(~np.isnan(windows), axis=1) < min_count
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: a video with no valid sample
        median = np.nanmedian(windows, axis=1)
        mad = np.nanmedian(np.abs(windows - median[:, None]), axis=1)
        whole = np.nanmedian(values)
        median[few], mad[few] = whole, np.nanmedian(np.abs(values - whole))
    return np.nan_to_num(median), np.nan_to_num(mad)


def _local_change(delta: np.ndarray, radius: int, cells: int) -> np.ndarray:
    """(n, side, side, 3) change of each grid cell's mean colour -> (n,) the mean of the `cells` largest
    changes that the cells around them did not share. Light (a lamp, a headlight's pool, exposure)
    changes a broad region smoothly, so its neighbourhood shares it; an object entering changes its
    own few cells."""
    side = 2 * radius + 1
    around = ndimage.median_filter(delta, size=(1, side, side, 1), mode="nearest")  # edge cells repeat outwards
    own = np.abs(delta - around).mean(-1).reshape(len(delta), -1)
    k = min(cells, own.shape[1])
    return np.sort(own, axis=1)[:, -k:].mean(1)


def _light_share(before: np.ndarray, after: np.ndarray, radius: int) -> np.ndarray:
    """(n,) how much of the change from `before` to `after` grids is light: a gain that varies smoothly across the
    picture (a headlight's pool, flicker, exposure) and is alike in the three colour channels, so each channel's change
    of log brightness is the neighbourhood median of their mean. A cut, a dissolve or an object entering is not smooth,
    and a cut to a scene of another colour changes the channels unalike."""
    eps = 8 / 255  # dark cells: noise, not light
    gain = np.log(after + eps) - np.log(before + eps)  # (n, side, side, 3)
    side = 2 * radius + 1
    smooth = ndimage.median_filter(gain.mean(-1), size=(1, side, side), mode="nearest")[..., None]
    change, unexplained = np.abs(gain).mean(axis=(1, 2, 3)), np.abs(gain - smooth).mean(axis=(1, 2, 3))
    return (change - unexplained) / np.maximum(change, 0.02)  # a change of brightness under 2 %: no light to speak of


def _shifted(grid: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """(n, side, side, 3) grids moved by (dy, dx) cells each (fractions interpolate linearly; edges repeat)."""
    n, side = grid.shape[:2]
    cells = np.arange(side, dtype=np.float64)

    def along(a: np.ndarray, d: np.ndarray, axis: int) -> np.ndarray:
        pos = np.clip(cells[None, :] - d[:, None], 0, side - 1)
        lo = np.floor(pos).astype(int)
        hi, frac = np.minimum(lo + 1, side - 1), pos - lo
        shape = (n, side, 1, 1) if axis == 1 else (n, 1, side, 1)
        pick = lambda i: np.take_along_axis(a, i.reshape(shape), axis)  # noqa: E731
        return pick(lo) * (1 - frac.reshape(shape)) + pick(hi) * frac.reshape(shape)

    return along(along(grid, dy, 1), dx, 2)


def _camera_shift(before: np.ndarray, after: np.ndarray, steps: int = 4, reach: float = 1.5) -> tuple[np.ndarray, ...]:
    """(dy, dx), each (n,): the global shift of up to `reach` cells that moves `before` grids towards `after` by the
    camera's motion (a shake, a pan), by Gauss-Newton steps on the cells' mean colours (Lucas-Kanade on a 16x16 image).
    Cells that change a lot count less, so an object entering does not pull the shift towards itself."""
    n = len(before)
    dy, dx = np.zeros(n), np.zeros(n)
    inner = (slice(None), slice(1, -1), slice(1, -1))  # edge cells: what moved in from outside is unknown
    for _ in range(steps):
        moved = _shifted(before, dy, dx)
        gy, gx = (g[inner] for g in np.gradient(moved, axis=(1, 2)))
        residual = (after - moved)[inner]  # ~ -(gx * step_x + gy * step_y) for the step still to take
        weight = 1.0 / np.maximum(np.abs(residual), 0.02)
        xx, xy, yy, xr, yr = (
            (weight * a).sum(axis=(1, 2, 3)) for a in (gx * gx, gx * gy, gy * gy, gx * residual, gy * residual)
        )
        det = xx * yy - xy * xy
        ok = det > 1e-12  # a flat picture: no motion to see
        safe = np.where(ok, det, 1.0)
        dx = np.clip(dx - np.where(ok, (yy * xr - xy * yr) / safe, 0.0), -reach, reach)
        dy = np.clip(dy - np.where(ok, (xx * yr - xy * xr) / safe, 0.0), -reach, reach)
    return dy, dx


def _interpolation_blur(grid: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """(n, side, side, 3) grids blurred as much as `_shifted` blurs a grid it moves by (dy, dx) cells: interpolating
    by a fraction f spreads each cell over a variance of f * (1 - f), which [a, 1 - 2a, a] with a = f * (1 - f) / 2
    matches (edges repeat)."""
    side = grid.shape[1]
    for axis, d in ((1, dy), (2, dx)):
        f = np.abs(d - np.round(d))
        a = (f * (1 - f) / 2).reshape(-1, 1, 1, 1)
        pad = [(0, 0)] * 4
        pad[axis] = (1, 1)
        padded = np.pad(grid, pad, mode="edge")
        lo, hi = padded.take(range(side), axis), padded.take(range(2, side + 2), axis)
        grid = a * (lo + hi) + (1 - 2 * a) * grid
    return grid


def _aligned_local_change(before: np.ndarray, after: np.ndarray, radius: int, cells: int) -> np.ndarray:
    """(n,) the local change left once the camera's motion is taken out of the grids.

    Where the camera moved (aligning explains most of the picture's change, both ways), the grid that was moved is
    compared with the other blurred as much as moving blurred it, and the grids are aligned both ways (before onto
    after and after onto before) with the smaller change kept: a fraction of a cell's move smooths the moved grid, and
    each way leaves its own remnants of the shake, while an object entering changes its cells both ways. Elsewhere (a
    still camera: light, noise, an object's own motion, which pull the shift a little) the plain alignment counts."""
    n = len(before)
    inner = (slice(None), slice(1, -1), slice(1, -1))  # edge cells: what moved in from outside is unknown
    typical = lambda d: np.median(np.abs(d[inner]).mean(-1).reshape(n, -1), axis=1)  # noqa: E731
    ways = []  # (goal, the other grid moved onto it, the shift): before onto after, and after onto before
    for start, goal in ((before, after), (after, before)):
        dy, dx = _camera_shift(start, goal)
        ways.append((goal, _shifted(start, dy, dx), dy, dx))
    plain = typical(after - before)
    moved = np.all([typical(goal - aligned) < CAMERA_MOVED * plain for goal, aligned, _, _ in ways], axis=0)
    out = np.empty(n)
    goal, aligned, _, _ = ways[0]
    if not moved.all():
        out[~moved] = _local_change(goal[~moved] - aligned[~moved], radius, cells)
    if moved.any():
        smoothed_alike = [
            _local_change(_interpolation_blur(g[moved], dy[moved], dx[moved]) - a[moved], radius, cells)
            for g, a, dy, dx in ways
        ]
        out[moved] = np.minimum(*smoothed_alike)
    return out


@dataclass
class ChangeScoreStage(Stage):
    reads = ("timestamps", "features", "hist", "grid")
    optional = ("frame_change",)  # caches made before it was kept lack it: their score has no cut part
    writes = ("change_score", *PARTS)

    window_s: float = 0.34  # seconds compared on each side of a boundary (one sample at 3 fps)
    slow_window_s: float = 1.0  # and again over this many (slow fades); 0: off
    baseline_s: float = 3.0  # seconds around a moment whose median and spread are "what this footage usually does"
    guard_s: float = 0.67  # seconds each side of a moment left out of its baseline (an object slides in for ~1 s)
    feature_scale: float = 0.16  # cosine distance that counts as a clear change on a still scene
    color_scale: float = 0.15  # histogram total-variation distance that counts as a clear change
    local_scale: float = 0.10  # unshared mean-colour change of a grid cell (fraction of 255) that counts as clear
    local_cells: int = 4  # the local change is the mean of this many most-changed cells
    local_radius: int = 2  # cells each way whose median change counts as shared (light, not an object)
    cut_scale: float = 0.1  # largest minus median jump between consecutive decoded frames (of 255) that is clear
    light_from: float = 0.75  # share of a moment's change that is smooth light above which it counts less; 1: never
    activity_weight: float = 1.5  # how much the footage's usual level of change raises the bar
    spread_weight: float = 3.0  # how much the footage's usual wobble raises the bar
    resources: Resources = Resources(cpus=1)

    def __call__(self, batch: dict) -> dict:
        parts = self.parts(batch)
        score = self.score(parts)
        as32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
        out = {**batch, "change_score": as32(score), **{name: as32(parts[name]) for name in PARTS}}
        # Not measured is not "no jump": NaN where the decoder did not see the frames between samples (it counts as 0).
        out["cut_change"][np.isnan(self._cut_jump(batch, len(out["cut_change"])))] = np.nan
        return out

    def parts(self, batch: dict) -> dict:
        """The measures of change across each boundary at each time scale, and how many samples each side's window
        holds; the cut part only at the fast scale (it is measured between frames, not windows)."""
        ts = np.asarray(batch["timestamps"], np.float64)
        n = len(ts)
        if n < 2:
            zeros = np.zeros(n)
            return {**{name: zeros for name in PARTS}, "scales": []}
        dt = float(np.median(np.diff(ts))) or 1.0
        # The first frame stands in for nothing: encoders start with a key frame compressed unlike
        # the frames after it, so a video's first sample is compared as if it were its second.
        first_as_second = lambda a: np.concatenate([a[1:2], a[1:]])  # noqa: E731
        f = first_as_second(np.asarray(batch["features"], np.float32))
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-6)
        hist = first_as_second(np.asarray(batch["hist"], np.float32))
        grid = first_as_second(np.asarray(batch["grid"], np.float32)) / 255.0

        scales = []
        for window_s in [self.window_s] + ([self.slow_window_s] if self.slow_window_s else []):
            w = max(1, int(round(window_s / dt)))
            fb, fa, n_before, n_after = _window_means(f, w)
            cos = (fb * fa).sum(1) / np.maximum(np.linalg.norm(fb, axis=1) * np.linalg.norm(fa, axis=1), 1e-9)
            hb, ha, _, _ = _window_means(hist, w)
            gb, ga, _, _ = _window_means(grid, w)
            local = _local_change(ga - gb, self.local_radius, self.local_cells)
            if not scales:  # the fast scale: a slow window's means already average a shake out
                # The camera's own motion explains change away only where it does: the smaller of the two.
                local = np.minimum(local, _aligned_local_change(gb, ga, self.local_radius, self.local_cells))
            scale = {"feature_change": 1.0 - cos, "color_change": 0.5 * np.abs(hb - ha).sum(1), "local_change": local}
            if not scales:
                scale["cut_change"] = np.nan_to_num(self._cut_jump(batch, n))  # not measured: no jump
            if self.light_from < 1:  # light is no event by itself: the more of the change it explains, the less counts
                light = (_light_share(gb, ga, self.local_radius) - self.light_from) / (1 - self.light_from)
                scale = {name: part * (1 - np.clip(light, 0, 1)) for name, part in scale.items()}
            for part in scale.values():
                part[0] = 0.0  # nothing before the first frame to compare with
            scales.append({**scale, "n_before": n_before, "n_after": n_after, "w": w, "dt": dt})
        return {**{name: scales[0][name] for name in PARTS}, "scales": scales}

    def score(self, parts: dict) -> np.ndarray:
        """Each part in clear-change units, against its own usual in this video, at its best time scale; combined;
        mapped to [0, 1)."""
        n = len(parts["feature_change"])
        if n < 2:
            return np.zeros(n)
        units = {
            "feature_change": self.feature_scale,
            "color_change": self.color_scale,
            "local_change": self.local_scale,
            "cut_change": self.cut_scale,
        }
        total = np.zeros(n)
        for name, unit in units.items():
            best = np.max([self.standing(at[name] / unit, at) for at in parts["scales"] if name in at], axis=0)
            total += np.maximum(best, 0.0) ** 2
        return 1.0 - np.exp2(-np.sqrt(total))

    @staticmethod
    def _cut_jump(batch: dict, n: int) -> np.ndarray:
        """(n,) how far the largest jump between consecutive decoded frames in each sample's interval stands above the
        interval's median jump: a cut is one large jump, motion many alike. NaN where the decoder did not see them
        (everywhere in a cache made before they were kept); 0 at the first sample, which has nothing before it."""
        frame_change = batch.get("frame_change")
        if frame_change is None:
            return np.full(n, np.nan)
        frame_change = np.asarray(frame_change, np.float64).reshape(n, 2)
        jump = frame_change[:, 0] - frame_change[:, 1]
        jump[:1] = 0.0
        return jump

    def standing(self, evidence: np.ndarray, at: dict) -> np.ndarray:
        """Evidence (clear-change units) at one time scale -> how far it stands above this video's own recent
        variability, in units."""
        n_before, n_after, w, dt = at["n_before"], at["n_after"], at["w"], at["dt"]
        guard = max(w, int(round(self.guard_s / dt)))
        half = max(3 * w, guard + 3, int(round(self.baseline_s / 2 / dt)))
        valid = (n_before >= max(1, w // 2)) & (n_after >= max(1, w // 2))  # half a window on each side is evidence
        level, wobble = rolling_median_and_mad(evidence, half, guard=guard, valid=valid)
        unit = 1.0 + self.activity_weight * level + self.spread_weight * wobble
        # Fewer samples in a window (the ends of the video) make its mean noisier by this much.
        noisier = np.sqrt((1.0 / np.maximum(n_before, 1) + 1.0 / np.maximum(n_after, 1)) / (2.0 / w))
        standing = (evidence - level * noisier) / (unit * noisier)
        standing[~valid] = 0.0
        return standing
