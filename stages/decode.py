"""Decode sampled frames of one video: probe it, plan which frames to sample, decode them.

Sampling is by presentation timestamps, not frame counts, so it is right for 25, 30, 29.97 fps and
variable-frame-rate files alike: for each target time k/fps we take the frame on screen at that
time. decord is the fast path; PyAV is the fallback for files decord cannot open, and the source of
clear error messages and rotation metadata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vtm.stages.base import Resources

GRID = 16  # cells per side of the local-change grid
HIST_BINS = 4  # per colour channel; 4**3 joint RGB bins


class DecodeError(RuntimeError):
    """This one video cannot be decoded; the message is the reason recorded in the manifest."""


@dataclass
class VideoPlan:
    """What a probe learned about a video and which of its frames to sample."""

    duration_s: float
    native_fps: float
    width: int  # as displayed (after rotation)
    height: int
    rotation: int  # display rotation, degrees counter-clockwise (decord applies it; PyAV needs it applied)
    n_frames: int
    decoder: str  # "decord" or "pyav"
    frame_index: np.ndarray = field(repr=False)  # sampled frames, indices into presentation order
    timestamps: np.ndarray = field(repr=False)  # their presentation times, seconds


def sample_by_time(pts: np.ndarray, fps: float, max_frames: int | None = None) -> np.ndarray:
    """Indices of the frames on screen at times 0, 1/fps, 2/fps, ..., and of the last frame (each frame at most once)."""
    if len(pts) == 0:
        return np.zeros(0, np.int64)
    start = pts[0]
    targets = start + np.arange(0.0, pts[-1] - start + 1e-6, 1.0 / fps)
    # The frame shown at time t is the last one whose timestamp is <= t (small slack for rounding).
    idx = np.searchsorted(pts, targets + 1e-4, side="right") - 1
    # The last frame too: without it a cut in the last 1/fps seconds of a video is never seen.
    idx = np.unique(np.clip(np.append(idx, len(pts) - 1), 0, len(pts) - 1))
    if max_frames is not None:
        idx = idx[:max_frames]
    return idx.astype(np.int64)


def _pyav_open(path: Path):
    import av

    try:
        container = av.open(str(path))
    except Exception as e:  # noqa: BLE001 - any failure to open is this video's reason
        with open(path, "rb") as f:
            head = f.read(12)
        if head[4:8] == b"ftyp":  # an MP4/MOV box header: the file started out as a real video
            raise DecodeError("truncated or incompletely written MP4/MOV: its index (moov atom) is missing") from e
        raise DecodeError(f"cannot open as a video ({_short(e)}): not a video file, or corrupted") from e
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        container.close()
        raise DecodeError(f"no video stream (file has: {', '.join(kinds)}); audio-only or not a video")
    return container


def _short(e: Exception) -> str:
    """The decoder's own words, without errno numbers or the file path (the manifest has the path)."""
    msg = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
    return str(msg)[:200]


def _pyav_timestamps(path: Path) -> np.ndarray:
    """Presentation times of every frame, from packets (no decoding)."""
    container = _pyav_open(path)
    with container:
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
    return np.sort(np.asarray(pts, np.float64)) * tb


def _pyav_first_frame(path: Path) -> tuple[int, int, int, float | None]:
    """Rotation, stored width and height from the first frame; and the duration the file declares."""
    container = _pyav_open(path)
    with container:
        stream = container.streams.video[0]
        if stream.duration is not None:
            declared = float(stream.duration * stream.time_base)
        elif container.duration is not None and len(container.streams) == 1:
            declared = container.duration / 1e6  # only trust the container's length if it is all video
        else:
            declared = None
        try:
            frame = next(container.decode(video=0))
        except (StopIteration, Exception) as e:  # noqa: BLE001
            raise DecodeError(f"no decodable video frame ({_short(e) if not isinstance(e, StopIteration) else 'stream is empty'})") from e
        rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
        return rotation, frame.width, frame.height, declared


def probe(path: Path, fps: float, max_frames: int | None = None) -> VideoPlan:
    """Open a video, read its timestamps and plan the sampled frames. Raises DecodeError."""
    path = Path(path)
    if path.is_dir():
        raise DecodeError("is a directory, not a video file")
    if not path.is_file():
        raise DecodeError("file not found (moved or deleted since discovery?)")
    if os.path.getsize(path) == 0:
        raise DecodeError("empty file (0 bytes)")
    rotation, w, h, declared = _pyav_first_frame(path)
    if rotation % 90:
        rotation = 0  # only right angles are meaningful for display; ignore odd matrices
    decoder = "decord"
    try:
        import decord

        vr = decord.VideoReader(str(path), num_threads=1)
        n = len(vr)
        pts = vr.get_frame_timestamp(np.arange(n))[:, 0].astype(np.float64) if n else np.zeros(0)
        del vr
    except Exception:  # noqa: BLE001 - decord cannot read this file; PyAV may
        decoder = "pyav"
        pts = _pyav_timestamps(path)
        n = len(pts)
    if n == 0:
        raise DecodeError("no video frames in the stream")
    if n < 2:
        raise DecodeError("only 1 frame: a still image, not a video (need at least 2 frames to score changes)")
    if not np.all(np.isfinite(pts)) or np.any(np.diff(pts) < 0):
        pts = np.sort(np.nan_to_num(pts))
    frame_dur = (pts[-1] - pts[0]) / (n - 1)
    if declared and pts[-1] + frame_dur < declared - max(1.0, 0.05 * declared):
        raise DecodeError(f"truncated: the file declares {declared:.1f} s of video but its frames stop at {pts[-1] + frame_dur:.1f} s")
    idx = sample_by_time(pts, fps, max_frames)
    if len(idx) < 2:
        raise DecodeError(f"too short: {n} frames over {pts[-1] - pts[0]:.2f} s give fewer than 2 samples at {fps} fps")
    if rotation in (90, 270):
        w, h = h, w
    return VideoPlan(
        duration_s=float(pts[-1] - pts[0] + frame_dur),
        native_fps=1.0 / frame_dur,  # the mean rate: right for VFR, where the nominal rate is a tick rate
        width=w,
        height=h,
        rotation=rotation,
        n_frames=n,
        decoder=decoder,
        frame_index=idx,
        timestamps=pts[idx],
    )


def _decode_decord(path: Path, frame_index: np.ndarray, size: int) -> np.ndarray:
    """decord applies the display rotation itself; frames come out as a player shows them."""
    import decord

    vr = decord.VideoReader(str(path), width=size, height=size, num_threads=1)
    return vr.get_batch(list(map(int, frame_index))).asnumpy()


def _decode_pyav(path: Path, frame_index: np.ndarray, size: int, rotation: int) -> np.ndarray:
    """Decode the wanted frames by presentation order, seeking to the first one.

    Unlike decord, PyAV does not apply the display rotation, so it is applied here.
    """
    pts_all = _pyav_timestamps(path)
    container = _pyav_open(path)
    wanted = {round(float(pts_all[i]), 6): k for k, i in enumerate(frame_index)}
    out = np.zeros((len(frame_index), size, size, 3), np.uint8)
    found = 0
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        first = float(pts_all[frame_index[0]])
        container.seek(int(first / float(stream.time_base)), stream=stream, backward=True)
        last = float(pts_all[frame_index[-1]])
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            k = wanted.get(round(float(frame.pts * stream.time_base), 6))
            if k is not None:
                out[k] = frame.to_ndarray(format="rgb24", width=size, height=size)
                found += 1
            if frame.time > last + 1e-6 or found == len(frame_index):
                break
    if found < len(frame_index):
        raise DecodeError(f"decoded {found} of {len(frame_index)} wanted frames: the file is truncated or corrupted")
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(out, k=k, axes=(1, 2))) if k else out


def frame_statistics(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour histogram (n, 64) and a coarse colour grid (n, GRID, GRID, 3) per frame.

    Both are cheap and computed where the pixels already are (the decode worker), so that the
    change score never needs the frames again.
    """
    n, h, w, _ = frames.shape
    q = (frames >> (8 - 2)).astype(np.int64)  # 4 levels per channel
    codes = (q[..., 0] * HIST_BINS + q[..., 1]) * HIST_BINS + q[..., 2]
    codes = codes.reshape(n, -1) + (np.arange(n) * HIST_BINS**3)[:, None]
    hist = np.bincount(codes.ravel(), minlength=n * HIST_BINS**3).reshape(n, -1).astype(np.float32)
    hist /= h * w
    gh, gw = h // GRID, w // GRID
    grid = frames[:, : gh * GRID, : gw * GRID].reshape(n, GRID, gh, GRID, gw, 3).mean(axis=(2, 4), dtype=np.float32)
    return hist, grid.astype(np.float32)


@dataclass
class ProbeStage:
    """Batch {path} -> the same batch with the video's plan (see `probe`). Raises DecodeError."""

    fps: float = 3.0
    max_frames: int | None = None
    resources: Resources = Resources(cpus=1)

    def setup(self) -> None:
        pass

    def __call__(self, batch: dict) -> dict:
        return {**batch, "plan": probe(Path(batch["path"]), self.fps, self.max_frames)}


@dataclass
class DecodeStage:
    """Batch {path, frame_index, rotation, decoder} -> frames resized to image_size² plus statistics."""

    image_size: int = 224
    resources: Resources = Resources(cpus=1)

    def setup(self) -> None:
        pass  # nothing heavy: decoders are opened per video

    def __call__(self, batch: dict) -> dict:
        path = Path(batch["path"])
        frame_index = np.asarray(batch["frame_index"], np.int64)
        rotation = int(batch.get("rotation", 0))
        frames = None
        if batch.get("decoder", "decord") == "decord":
            try:
                frames = _decode_decord(path, frame_index, self.image_size)
            except Exception:  # noqa: BLE001 - fall back to the plain decoder below
                frames = None
        if frames is None:
            frames = _decode_pyav(path, frame_index, self.image_size, rotation)
        hist, grid = frame_statistics(frames)
        return {**batch, "frames": frames, "hist": hist, "grid": grid}
