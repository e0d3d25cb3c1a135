"""The training data path on its own (no cache, no Ray): augmented batches and background loading."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from vtm.pipeline.config import TrainConfig
from vtm.pipeline.train import Prefetched, WindowDataset

LENGTH, FRAMES, PARTS = 16, 60, (6, 4, 3)  # features, histogram, grid


class MemoryReader:
    """A stand-in for WindowReader over in-memory inputs: row f of video v holds 1000 * (v + 1) + f in every column."""

    def __init__(self, n_videos: int):
        self.length = LENGTH
        self.spec = SimpleNamespace(input_parts=PARTS, grid_size=1)
        self.inputs = {
            f"v{v}": np.repeat(1000.0 * (v + 1) + np.arange(FRAMES)[:, None], sum(PARTS), 1) for v in range(n_videos)
        }

    def read(self, video_id: str, start: int, length: int | None = None):
        length = length or self.length
        rows = self.inputs[video_id][start : start + length]
        feats = np.zeros((length, sum(PARTS)), np.float32)
        feats[: len(rows)] = rows
        mask = np.arange(length) < len(rows)
        return feats, start + np.arange(length) / 3.0, mask


def _dataset(**augment) -> WindowDataset:
    reader = MemoryReader(14)  # one window per video, so a row's value tells which window it came from
    labels = {v: (np.arange(FRAMES) % 7 == 0).astype(np.int64) for v in reader.inputs}
    items = [(f"v{k}", start, "", 100 + k) for k, start in enumerate(range(0, 56, 4))]
    return WindowDataset(reader, labels, items, TrainConfig(**augment) if augment else None, sample_fps=3.0)


def test_plain_windows_are_the_cached_rows_and_past_the_end_is_masked():
    ds = _dataset()
    batch = ds.__getitems__(list(range(len(ds))))
    for b, (video, start, _, _) in enumerate(ds.items):
        n = min(LENGTH, FRAMES - start)
        assert batch["mask"][b].sum() == n
        np.testing.assert_array_equal(batch["features"][b, :n, 0], 1000.0 * (int(video[1:]) + 1) + start + np.arange(n))
        assert not batch["features"][b, n:].any() and not batch["labels"][b, n:].any()


def test_augmented_rows_come_from_the_windows_they_claim_and_masked_rows_are_empty():
    """Time scaling, splicing and crops only choose rows: every kept row is a cached row of the window's own video
    (in time order) or, after a splice, of another window's; masked rows and their labels are zero."""
    ds = _dataset(time_scale=1.5, mix_prob=0.5, crop_prob=0.5, feature_dropout=0.0, group_dropout=0.0)
    batch = ds.__getitems__(list(range(len(ds))))
    spliced = cropped = 0
    for b, (video, start, _, _) in enumerate(ds.items):
        mask, rows = batch["mask"][b], batch["features"][b, :, 0]
        assert not batch["features"][b][~mask].any() and not batch["labels"][b][~mask].any()
        video_of, frame_of = rows[mask] // 1000 - 1, rows[mask] % 1000
        own = video_of == int(video[1:])
        n_own = int(own.sum())
        assert own[:n_own].all()  # the window's own rows first, then (after a splice) another window's
        assert np.all(frame_of[:n_own] >= start) and np.all(np.diff(frame_of[:n_own]) >= 0)  # in time order
        assert len(set(video_of[n_own:])) <= 1 and np.all(np.diff(frame_of[n_own:]) == 1)
        spliced += n_own < len(own)
        cropped += not mask[-1] and start + LENGTH <= FRAMES
        expected = ds.labels[video][frame_of[:n_own].astype(int)]
        np.testing.assert_array_equal(batch["labels"][b][mask][:n_own], expected)
    assert spliced and cropped  # the draws above did splice and crop some windows


def test_dropout_hides_whole_columns_and_never_the_grid():
    ds = _dataset(feature_dropout=0.5, group_dropout=0.5, mix_prob=0.0, crop_prob=0.0, time_scale=1.0)
    batch = ds.__getitems__(list(range(len(ds))))
    for b in range(len(ds)):
        kept = batch["features"][b][batch["mask"][b]] != 0
        assert np.all(kept.all(0) | ~kept.any(0))  # a column is hidden in every row of the window or in none
        parts = np.split(kept.all(0), np.cumsum(PARTS)[:-1])
        assert any(p.any() for p in parts)  # one part is always left
        assert parts[2].all() or not parts[2].any()  # the grid is hidden as a part, never column by column
    dropped_alone = [
        not p.all() and p.any() for b in range(len(ds)) for p in [batch["features"][b, 0, : PARTS[0]] != 0]
    ]
    assert any(dropped_alone)  # feature dropout did hide single columns of some window


def test_batches_are_the_same_in_any_order_and_one_window_at_a_time():
    ds = _dataset(time_scale=1.5, mix_prob=0.5, crop_prob=0.5)
    whole = ds.__getitems__(list(range(len(ds))))
    for i in (0, 5, len(ds) - 1):
        one = ds[i]
        for key in ("features", "timestamps", "mask", "labels"):
            np.testing.assert_array_equal(one[key], whole[key][i])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_prefetched_yields_every_batch_and_raises_the_loaders_error_in_the_training_thread():
    assert list(Prefetched(iter(range(10)))) == list(range(10))

    def failing():
        yield 1
        raise OSError("features/v1.h5: unreadable")

    batches = Prefetched(failing())
    assert next(batches) == 1
    with pytest.raises(OSError, match="v1.h5"):
        next(batches)


def test_closing_prefetched_ends_its_thread_when_training_stops_early():
    def endless():
        while True:
            yield np.zeros(4)

    batches = Prefetched(endless(), depth=2)
    next(batches)
    batches.close()
    assert not any(t.name == "vtm-prefetch" and t.is_alive() for t in threading.enumerate())
