"""Model inputs from cached arrays, and fixed-length windows of them for training and re-scoring.

`frame_inputs` is the one place a trigger model's per-frame inputs are assembled: training, `vtm
triggers`, extract's `--trigger-checkpoint`, describe and infer all call it, so a score computed at
extract equals one re-computed from the cache later.

A window is `length` consecutive sampled frames of one video, read as an HDF5 slice: the file's
features are chunked along time, so a window costs a chunk read, never the whole video. Handles are
opened lazily per process (safe in DataLoader workers, which must not share an h5py handle).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

import h5py
import numpy as np

from vtm.cache import schema
from vtm.cache.store import CacheError, FeatureCache

MAX_OPEN_FILES = 64


COLOR_DIM = 64  # joint RGB histogram bins stored per frame


class InputSpec(Protocol):
    """What a model takes besides the features (a TriggerModelConfig is one)."""

    color_inputs: bool  # the colour histogram
    grid_size: int  # the colour grid pooled to grid_size x grid_size cells; 0: none


def frame_inputs(
    spec: InputSpec, features: np.ndarray, color_hist: np.ndarray | None = None, color_grid: np.ndarray | None = None
) -> np.ndarray:
    """Per-frame model inputs (n, D) float32: features [+ colour histogram] [+ pooled colour grid / 255].

    Arrays are rounded to float16 first, as the cache stores them, so inputs built from a decoder's
    arrays equal those read back from the cache.
    """
    parts = [np.asarray(features).astype(np.float16).astype(np.float32)]
    if spec.color_inputs:
        parts.append(np.asarray(color_hist).astype(np.float16).astype(np.float32))
    if spec.grid_size:
        grid = np.asarray(color_grid).astype(np.float16).astype(np.float32)
        n, g = grid.shape[0], grid.shape[1]
        if g % spec.grid_size:
            raise ValueError(f"a {g}x{g} colour grid cannot be pooled to {spec.grid_size}x{spec.grid_size} cells")
        k = g // spec.grid_size
        pooled = grid.reshape(n, spec.grid_size, k, spec.grid_size, k, 3).mean(axis=(2, 4))
        parts.append(pooled.reshape(n, -1) / 255.0)
    return np.concatenate(parts, axis=1)


def read_model_inputs(cache: FeatureCache, video_id: str, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """A whole video's model inputs (see `frame_inputs`) and timestamps."""
    feats, ts, _ = cache.read_features(video_id)
    hist = grid = None
    if spec.color_inputs or spec.grid_size:
        hist, grid = _color_stats(cache, video_id)
    return frame_inputs(spec, feats, hist, grid), ts


def _color_stats(cache: FeatureCache, video_id: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        return cache.read_color_stats(video_id)
    except KeyError:
        raise CacheError(
            f"{cache.features_path(video_id)} has no colour histogram or grid, which this model takes as inputs; "
            "re-extract the cache with this vtm (`vtm extract --rebuild`)"
        ) from None


class WindowReader:
    def __init__(self, cache: FeatureCache, length: int, spec: InputSpec):
        self.cache = cache
        self.length = length
        self.spec = spec
        self._files: OrderedDict[str, h5py.File] = OrderedDict()

    def _file(self, video_id: str) -> h5py.File:
        f = self._files.pop(video_id, None)
        if f is None:
            f = h5py.File(self.cache.features_path(video_id), "r")
            if len(self._files) >= MAX_OPEN_FILES:
                self._files.popitem(last=False)[1].close()
        self._files[video_id] = f
        return f

    def num_frames(self, video_id: str) -> int:
        return self._file(video_id)[schema.H5_TIMESTAMPS].shape[0]

    def timestamps(self, video_id: str) -> np.ndarray:
        return self._file(video_id)[schema.H5_TIMESTAMPS][:]

    def read(self, video_id: str, start: int, length: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inputs (L, D) float32, timestamps (L,), mask (L,) bool) of L = `length` (default: the reader's)
        frames from `start`, zero-padded past the video's end."""
        length = length or self.length
        f = self._file(video_id)
        span = slice(start, start + length)
        hist = f[schema.H5_COLOR_HIST][span] if self.spec.color_inputs else None
        grid = f[schema.H5_COLOR_GRID][span] if self.spec.grid_size else None
        feats = frame_inputs(self.spec, f[schema.H5_FEATURES][span], hist, grid)
        times = f[schema.H5_TIMESTAMPS][span]
        m = len(times)
        out_f = np.zeros((length, feats.shape[1]), np.float32)
        out_t = np.full(length, times[-1] if m else 0.0, np.float64)
        mask = np.zeros(length, bool)
        out_f[:m], out_t[:m], mask[:m] = feats, times, True
        return out_f, out_t, mask

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __getstate__(self):  # a copy sent to a worker process opens its own handles
        return {"cache": self.cache, "length": self.length, "spec": self.spec, "_files": OrderedDict()}
