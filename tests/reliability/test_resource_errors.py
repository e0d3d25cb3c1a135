"""Defect 5: a full disk ended extract in a segfault after a screen of h5py tracebacks; a read-only
cache gave a traceback even with nothing to do."""

from __future__ import annotations

import errno
import os

import pytest

from vtm.cache.store import CacheSettings, FeatureCache
from vtm.pipeline.disk_errors import explain_os_error

from .conftest import run_python, write_video

SETTINGS = CacheSettings(
    encoder="tiny",
    weights="random",
    weights_digest="abc",
    pretrained=False,
    feature_dim=8,
    sample_fps=3.0,
    image_size=32,
    max_frames=None,
)


def test_a_full_disk_stops_the_hdf5_write_cleanly(tiny_disk):
    # In a child process: a segfault there fails this test instead of ending the test run.
    code = f"""
import errno, numpy as np
from vtm.cache.store import CacheSettings, FeatureCache
cache = FeatureCache.create({str(tiny_disk / "cache")!r}, CacheSettings(**{SETTINGS.__dict__!r}))
scores = lambda n: {{k: np.zeros(n, np.float32) for k in ("change_score", "feature_change", "color_change",
"local_change")}}
cache.write_video("{"a" * 16}", np.ones((4, 8), np.float32), np.arange(4.0), np.arange(4), scores(4))
n = 40_000  # ~640 KB of float16 features: more than the disk holds
try:
    cache.write_video("{"b" * 16}", np.ones((n, 8), np.float32), np.arange(float(n)), np.arange(n), scores(n))
except OSError as e:
    print("OSError", e.errno)
"""
    done = run_python(code)
    assert done.returncode == 0, f"rc {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.split() == ["OSError", str(errno.ENOSPC)]
    cache = FeatureCache.open(tiny_disk / "cache")
    assert cache.has_video("a" * 16) and not cache.has_video("b" * 16)  # what was written stays; nothing half-written
    assert len(cache.read_features("a" * 16)[0]) == 4
    assert not [p for p in (tiny_disk / "cache").rglob("*") if ".tmp-" in p.name]


def test_extract_on_a_full_disk_says_so_in_one_line(tiny_disk, tmp_path, ray_local):
    from click.testing import CliRunner

    from vtm.pipeline.cli import main

    write_video(tmp_path / "videos" / "a.mp4", seconds=2)
    cache_dir = tiny_disk / "cache"
    filler = tiny_disk / "filler"
    with open(filler, "wb") as f:  # leave ~24 KiB: room for cache.json and the manifest, not for the features
        f.write(b"\0" * (os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize - 24 * 1024))
    result = CliRunner().invoke(main, ["extract", str(tmp_path / "videos"), "--cache", str(cache_dir), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a traceback
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device at" in errors[0] and str(cache_dir) in errors[0], (
        result.output
    )
    assert "free some space" in errors[0]
    FeatureCache.open(cache_dir)  # the cache is intact
    assert not [p for p in cache_dir.rglob("*") if ".tmp-" in p.name]


def test_a_read_only_cache_says_so_in_one_line(tmp_path, read_only_view):
    from click.testing import CliRunner

    from vtm.pipeline.cli import main

    FeatureCache.create(tmp_path / "cache", SETTINGS, dataset_root=tmp_path / "videos")
    (tmp_path / "videos").mkdir()
    view = read_only_view(tmp_path / "cache")
    result = CliRunner().invoke(main, ["extract", str(tmp_path / "videos"), "--cache", str(view), "--no-progress"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.startswith("error: the file system is read-only at ") or result.output.startswith(
        "error: permission denied at "
    ), result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "err, words",
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/c/features/x.h5.tmp-0a1b2c3d"),
            "no space left on the device at /c/features/x.h5:",
        ),
        (OSError(errno.EACCES, "Permission denied", "/c/cache.json"), "permission denied at /c/cache.json:"),
        (OSError("IOError: No space left on device"), "no space left on the device:"),  # pyarrow's OSError has no errno
    ],
)
def test_resource_errors_say_what_where_and_what_to_do(err, words):
    text = explain_os_error(err)
    assert text.startswith(words) and "run the same command again" in text and "\n" not in text
