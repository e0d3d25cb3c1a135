"""Decode sampled frames of one video: probe it, plan which frames to sample, decode them.

Sampling is by presentation timestamps, not frame counts, so it is right for 25, 30, 29.97 fps and
variable-frame-rate files alike: for each target time k/fps we take the frame on screen at that
time. decord is the fast path; PyAV is the fallback for files decord cannot open, and the source of
clear error messages and rotation metadata. Videos in object storage (a URL instead of a path) are
streamed through PyAV (decord needs a local file), so no scratch copy is ever written.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vtm.cache.schema import COLOR_HIST_DIM, GRID, HIST_BINS
from vtm.cache.storage import StorageError, is_url, open_video, read_ranges, stat_object
from vtm.stages.base import Resources, Stage

HIST_BITS = HIST_BINS.bit_length() - 1  # bits kept of each 8-bit channel for the histogram
# A decoded frame's time this close to a planned frame's (decord's or the packets') is that frame.
_SAME_FRAME_S = 1e-4
# what NVDEC frames are in memory; a CPU decoder gives yuv420p & co
CUDA_DOWNLOAD_FORMATS = (
    "nv12",
    "p010le",
    "p016le",
)


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
    pts: np.ndarray | None = field(default=None, repr=False)  # presentation time of every frame, seconds

    def pts_around(self, frame_index: np.ndarray, since: int | None = None) -> tuple[np.ndarray, int]:
        """The times of the frames from one before the first of `frame_index` (or from frame `since`, the sample
        before them) to one after its last, and where they start.

        What a decode task needs to let a neighbour stand in for a wanted frame (see `_decode_nearest`); from
        `since`, it also sees every frame shown between that sample and its first (`frame_change_per_sample`).
        """
        start = max(int(frame_index[0]) - 1, 0)
        start = start if since is None else min(int(since), start)
        return self.pts[start : int(frame_index[-1]) + 2], start


def sample_by_time(pts: np.ndarray, fps: float, max_frames: int | None = None) -> np.ndarray:
    """Indices of the frames on screen at times 0, 1/fps, 2/fps, ..., and of the last frame (each at most once)."""
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


def _location(path) -> Path | str:
    """A local path as a Path; an object-storage URL unchanged."""
    return path if is_url(path) else Path(path)


# FFmpeg's stream probing (avformat_find_stream_info) decodes the first frames of every stream to learn what the
# container leaves open (for a 720p H.264 file that is its key frame: ~18 ms of CPU per open). Reading packets or a
# single frame needs none of it; decoding many frames does (the reorder delay it learns), so the decoders keep it.
_PROBE_WITHOUT_DECODING = {"skip_frame": "all"}


def _pyav_open(path: Path | str, options: dict | None = None):
    import av

    try:
        container = av.open(open_video(path) if is_url(path) else str(path), options=options)
    except StorageError:
        raise  # the store's own reason (denied, missing, connection lost) says more than the demuxer's
    except Exception as e:  # noqa: BLE001 - any failure to open is this video's reason
        if is_url(path):
            head = read_ranges(path, [(0, 12)])[0]
        else:
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
    container = _pyav_open(path, _PROBE_WITHOUT_DECODING)
    with container:
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
    return np.sort(np.asarray(pts, np.float64)) * tb


def _pyav_first_frame(path: Path) -> tuple[int, int, int, float | None]:
    """Rotation, stored width and height from the first frame; and the duration the file declares."""
    container = _pyav_open(path, _PROBE_WITHOUT_DECODING)
    with container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # one frame: decoder threads would only cost their start-up
        if stream.duration is not None:
            declared = float(stream.duration * stream.time_base)
        elif container.duration is not None and len(container.streams) == 1:
            declared = container.duration / 1e6  # only trust the container's length if it is all video
        else:
            declared = None
        try:
            frame = next(container.decode(video=0))
        except StorageError:
            raise
        except (StopIteration, Exception) as e:  # noqa: BLE001
            raise DecodeError(
                f"no decodable video frame ({_short(e) if not isinstance(e, StopIteration) else 'stream is empty'})"
            ) from e
        rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
        return rotation, frame.width, frame.height, declared


def probe(path: Path | str, fps: float, max_frames: int | None = None) -> VideoPlan:
    """Open a video (a path or an object-storage URL), read its timestamps and plan the sampled frames.

    Raises DecodeError, or StorageError for an object that cannot be read."""
    path = _location(path)
    if is_url(path):
        size = stat_object(path).size_bytes
    elif path.is_dir():
        raise DecodeError("is a directory, not a video file")
    elif not path.is_file():
        raise DecodeError("file not found (moved or deleted since discovery?)")
    else:
        size = os.path.getsize(path)
    if size == 0:
        raise DecodeError("empty file (0 bytes)")
    if not is_url(path) and not os.access(path, os.R_OK):
        raise DecodeError("permission denied: this file cannot be read; fix its permissions and run again")
    rotation, w, h, declared = _pyav_first_frame(path)
    if rotation % 90:
        rotation = 0  # only right angles are meaningful for display; ignore odd matrices
    decoder = "decord"
    try:
        if is_url(path):
            raise StorageError("decord reads local files only")  # streamed objects go to PyAV below
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
        raise DecodeError(
            f"truncated: the file declares {declared:.1f} s of video but its frames stop at {pts[-1] + frame_dur:.1f} s"
        )
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
        pts=pts,
    )


def _decode_decord(path: Path, frame_index: np.ndarray, size: int) -> np.ndarray:
    """decord applies the display rotation itself; frames come out as a player shows them."""
    import decord

    vr = decord.VideoReader(str(path), width=size, height=size, num_threads=1)
    return vr.get_batch(list(map(int, frame_index))).asnumpy()


def _decode_pyav(path: Path, frame_index: np.ndarray, size: int, rotation: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode the wanted frames by presentation order, seeking to the first one; also which of them decoded.

    A packet the decoder rejects (corrupt data) is skipped, so a partly damaged file keeps every frame
    that still decodes; the wanted frames that never come are False in the mask (the caller decides
    whether what is left is enough). Unlike decord, PyAV
    does not apply the display rotation, so it is applied here.
    """
    import av

    pts_all = _pyav_timestamps(path)
    container = _pyav_open(path)
    wanted = {round(float(pts_all[i]), 6): k for k, i in enumerate(frame_index)}
    out = np.zeros((len(frame_index), size, size, 3), np.uint8)
    decoded = np.zeros(len(frame_index), bool)
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        first = float(pts_all[frame_index[0]])
        container.seek(int(first / float(stream.time_base)), stream=stream, backward=True)
        last = float(pts_all[frame_index[-1]])
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue  # corrupt data: the frames it held are lost, the rest of the file is still read
            for frame in frames:
                if frame.time is None:
                    continue
                k = wanted.get(round(float(frame.pts * stream.time_base), 6))
                if k is not None:
                    out[k] = frame.to_ndarray(format="rgb24", width=size, height=size)
                    decoded[k] = True
            if (frames and frames[-1].time is not None and frames[-1].time > last + 1e-6) or decoded.all():
                break
    k = (rotation // 90) % 4
    return (np.ascontiguousarray(np.rot90(out, k=k, axes=(1, 2))) if k else out), decoded


def lost_time_ranges(timestamps: np.ndarray, decoded: np.ndarray, fps: float) -> list[tuple[float, float]]:
    """The stretches of time (start, end in seconds) whose sampled frames did not decode."""
    ranges: list[tuple[float, float]] = []
    for i in np.flatnonzero(~np.asarray(decoded, bool)):
        # a lost sample stands for the time until the next sample
        start, end = (
            float(timestamps[i]),
            float(timestamps[i + 1]) if i + 1 < len(timestamps) else float(timestamps[i]) + 1.0 / fps,
        )
        if ranges and start <= ranges[-1][1] + 1e-6:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
    return ranges


def partial_decode_warning(timestamps: np.ndarray, decoded: np.ndarray, fps: float) -> str:
    """In words, for the manifest and the people reading it: what of a partly decoded video was lost.
    Raises DecodeError when fewer than two sampled frames decoded: too little to keep."""
    if decoded.sum() < 2:
        raise DecodeError(f"only {int(decoded.sum())} of {len(decoded)} sampled frames decoded: the file is corrupted")
    lost = lost_time_ranges(timestamps, decoded, fps)
    spans = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in lost)
    return (
        f"partly decoded: {int((~decoded).sum())} of {len(decoded)} sampled frames could not be decoded "
        f"(corrupt data), lost {spans}; the rest is kept"
    )


_cuda_device = None  # this process's CUDA device context, held so that every video reuses it (False: none here)


def cuda_decoding_built() -> bool:
    """Whether this PyAV's FFmpeg can decode on CUDA at all (no GPU is touched; `cuda_hwaccel` finds out if one is
    usable)."""
    from av.codec.hwaccel import hwdevices_available

    return "cuda" in hwdevices_available()


def cuda_hwaccel():
    """PyAV's CUDA hardware decoding (NVDEC) where this FFmpeg build and process have a GPU, else None.

    Frames decoded on the GPU are copied to memory by PyAV; a stream the GPU cannot decode is
    decoded on the CPU (software fallback). The first call opens the GPU's primary context and keeps
    it for the life of the process, so a video does not pay for a new CUDA context.
    """
    global _cuda_device
    import av
    from av.codec.hwaccel import HWAccel

    if _cuda_device is None:
        _cuda_device = False
        if cuda_decoding_built():
            try:
                _cuda_device = HWAccel("cuda", options={"primary_ctx": "1"}).create(av.Codec("h264", "r"))
            except (av.FFmpegError, NotImplementedError):
                pass  # no usable GPU in this process (none, or Ray gave this worker none)
    return HWAccel("cuda", allow_software_fallback=True, options={"primary_ctx": "1"}) if _cuda_device else None


@dataclass(frozen=True)
class X264Stream:
    """What `_x264_stream` learned of a progressive x264 stream in AVCC packets."""

    length_size: int  # bytes of each NAL unit's length prefix
    single_reference: bool  # `ref=1`: no frame a sample takes depends on a B-frame it does not take


def _x264_stream(container, stream) -> X264Stream | None:
    """The NAL length size of a progressive x264 stream in AVCC packets (MP4, Matroska), whose NAL headers are read
    directly, and whether no frame a sample takes depends on a B-frame it does not take, or on one that stood in a
    reference list beside it; None for any other stream.

    Known from the settings x264 writes as text into the first frame. x264 also writes the reorder delay into
    the SPS, so such a stream decodes without FFmpeg's probing decode of its key frame (see
    `_PROBE_WITHOUT_DECODING`). With `ref=1` each reference list holds the one nearest reference frame (x264's
    `reference_build_list` sorts by distance, then keeps `ref` of them), and a B-frame lies between two
    I/P-frames in display order, so an I/P-frame never predicts from a B-frame, and a reference B-frame
    (b-pyramid) predicts only from the I/P-frames beside it. Reads the first packet: the caller seeks afterwards.
    """
    extradata = stream.codec_context.extradata or b""
    if stream.codec_context.name != "h264" or len(extradata) < 5 or extradata[0] != 1:
        return None
    first = next(iter(container.demux(stream)), None)
    data = bytes(first) if first is not None else b""
    start = data.find(b"x264 - core ")
    if start < 0:
        return None
    end = data.find(b"\x00", start)
    settings = set(data[start : end if end > 0 else len(data)].split(b" options: ", 1)[-1].split())
    if b"interlaced=0" not in settings:
        return None
    return X264Stream(length_size=(extradata[4] & 3) + 1, single_reference=b"ref=1" in settings)


def _nal_ref_idc(data: bytes, length_size: int) -> int | None:
    """The nal_ref_idc of the first slice in an AVCC packet (0: no frame predicts from it); None if it has none."""
    pos = 0
    while pos + length_size < len(data):
        size = int.from_bytes(data[pos : pos + length_size], "big")
        header = data[pos + length_size]
        if header & 0x1F in (1, 5):  # a slice of a picture, an IDR picture
            return header >> 5
        pos += length_size + size
    return None


def _b_frames_to_skip(packets: list, frame_of, slot: dict, length_size: int) -> tuple[set[int], set[int]]:
    """In a stream with `X264Stream.single_reference`: the packets (positions in `packets`, decode order) whose
    B-frames no sample needs, and the frames that may then decode wrongly (no sample may take them).

    With non-reference frames skipped, a sample takes its decoded frame of best preference in `slot` (see
    `_decode_nearest`). A reference B-frame a sample takes also needs the B-frames of the group before its own
    decoded (of the one before that where that group has none): a group is an I/P-frame with the B-frames
    decoded after it (displayed before it), and when a group's reference B-frame is skipped, FFmpeg fills the
    gap in frame numbers with a copy of the group's I/P-frame, numbered as if shown right after it, so that
    copy, not the next I/P-frame, could head the next group's reference list. `frame_of(pts)` is a packet's
    frame index, None where the plan does not know its time.
    """
    groups: list[tuple[int, list[int]]] = []  # (position of the I/P-frame, positions of its B-frames)
    latest = None
    for pos, packet in enumerate(packets):
        if latest is None or packet.pts > latest:
            groups.append((pos, []))
            latest = packet.pts
        else:
            groups[-1][1].append(pos)
    frame = [frame_of(p.pts) for p in packets]
    b_positions = {pos for _, bs in groups for pos in bs}
    decodable = {
        frame[pos]
        for pos, packet in enumerate(packets)
        if pos not in b_positions or _nal_ref_idc(bytes(packet), length_size) != 0
    }
    best: dict[int, tuple[int, int]] = {}  # wanted position -> (preference, frame index)
    for j in decodable:
        if j in slot and (slot[j][0] not in best or slot[j][1] < best[slot[j][0]][0]):
            best[slot[j][0]] = (slot[j][1], j)
    taken = {j for _, j in best.values()}

    def before(g: int) -> list[int]:  # the B-frames whose skipping could head group g's reference lists
        if g == 0:
            return []
        if groups[g - 1][1] or g == 1:
            return groups[g - 1][1]
        # An I/P-frame right after the one before it: the copy filling the gap is numbered as if shown right
        # after that earlier one, the same as this I/P-frame.
        return groups[g - 2][1]

    keep: set[int] = set()
    for g, (_, bs) in enumerate(groups):
        if any(frame[pos] in taken for pos in bs):
            keep.update(bs)
            keep.update(before(g))
    skip = b_positions - keep
    untrusted = set()
    for g, (_, bs) in enumerate(groups):
        if set(before(g)) & skip:
            untrusted.update(frame[pos] for pos in bs if pos not in skip)
    return skip, untrusted


def _read_ahead_for_b_frames(packets, pts: np.ndarray, pts_start: int, tb: float, slot: dict, length_size: int):
    """Read packets from the key frame sought to the group after the last frame in `pts` (or the end), and say
    which B-frames to skip (`_b_frames_to_skip`): (packets read, positions to skip, frames not to take). Skips
    nothing where a packet's time is unknown or in the plan's range but not one of its times."""
    ahead, latest, anchors_past_end = [], None, 0
    for packet in packets:
        ahead.append(packet)
        if packet.pts is None:
            if packet.size:
                return ahead, set(), set()  # a packet without a time: which frame it holds is unknown
            break  # the end of the stream
        if latest is None or packet.pts > latest:  # an I/P-frame: it starts a group
            latest = packet.pts
            anchors_past_end += packet.pts * tb > pts[-1] + _SAME_FRAME_S
            if anchors_past_end == 2:
                break

    def frame_of(packet_pts) -> int | None:
        t = packet_pts * tb
        j = int(np.searchsorted(pts, t - _SAME_FRAME_S))
        return j + pts_start if j < len(pts) and abs(pts[j] - t) < _SAME_FRAME_S else None

    timed = [p for p in ahead if p.pts is not None]
    if any(frame_of(p.pts) is None for p in timed if pts[0] - _SAME_FRAME_S <= p.pts * tb <= pts[-1] + _SAME_FRAME_S):
        return ahead, set(), set()  # timestamps that disagree with the plan: the frames are checked as they come
    skip, untrusted = _b_frames_to_skip(timed, frame_of, slot, length_size)
    return ahead, skip, untrusted


def _decode_packets(packets, skip_b: set[int], skip: str = "NONREF"):
    """Decode packets in order, skipping the B-frames of those at positions `skip_b` and the frames `skip` names
    (FFmpeg's `skip_frame`: every non-reference frame, or none with "DEFAULT"; it is read anew for each frame it
    decodes, with one decoder thread)."""
    for pos, packet in enumerate(packets):
        packet.stream.codec_context.skip_frame = "BIDIR" if pos in skip_b else skip
        yield from packet.decode()


def _decode_nearest(
    path: Path, frame_index: np.ndarray, pts: np.ndarray, pts_start: int, size: int, rotation: int, hwaccel=None
):
    """Decode the wanted frames, or a neighbour within one frame interval, without decoding frames no one refers to.

    The decoder skips non-reference frames (H.264/HEVC B-frames that no other frame predicts from:
    about half of all frames with x264's defaults), so a wanted frame that is one of them is replaced
    by its nearest decoded neighbour: the next frame, else the previous one. In x264 streams with one
    reference per list (`_x264_stream`) the CPU decoder also skips the reference B-frames no
    sample takes (`_b_frames_to_skip`): the same frames come back, with the same pixels, for less decoding
    ("pyav-bframes"). `pts` holds the presentation times of frames `pts_start`, `pts_start + 1`, ... (the
    plan's, see `VideoPlan.pts_around`). Returns (frames, frame indices decoded, how they were decoded, the
    changes between consecutive decoded frames: `FrameChanges`), or
    None where the stream does not allow it (every frame a reference, two neighbours skipped in a row,
    timestamps that do not match the plan's, any decoder error): the caller then decodes exactly.
    """
    import av

    wanted = [int(i) for i in frame_index]
    slot = {}  # frame index -> (wanted position, preference: 0 itself, 1 the next frame, 2 the previous)
    for k, i in enumerate(wanted):
        for pref, j in ((2, i - 1), (1, i + 1), (0, i)):  # a frame wanted itself serves no neighbour
            if j - pts_start in range(len(pts)):
                slot[j] = (k, pref) if j not in slot or pref < slot[j][1] else slot[j]
    best: dict[int, tuple[int, int, object]] = {}  # wanted position -> (preference, frame index, decoded frame) so far
    chosen: dict[int, tuple[int, np.ndarray]] = {}  # wanted position -> (frame index, pixels), final

    def settle(k: int) -> None:  # resize only the frame that stays: one conversion per wanted frame
        _, i, frame = best.pop(k)
        chosen[k] = (i, frame.to_ndarray(format="rgb24", width=size, height=size))

    last = min(wanted[-1] + 1, pts_start + len(pts) - 1)

    def open_container(options=None):
        source = open_video(path) if is_url(path) else str(path)
        if hwaccel is None:
            return av.open(source, options=options)
        return av.open(source, hwaccel=hwaccel, options=options)

    try:
        x264 = None
        if hwaccel is None:
            # An x264 stream needs no probing decode (its key frame decoded twice: ~10 % of a 3 s 720p clip's
            # decoding); any other stream is opened again with it.
            container = open_container(_PROBE_WITHOUT_DECODING)
            try:
                if container.streams.video:
                    x264 = _x264_stream(container, container.streams.video[0])
            finally:
                if x264 is None:
                    container.close()
        if x264 is None:
            container = open_container()
    except (av.FFmpegError, StorageError):  # the exact decoder says why
        return None
    try:
        with container:
            stream = container.streams.video[0]
            ctx = stream.codec_context
            ctx.thread_count = 1  # one decode task per core: threads inside a task only oversubscribe
            # Samples on consecutive frames (3 fps of a 5 fps camera): a skipped frame would leave two samples one
            # neighbour, and there is little to skip. Every frame is decoded and each sample takes its own.
            every_frame = len(wanted) > 1 and int(np.min(np.diff(wanted))) <= 1
            ctx.skip_frame = "DEFAULT" if every_frame else "NONREF"
            tb = float(stream.time_base)
            container.seek(int(float(pts[0]) / tb), stream=stream, backward=True)
            packets = container.demux(stream)
            ahead, skip, untrusted = [], set(), set()
            # With one reference per list, read the packets up to the group after the last frame first, to see
            # which are needed.
            if x264 and x264.single_reference and not every_frame:
                ahead, skip, untrusted = _read_ahead_for_b_frames(packets, pts, pts_start, tb, slot, x264.length_size)
            on_gpu = False
            changes = FrameChanges()
            for frame in _decode_packets(itertools.chain(ahead, packets), skip, ctx.skip_frame):
                if frame.pts is None:
                    continue
                on_gpu = on_gpu or frame.format.name in CUDA_DOWNLOAD_FORMATS
                t = frame.pts * tb
                changes.add(t, frame)
                j = int(np.searchsorted(pts, t - _SAME_FRAME_S))
                i = j + pts_start
                if j < len(pts) and abs(pts[j] - t) < _SAME_FRAME_S and i in slot:
                    k, pref = slot[i]
                    if k not in chosen and (k not in best or pref < best[k][0]):
                        best[k] = (pref, i, frame)
                        if pref <= 1:  # the wanted frame itself or the one after it: nothing nearer can follow
                            settle(k)
                for k in [k for k in best if t > pts[min(wanted[k] + 1, last) - pts_start] + _SAME_FRAME_S]:
                    settle(k)  # past the frame after it: the previous frame is the nearest there is
                if t > pts[last - pts_start] + _SAME_FRAME_S:
                    break
            for k in list(best):
                settle(k)
            how = "pyav-every-frame" if every_frame else "pyav-bframes" if skip else "pyav-nonref"
            how += "-cuda" if ctx.is_hwaccel and on_gpu else ""
    except av.FFmpegError:
        return None
    if len(chosen) < len(wanted) or any(chosen[k][0] in untrusted for k in chosen):
        return None
    got = np.array([chosen[k][0] for k in range(len(wanted))], np.int64)
    if np.any(np.diff(got) <= 0):
        return None  # two wanted frames would share one decoded frame
    out = np.stack([chosen[k][1] for k in range(len(wanted))])
    k = (rotation // 90) % 4
    return (np.ascontiguousarray(np.rot90(out, k=k, axes=(1, 2))) if k else out), got, how, changes


# Pixel formats whose first plane is luma, read in place: (sample type, bits below the top 8). Any other is scaled to
# gray by FFmpeg first. 10-bit: HEVC/VP9/AV1 at 10 bits (low bits of 16), NVDEC's p010 (high bits of 16).
_LUMA_PLANES = {
    **{name: (np.dtype(np.uint8), 0) for name in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p")},
    **{name: (np.dtype(np.uint8), 0) for name in ("nv12", "nv21", "gray")},
    **{name: (np.dtype("<u2"), 2) for name in ("yuv420p10le", "yuv422p10le", "yuv444p10le", "gray10le")},
    **{name: (np.dtype("<u2"), 8) for name in ("p010le", "p016le")},
}
LUMA_LATTICE = 6  # pixels sampled per cell side by `luma_cells` (and by `nvdec.nv12_luma_cells` on the GPU)


@functools.lru_cache(maxsize=16)
def lattice_axes(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows and the columns of a height x width luma plane that `luma_cells` reads: GRID*6 of each."""
    side = GRID * LUMA_LATTICE
    rows = ((np.arange(side) + 0.5) * (height / side)).astype(np.intp)
    cols = ((np.arange(side) + 0.5) * (width / side)).astype(np.intp)
    return rows, cols


@functools.lru_cache(maxsize=16)
def _lattice(height: int, width: int, line_size: int) -> np.ndarray:
    """Where in a luma plane of rows `line_size` samples apart `luma_cells` reads its pixels: (GRID*6)^2 offsets."""
    rows, cols = lattice_axes(height, width)
    return rows[:, None] * line_size + cols[None, :]


def luma_cells(frame) -> np.ndarray:
    """(GRID, GRID) mean luma (0..255) of the cells of a grid over a decoded PyAV frame, from a sparse lattice of
    pixels (6x6 a cell, read in place: a frame just decoded is out of the CPU's caches, and copying its rows would
    cost more than the rest): what a cut changes everywhere at once."""
    side = GRID * LUMA_LATTICE
    dtype, low_bits = _LUMA_PLANES.get(frame.format.name, (None, 0))
    if dtype is not None:
        plane = frame.planes[0]
        row = plane.line_size // dtype.itemsize  # rows are padded to line_size: the lattice keeps to the width
        luma = np.frombuffer(plane, dtype, count=row * plane.height)
        offsets = _lattice(frame.height, frame.width, row)
    else:  # FFmpeg scales any other pixel format to gray first
        luma = frame.reformat(width=side, height=side, format="gray").to_ndarray().ravel()
        offsets = _lattice(side, side, side)
    cells = luma[offsets].reshape(GRID, LUMA_LATTICE, GRID, LUMA_LATTICE)
    return cells.sum(axis=(1, 3), dtype=np.uint32).astype(np.float32) / (LUMA_LATTICE * LUMA_LATTICE * 2**low_bits)


class FrameChanges:
    """The change between each decoded frame and the one decoded before it: the mean absolute difference of their
    `luma_cells`, as a fraction of 255. A cut changes one such pair a lot; motion changes every pair a little."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.changes: list[float] = []
        self.cpu_s = 0.0  # what measuring cost (for extract's busy times)
        self._previous = None

    def add(self, time_s: float, frame) -> None:
        cpu0 = time.process_time()
        cells = luma_cells(frame)
        if self._previous is not None:
            self.times.append(time_s)
            self.changes.append(float(np.abs(cells - self._previous).mean()) / 255.0)
        self._previous = cells
        self.cpu_s += time.process_time() - cpu0

    def per_sample(self, sample_times: np.ndarray, start: float) -> np.ndarray:
        """See `frame_change_per_sample`."""
        return frame_change_per_sample(np.asarray(self.times), np.asarray(self.changes), sample_times, start)


def frame_change_per_sample(times: np.ndarray, changes: np.ndarray, sample_times: np.ndarray, start: float):
    """(n, 2) float32 for n samples: the largest and the median of the `changes` of the frames shown after the
    sample before (for the first, after `start`) up to and including each sample; NaN where none was decoded.

    The decoder's frame times may differ from the plan's (decord's) by up to `_SAME_FRAME_S`: a frame that close to a
    sample's time is that sample's frame."""
    out = np.full((len(sample_times), 2), np.nan, np.float32)
    keep = times > start + _SAME_FRAME_S
    times, changes = times[keep], changes[keep]
    sample = np.searchsorted(np.asarray(sample_times) + _SAME_FRAME_S, times, side="left")  # (t[k-1], t[k]] -> k
    for k in np.unique(sample[sample < len(sample_times)]):
        values = changes[sample == k]
        out[k] = values.max(), np.median(values)
    return out


def frame_statistics(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour histogram (n, COLOR_HIST_DIM) and a coarse colour grid (n, GRID, GRID, 3) per frame.

    Both are cheap and computed where the pixels already are (the decode worker), so that the
    change score never needs the frames again. Integer arithmetic in the narrowest type that holds
    it: 3.5x faster than in int64 and float, with the same results (bench/bench_extract_scale.py).
    """
    n, h, w, _ = frames.shape
    q = frames >> (8 - HIST_BITS)  # HIST_BINS levels per channel
    codes = (q[..., 0] << 2 * HIST_BITS) | (q[..., 1] << HIST_BITS) | q[..., 2]  # joint bin, still uint8
    hist = np.empty((n, COLOR_HIST_DIM), np.float32)
    for i in range(n):
        hist[i] = np.bincount(codes[i].ravel(), minlength=COLOR_HIST_DIM)
    hist /= h * w
    gh, gw = h // GRID, w // GRID
    # The rows of each cell first, then its columns: the same integer sums as one sum over both axes, ~4x faster.
    rows = frames[:, : gh * GRID, : gw * GRID].reshape(n, GRID, gh, GRID * gw, 3).sum(axis=2, dtype=np.uint32)
    grid = rows.reshape(n, GRID, GRID, gw, 3).sum(axis=3).astype(np.float32) / np.float32(gh * gw)
    return hist, grid


@dataclass
class ProbeStage(Stage):
    """Batch {path} -> the same batch with the video's plan (see `probe`). Raises DecodeError."""

    reads = ("path",)
    writes = ("plan", "timing")

    fps: float = 3.0
    max_frames: int | None = None
    resources: Resources = Resources(cpus=1)

    def __call__(self, batch: dict) -> dict:
        t0, cpu0 = time.perf_counter(), time.process_time()
        plan = probe(_location(batch["path"]), self.fps, self.max_frames)
        return {
            **batch,
            "plan": plan,
            "timing": {"probe_s": time.perf_counter() - t0, "probe_cpu_s": time.process_time() - cpu0},
        }


def decode_batch(
    path: Path | str,
    frame_index: np.ndarray,
    rotation: int,
    decoder: str,
    pts_around: tuple[np.ndarray, int] | None = None,
    n_frames: int | None = None,
) -> dict:
    """The batch `DecodeStage` reads: which frames of which video (a path or URL), its display rotation and the
    decoder that opens it (as the probe found them); with `pts_around` (`VideoPlan.pts_around`), also the times
    around the frames, so that a stage with `nearest_frames` may decode a neighbour in place of a wanted frame, and
    with `n_frames` the video's frame count (NVDEC checks its own against it)."""
    batch = {"path": str(path), "frame_index": frame_index, "rotation": rotation, "decoder": decoder}
    if pts_around is not None:
        batch["pts"], batch["pts_start"] = pts_around
    if n_frames is not None:
        batch["n_frames"] = int(n_frames)
    return batch


@dataclass
class DecodeStage(Stage):
    """Batch {path, frame_index, rotation, decoder} (see `decode_batch`) -> frames resized to image_size² plus
    statistics, and `decoded`: which frames decoded (the others are black; see `partial_decode_warning`).

    With `nearest_frames`, a batch that also carries `pts` and `pts_start` (`VideoPlan.pts_around`)
    may get a neighbour within one frame interval in place of a wanted frame, so that frames no sample
    needs are never decoded (`_decode_nearest`); its `frame_index` then says which frames came back.
    Without it (describe, infer) the frames asked for are the frames returned. `device="cuda"` decodes
    on the GPU where PyAV can (NVDEC); `device="nvdec"` decodes there with PyNvVideoCodec, keeping the frames on the
    GPU (`stages.nvdec`, with `nearest_frames` and `n_frames` only); a stream or machine they cannot serve is decoded
    on the CPU.
    `frame_change` (n, 2) is the largest and median change between consecutive decoded frames in each sample's
    interval (`FrameChanges`), from the nearest-frame decoder only: NaN where another decoder served the batch.
    Every batch also reports how it was decoded (`decoded_with`) and its busy seconds (`timing`).
    """

    reads = ("path", "frame_index", "rotation", "decoder")
    optional = ("pts", "pts_start", "n_frames")
    writes = ("frame_index", "frames", "hist", "grid", "frame_change", "decoded", "decoded_with", "timing")
    drops = ("pts", "pts_start", "n_frames")

    image_size: int = 224
    nearest_frames: bool = False
    device: str = "cpu"  # cpu | cuda (PyAV's NVDEC) | nvdec (PyNvVideoCodec)
    resources: Resources = Resources(cpus=1)

    def setup(self) -> None:
        self.hwaccel = cuda_hwaccel() if self.device.startswith("cuda") else None

    def __call__(self, batch: dict) -> dict:
        t0, cpu0 = time.perf_counter(), time.process_time()
        path = _location(batch["path"])
        frame_index = np.asarray(batch["frame_index"], np.int64)
        rotation = int(batch.get("rotation", 0))
        frames = None
        frame_change, measure_cpu_s = None, 0.0  # only the nearest-frame decoders see every decoded frame
        if self.device == "nvdec" and self.nearest_frames and batch.get("n_frames") and not is_url(path):
            from vtm.stages.nvdec import decode_nvdec, nvdec_available  # it builds on this module

            pts = np.asarray(batch["pts"], np.float64)
            start, n_frames = int(batch["pts_start"]), batch["n_frames"]
            got = None
            if nvdec_available():
                got = decode_nvdec(path, frame_index, pts, start, n_frames, self.image_size, rotation)
            if got is not None:
                frames, frame_index, how, times, changes = got
                sample_times = pts[frame_index - start]
                frame_change = frame_change_per_sample(times, changes, sample_times, start=float(pts[0]))
        if frames is None and self.nearest_frames and batch.get("pts") is not None:
            got = _decode_nearest(
                path,
                frame_index,
                np.asarray(batch["pts"], np.float64),
                int(batch["pts_start"]),
                self.image_size,
                rotation,
                getattr(self, "hwaccel", None),
            )
            if got is not None:
                frames, frame_index, how, changes = got
                pts = np.asarray(batch["pts"], np.float64)  # each sample's interval, the first from the batch's start
                frame_change = changes.per_sample(pts[frame_index - int(batch["pts_start"])], start=float(pts[0]))
                measure_cpu_s = changes.cpu_s
        if frames is None and batch.get("decoder", "decord") == "decord":
            try:
                frames, how = _decode_decord(path, frame_index, self.image_size), "decord"
            except Exception:  # noqa: BLE001 - fall back to the plain decoder below
                frames = None
        decoded = np.ones(len(frame_index), bool)
        if frames is None:
            (frames, decoded), how = _decode_pyav(path, frame_index, self.image_size, rotation), "pyav"
        t1 = time.perf_counter()
        hist, grid = frame_statistics(frames)
        if frame_change is None:
            frame_change = np.full((len(frame_index), 2), np.nan, np.float32)
        timing = {
            "decode_s": t1 - t0,
            "stats_s": time.perf_counter() - t1,
            "decode_cpu_s": time.process_time() - cpu0,  # CPU: both
            "frame_change_cpu_s": measure_cpu_s,  # of which measuring the frames between samples
        }
        out = {k: v for k, v in batch.items() if k not in self.drops}
        return {
            **out,
            "frame_index": frame_index,
            "frames": frames,
            "hist": hist,
            "grid": grid,
            "frame_change": frame_change,
            "decoded": decoded,
            "decoded_with": how,
            "timing": timing,
        }
