"""Model inputs from cached arrays, and fixed-length windows of them for training and re-scoring.

`frame_inputs` is the one place a trigger model's per-frame inputs are assembled and `input_parts` the
one place their layout is described: training, `vtm triggers`, extract's `--trigger-checkpoint`,
describe and infer all go through them, so a score computed at extract equals one re-computed from the
cache later, and a model is trained on exactly the inputs it is scored on.

A window is `length` consecutive sampled frames of one video, read as an HDF5 slice: the file's
features are chunked along time, so a window costs a chunk read, never the whole video. Handles are
opened lazily per process (safe in DataLoader workers, which must not share an h5py handle). Training
loads its videos' inputs into memory once (`WindowReader.load`), where they fit, and slices windows
from there.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol

import h5py
import numpy as np

from vtm.cache import schema
from vtm.cache.store import CacheError, FeatureCache

MAX_OPEN_FILES = 64


class InputSpec(Protocol):
    """What a model takes besides the features (a TriggerModelConfig and the config's ModelConfig are ones)."""

    color_inputs: bool  # the colour histogram
    grid_size: int  # the colour grid pooled to grid_size x grid_size cells; 0: none


def input_parts(spec: InputSpec, feature_dim: int) -> tuple[int, ...]:
    """Widths of the consecutive parts of one frame's inputs as `frame_inputs` lays them out: the features
    [, the colour histogram][, the pooled colour grid's RGB values]."""
    hist = (schema.COLOR_HIST_DIM,) if spec.color_inputs else ()
    grid = (spec.grid_size * spec.grid_size * 3,) if spec.grid_size else ()
    return (feature_dim,) + hist + grid


def frame_inputs(
    spec: InputSpec, features: np.ndarray, color_hist: np.ndarray | None = None, color_grid: np.ndarray | None = None
) -> np.ndarray:
    """Per-frame model inputs (n, sum(input_parts)) float32: features [+ colour histogram] [+ pooled colour
    grid / 255], from the arrays the cache holds (or a decoder's, which are the same before storing).

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
        parts.append(pooled.reshape(n, spec.grid_size * spec.grid_size * 3) / 255.0)
    return np.concatenate(parts, axis=1)


def read_model_inputs(cache: FeatureCache, video_id: str, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """A whole video's model inputs (see `frame_inputs`) and timestamps."""
    path = cache.features_path(video_id)
    if not path.is_file():
        raise CacheError(f"no features for video {video_id} in {cache.root}; is it `ok` in the manifest?")
    with h5py.File(path, "r") as f:
        _check_has_inputs(f, spec)
        return _read_inputs(f, spec, slice(None))


def _check_has_inputs(f: h5py.File, spec: InputSpec) -> None:
    needed = ([schema.H5_COLOR_HIST] if spec.color_inputs else []) + ([schema.H5_COLOR_GRID] if spec.grid_size else [])
    if any(key not in f for key in needed):
        raise CacheError(
            f"{f.filename} has no colour histogram or grid, which this model takes as inputs; "
            "re-extract the cache with this vtm (`vtm extract --rebuild`)"
        )


def _read_inputs(f: h5py.File, spec: InputSpec, span: slice) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs and timestamps of the samples `span` of one open features file."""
    hist = f[schema.H5_COLOR_HIST][span] if spec.color_inputs else None
    grid = f[schema.H5_COLOR_GRID][span] if spec.grid_size else None
    return frame_inputs(spec, f[schema.H5_FEATURES][span], hist, grid), f[schema.H5_TIMESTAMPS][span]


class WindowReader:
    def __init__(self, cache: FeatureCache, length: int, spec: InputSpec):
        self.cache = cache
        self.length = length
        self.spec = spec
        self._files: OrderedDict[str, h5py.File] = OrderedDict()
        self._loaded: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # video id -> (inputs, timestamps)

    def _file(self, video_id: str) -> h5py.File:
        f = self._files.pop(video_id, None)
        if f is None:
            f = h5py.File(self.cache.features_path(video_id), "r")
            try:
                _check_has_inputs(f, self.spec)
            except CacheError:
                f.close()
                raise
            if len(self._files) >= MAX_OPEN_FILES:
                self._files.popitem(last=False)[1].close()
        self._files[video_id] = f
        return f

    def num_frames(self, video_id: str) -> int:
        return self._file(video_id)[schema.H5_TIMESTAMPS].shape[0]

    def timestamps(self, video_id: str) -> np.ndarray:
        return self._file(video_id)[schema.H5_TIMESTAMPS][:]

    def load(self, video_ids: Iterable[str]) -> None:
        """Hold these videos' inputs in memory: their windows are sliced from there instead of read from HDF5."""
        for v in video_ids:
            if v not in self._loaded:
                self._loaded[v] = read_model_inputs(self.cache, v, self.spec)

    def read(self, video_id: str, start: int, length: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inputs (L, D) float32, timestamps (L,), mask (L,) bool) of L = `length` (default: the reader's)
        frames from `start`, zero-padded past the video's end."""
        length = length or self.length
        span = slice(start, start + length)
        if video_id in self._loaded:
            inputs, times = self._loaded[video_id]
            feats, times = inputs[span], times[span]
        else:
            feats, times = _read_inputs(self._file(video_id), self.spec, span)
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
        return {**self.__dict__, "_files": OrderedDict()}
