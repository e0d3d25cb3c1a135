"""The trigger timeline PNG: a real PNG of the asked size, written atomically, drawn for empty inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vtm.ui.plots import format_mmss, timeline_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _curve(n: int = 200, step: float = 0.5):
    t = np.arange(n) * step
    return t, 0.5 + 0.45 * np.sin(t / 7.0)


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("width_px", [1000, 640])
def test_png_of_expected_size(width_px):
    t, s = _curve()
    data = timeline_png(None, t, s, 0.5, [12.0, 40.5], [0.9, 0.8], title="clips/a.mp4", width_px=width_px)
    assert data.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(data))
    assert abs(image.width - width_px) <= 2
    assert abs(image.height - 260) <= 2


def test_written_atomically_when_path_given(tmp_path):
    t, s = _curve()
    target = tmp_path / "out" / "a.timeline.png"
    data = timeline_png(target, t, s, 0.5, [3.0], [0.7])
    assert target.read_bytes() == data
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.timeline.png"]


def test_zero_triggers_and_zero_samples():
    t, s = _curve()
    for data in (timeline_png(None, t, s, 0.5, [], []), timeline_png(None, [], [], 0.5, [], [], title="empty.mp4")):
        assert data.startswith(PNG_SIGNATURE)
        assert abs(Image.open(io.BytesIO(data)).width - 1000) <= 2


def test_triggers_change_the_picture():
    t, s = _curve()
    bare = _pixels(timeline_png(None, t, s, 0.5, [], []))
    marked = _pixels(timeline_png(None, t, s, 0.5, [30.0, 10.0], [0.9, 0.6]))
    assert bare.shape == marked.shape
    assert (bare != marked).any(axis=-1).sum() > 50


def test_long_video_on_mm_ss_axis_and_unsorted_triggers():
    t = np.arange(0, 3600, 2.0)
    data = timeline_png(None, t, np.full(len(t), 0.2), 0.35, [2000.0, 100.0, 900.0], [0.5, 0.9, 0.4])
    assert data.startswith(PNG_SIGNATURE)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError):
        timeline_png(None, [0.0, 1.0], [0.5], 0.5, [], [])
    with pytest.raises(ValueError):
        timeline_png(None, [0.0], [0.5], 0.5, [0.0], [])


def test_format_mmss():
    assert format_mmss(12.0) == "0:12"
    assert format_mmss(754) == "12:34"
    assert format_mmss(3725) == "1:02:05"
