"""Fixtures for the reliability probes: small generated videos, a broken one, a tiny full disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest


def write_video(path: Path, seconds: float = 4.0, fps: int = 25, size: tuple[int, int] = (160, 120)) -> Path:
    """An H.264 MP4 with a moving bar and a keyframe every second."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"g": str(fps)}
        for i in range(int(seconds * fps)):
            img = np.zeros((h, w, 3), np.uint8)
            x = (i * 3) % (w - 20)
            img[:, x : x + 20] = 255
            img[..., 1] = i % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def corrupt_middle(path: Path, start: float = 0.35, end: float = 0.65) -> Path:
    """Overwrite that share of the file's bytes with noise: the frames before and after still decode."""
    data = bytearray(path.read_bytes())
    a, b = int(len(data) * start), int(len(data) * end)
    data[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def tiny_disk():
    """A 256 KiB tmpfs: a real full disk. Needs root (mount); skipped otherwise."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mount = Path(f"/tmp/vtm-full-disk-{uuid.uuid4().hex[:8]}")
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)
    mount.rmdir()


@pytest.fixture
def read_only_view(tmp_path):
    """A function: a read-only view of a folder (a read-only bind mount as root, else chmod)."""
    mounts = []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            for p in [folder, *folder.rglob("*")]:
                p.chmod(p.stat().st_mode & ~0o222)
            return folder
        view = tmp_path / f"ro-{uuid.uuid4().hex[:6]}"
        view.mkdir()
        for args in (["mount", "--bind", str(folder), str(view)], ["mount", "-o", "remount,bind,ro", str(view)]):
            done = subprocess.run(args, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot make a read-only bind mount here: {done.stderr.strip()}")
            if view not in mounts:
                mounts.append(view)
        return view

    yield make
    for view in mounts:
        subprocess.run(["umount", str(view)], check=True)


def run_python(code: str, obey_permissions: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter of this venv. With `obey_permissions`, a root user loses the
    capabilities that let root read any file (so a folder with mode 000 cannot be listed, as for anyone else)."""
    prefix = []
    if obey_permissions and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("as root every folder is readable, and setpriv (util-linux) is not here to drop that")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    return subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def messy_extract(tmp_path_factory, ray_local):
    """`vtm extract` run once on an archive with a good video, a partly corrupt one, a broken link and a
    folder link looping back: (click result, archive, cache folder)."""
    from click.testing import CliRunner

    from vtm.pipeline.cli import main

    base = tmp_path_factory.mktemp("messy")
    root = base / "videos"
    write_video(root / "good.mp4", seconds=2)
    corrupt_middle(write_video(root / "damaged.mp4", seconds=10))
    (root / "gone.mp4").symlink_to(root / "nowhere.mp4")
    (root / "loop").symlink_to(root)
    result = CliRunner().invoke(main, ["extract", str(root), "--cache", str(base / "cache"), "--no-progress"])
    return result, root, base / "cache"
