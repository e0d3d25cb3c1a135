"""Reading fixed-length windows of frames from the cache for training and re-scoring.

A window is `length` consecutive sampled frames of one video, read as an HDF5 slice: the file's
features are chunked along time, so a window costs a chunk read, never the whole video. Handles are
opened lazily per process (safe in DataLoader workers, which must not share an h5py handle).
"""

from __future__ import annotations

from collections import OrderedDict

import h5py
import numpy as np

from vtm.cache import schema
from vtm.cache.store import FeatureCache

MAX_OPEN_FILES = 64


COLOR_DIM = 64  # joint RGB histogram bins stored per frame


def read_model_inputs(cache: FeatureCache, video_id: str, color: bool) -> tuple[np.ndarray, np.ndarray]:
    """A whole video's model inputs (features, with the colour histogram appended if `color`) and timestamps."""
    feats, ts, _ = cache.read_features(video_id)
    feats = feats.astype(np.float32)
    if color:
        hist, _ = cache.read_color_stats(video_id)
        feats = np.concatenate([feats, hist.astype(np.float32)], axis=1)
    return feats, ts


class WindowReader:
    def __init__(self, cache: FeatureCache, length: int, color: bool = False):
        self.cache = cache
        self.length = length
        self.color = color
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

    def read(self, video_id: str, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features (L, D) float32, timestamps (L,), mask (L,) bool), zero-padded past the video's end."""
        f = self._file(video_id)
        feats = f[schema.H5_FEATURES][start : start + self.length]
        if self.color:
            feats = np.concatenate([feats.astype(np.float32), f[schema.H5_COLOR_HIST][start : start + self.length].astype(np.float32)], axis=1)
        times = f[schema.H5_TIMESTAMPS][start : start + self.length]
        m = len(times)
        out_f = np.zeros((self.length, feats.shape[1]), np.float32)
        out_t = np.full(self.length, times[-1] if m else 0.0, np.float64)
        mask = np.zeros(self.length, bool)
        out_f[:m], out_t[:m], mask[:m] = feats, times, True
        return out_f, out_t, mask

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __getstate__(self):  # a copy sent to a worker process opens its own handles
        return {"cache": self.cache, "length": self.length, "color": self.color, "_files": OrderedDict()}
