"""Model inputs from cached arrays (vtm.cache.windows): one layout, and the same inputs however they are read."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import pytest

from vtm.cache import schema
from vtm.cache.store import CacheError, CacheSettings, FeatureCache
from vtm.cache.windows import WindowReader, frame_inputs, input_parts, read_model_inputs
from vtm.stages.decode import frame_statistics

FEATURE_DIM = 8
SETTINGS = CacheSettings(
    encoder="tiny",
    weights="random",
    weights_digest="abc",
    pretrained=False,
    feature_dim=FEATURE_DIM,
    sample_fps=3.0,
    image_size=32,
    max_frames=None,
)
SCORES = ("change_score", "feature_change", "color_change", "local_change")


@dataclass(frozen=True)
class Spec:
    color_inputs: bool
    grid_size: int


SPECS = [Spec(True, 8), Spec(False, 4), Spec(True, 0), Spec(False, 0)]


def _decoded(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features and the decoder's colour statistics of n random frames."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    hist, grid = frame_statistics(frames)
    return rng.normal(size=(n, FEATURE_DIM)).astype(np.float32), hist, grid


def _cache(tmp_path, n: int = 20, colours: bool = True) -> tuple[FeatureCache, tuple]:
    cache = FeatureCache.create(tmp_path / "cache", SETTINGS)
    feats, hist, grid = _decoded(n)
    scores = {k: np.zeros(n, np.float32) for k in SCORES}
    stats = {"color_hist": hist, "color_grid": grid} if colours else {}
    cache.write_video("v1", feats, np.arange(n) / 3.0, np.arange(n), scores, **stats)
    return cache, (feats, hist, grid)


@pytest.mark.parametrize("spec", SPECS)
def test_input_parts_describe_what_frame_inputs_builds(spec):
    feats, hist, grid = _decoded(5)
    assert hist.shape[1] == schema.COLOR_HIST_DIM and grid.shape[1:] == (schema.GRID, schema.GRID, 3)
    inputs = frame_inputs(spec, feats, hist, grid)
    parts = input_parts(spec, FEATURE_DIM)
    assert inputs.shape == (5, sum(parts)) and inputs.dtype == np.float32
    edges = np.cumsum((0,) + parts)
    np.testing.assert_array_equal(inputs[:, : edges[1]], feats.astype(np.float16).astype(np.float32))
    if spec.color_inputs:
        np.testing.assert_array_equal(inputs[:, edges[1] : edges[2]], hist.astype(np.float16).astype(np.float32))
    if spec.grid_size:  # pooled colours scaled to 0..1
        assert 0 <= inputs[:, edges[-2] :].min() and inputs[:, edges[-2] :].max() <= 1


@pytest.mark.parametrize("spec", SPECS)
def test_windows_from_memory_equal_windows_read_from_hdf5_and_the_whole_video(tmp_path, spec):
    n = 20
    cache, (feats, hist, grid) = _cache(tmp_path, n)
    whole, ts = read_model_inputs(cache, "v1", spec)
    np.testing.assert_array_equal(whole, frame_inputs(spec, feats, hist, grid))
    from_disk = WindowReader(cache, 8, spec)
    in_memory = WindowReader(cache, 8, spec)
    in_memory.load(["v1"])
    for start, length in ((0, None), (5, None), (n - 3, None), (n + 2, None), (3, 12)):  # the last two: padded
        a, b = from_disk.read("v1", start, length), in_memory.read("v1", start, length)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        inputs, times, mask = a
        m = int(mask.sum())
        assert m == max(0, min(length or 8, n - start))
        np.testing.assert_array_equal(inputs[:m], whole[start : start + m])
        np.testing.assert_array_equal(times[:m], ts[start : start + m])
        assert not inputs[m:].any()
    copy = pickle.loads(pickle.dumps(in_memory))  # what a DataLoader worker started by spawn gets
    np.testing.assert_array_equal(copy.read("v1", 4)[0], from_disk.read("v1", 4)[0])
    from_disk.close()


def test_a_cache_without_colour_statistics_is_refused_by_every_reader_with_what_to_do(tmp_path):
    cache, _ = _cache(tmp_path, colours=False)
    spec = Spec(True, 8)
    reader = WindowReader(cache, 8, spec)
    for read in (
        lambda: read_model_inputs(cache, "v1", spec),
        lambda: reader.read("v1", 0),
        lambda: reader.load(["v1"]),
    ):
        with pytest.raises(CacheError, match=r"v1\.h5 has no colour histogram.*vtm extract --rebuild"):
            read()
    inputs, _, _ = WindowReader(cache, 8, Spec(False, 0)).read("v1", 0)  # features alone need no colours
    assert inputs.shape == (8, FEATURE_DIM)
    with pytest.raises(CacheError, match="no features for video v2"):
        read_model_inputs(cache, "v2", spec)
