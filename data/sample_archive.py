"""Synthetic video archives with exact ground truth, for the quickstart, the tests and the benchmarks.

Every video is drawn frame by frame from a few seeded ingredients -- textured scenes seen through a
slightly moving camera, objects that slide in from an edge, sensor noise, slow lighting drift -- so
the time of every event is known by construction. Videos are encoded with PyAV only (no ffmpeg
binary), in the containers and codecs that real archives mix.

`ground_truth.json`, at the root of what `make_sample_dataset` and `make_archive` write:

    events    {path: [seconds, ...]}  cuts (first frame of the new shot), dissolves (their midpoint),
                                      objects entering or leaving (the midpoint of their slide)
    broken    {path: what is wrong}   files a reader must survive and report
    rotation  {path: degrees}         display-matrix rotation, counter-clockwise, as PyAV's
                                      `VideoFrame.rotation` reads it; decord applies it, PyAV does not
    videos    {path: {...}}           frames, fps (mean fps for variable frame rate), seconds, stored
                                      width and height, codec, vfr

Paths are relative POSIX paths; some hold spaces and non-ASCII letters on purpose.
"""

import bisect
import functools
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

GROUND_TRUTH_FILE = "ground_truth.json"

# Backdrops are larger than the frame by this many pixels on each side, so the camera can pan and shake.
_MARGIN = 24


@dataclass(frozen=True)
class Encoding:
    """How a video is compressed: the PyAV encoder name, its pixel format and its options."""

    codec: str
    pix_fmt: str = "yuv420p"
    options: Mapping[str, str] = field(default_factory=dict)


# With x264's macroblock-tree rate control on, PyAV 18.1's libx264 turns the same frames into different
# bytes from run to run (the output follows leftover heap contents); without it, output is repeatable.
H264 = Encoding("libx264", options={"preset": "veryfast", "g": "50", "x264-params": "mbtree=0"})
MPEG4 = Encoding("mpeg4", options={"b": "1M", "g": "50"})
VP9 = Encoding("libvpx-vp9", options={"deadline": "realtime", "cpu-used": "8", "b": "1M", "g": "50"})
# The mjpeg encoder wants full-range ("j") YUV.
MJPEG = Encoding("mjpeg", pix_fmt="yuvj420p", options={"b": "4M"})


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    *,
    fps: Fraction | int = 25,
    encoding: Encoding = H264,
    pts: Sequence[int] | None = None,
    rotation: int = 0,
    container_options: Mapping[str, str] | None = None,
) -> int:
    """Encode RGB frames (height x width x 3, uint8) to `path` and return how many were written.

    `pts` makes a variable-frame-rate video: frame i is stamped `pts[i]` ticks of 1/fps, so `fps` is
    then the tick rate, not the mean rate. `rotation` (counter-clockwise degrees) is written as a
    display matrix. The container is muxed bit-exact so the same frames give the same bytes.
    """
    time_base = Fraction(1) / Fraction(fps)
    # Without bitexact, Matroska writes a random segment UID and every run differs.
    options = {"fflags": "+bitexact", **(container_options or {})}
    count = 0
    with av.open(str(path), "w", options=options) as container:
        stream = None
        for i, image in enumerate(frames):
            if stream is None:
                stream = container.add_stream(encoding.codec, rate=fps, options=dict(encoding.options))
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = encoding.pix_fmt
                if rotation:
                    stream.set_display_rotation(rotation)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i if pts is None else pts[i]
            frame.time_base = time_base
            container.mux(stream.encode(frame))
            count += 1
        if stream is None:
            raise ValueError(f"no frames to write to {path}")
        container.mux(stream.encode())
    return count


def frame_times(n_frames: int, fps: Fraction | int, pts: Sequence[int] | None = None) -> list[float]:
    """Presentation time in seconds of each frame, as `write_video` stamps them."""
    ticks = range(n_frames) if pts is None else pts
    return [float(Fraction(tick) / Fraction(fps)) for tick in ticks]


def _smooth_field(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Random values on a coarse grid, bilinearly upsampled: large soft blotches of colour in [0, 1]."""
    cells_y, cells_x = cells, max(2, round(cells * width / height))
    grid = rng.random((cells_y + 1, cells_x + 1, 3), dtype=np.float32)
    ys, xs = np.linspace(0, cells_y, height), np.linspace(0, cells_x, width)
    y0 = np.minimum(ys.astype(int), cells_y - 1)
    x0 = np.minimum(xs.astype(int), cells_x - 1)
    fy = (ys - y0)[:, None, None].astype(np.float32)
    fx = (xs - x0)[None, :, None].astype(np.float32)
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _ellipse_mask(height: int, width: int) -> np.ndarray:
    y = (np.arange(height) + 0.5) / height * 2 - 1
    x = (np.arange(width) + 0.5) / width * 2 - 1
    return (y[:, None] ** 2 + x[None, :] ** 2) <= 1


def random_scene(
    rng: np.random.Generator, width: int, height: int, *, brightness: float = 1.0, contrast: float = 1.0
) -> np.ndarray:
    """A backdrop (float32, values 0-255) larger than the frame by `_MARGIN` pixels on each side.

    A tinted base colour, soft colour blotches, a dozen flat shapes and a fixed fine grain: every call
    gives a scene that looks different from the last, which is what makes a cut a cut. Colours stay
    moderately desaturated so that the saturated objects drawn over them stand out.
    """
    h, w = height + 2 * _MARGIN, width + 2 * _MARGIN
    base = 128 + rng.uniform(-50, 50, 3).astype(np.float32)
    image = base + 90 * (_smooth_field(rng, h, w, cells=int(rng.integers(2, 6))) - 0.5)
    for _ in range(int(rng.integers(8, 16))):
        sh, sw = (int(v) for v in rng.integers([h // 10, w // 10], [h // 3, w // 3]))
        y, x = int(rng.integers(0, h - sh)), int(rng.integers(0, w - sw))
        colour = 0.5 * rng.uniform(20, 235, 3) + 0.5 * base
        region = image[y : y + sh, x : x + sw]
        if rng.random() < 0.5:
            region[:] = colour
        else:
            region[_ellipse_mask(sh, sw)] = colour
    image += rng.normal(0, 6, (h, w, 1)).astype(np.float32)
    mean = image.mean()
    return np.clip((image - mean) * contrast + mean * brightness, 0, 255).astype(np.float32)


@dataclass(frozen=True)
class Shot:
    """A stretch of video over one backdrop, starting at `start_s`.

    With `dissolve_s` > 0 the shot fades in from the previous one over that many seconds centred on
    `start_s`; otherwise it starts with a hard cut. The camera pans across the backdrop at
    `pan_px_per_s` (y, x) from the start of the shot.
    """

    scene: np.ndarray
    start_s: float
    pan_px_per_s: tuple[float, float] = (0.0, 0.0)
    dissolve_s: float = 0.0


@dataclass(frozen=True)
class SlidingObject:
    """A coloured blob that slides in from an edge, rests at `rest_yx`, and slides back out.

    Slides take `slide_s` seconds and start at `enter_s` and `leave_s` (None: it stays to the end).
    """

    sprite: np.ndarray  # height x width x 3, float32
    rest_yx: tuple[int, int]
    edge: str  # "left", "right", "top" or "bottom": where it comes from and goes back to
    enter_s: float
    leave_s: float | None = None
    slide_s: float = 0.7

    @property
    def events(self) -> list[float]:
        starts = [self.enter_s] + ([] if self.leave_s is None else [self.leave_s])
        return [start + self.slide_s / 2 for start in starts]

    def _offscreen_yx(self, width: int, height: int) -> tuple[int, int]:
        oh, ow = self.sprite.shape[:2]
        y, x = self.rest_yx
        return {"left": (y, -ow), "right": (y, width), "top": (-oh, x), "bottom": (height, x)}[self.edge]

    def position(self, t: float, width: int, height: int) -> tuple[int, int] | None:
        """Top-left corner at time t, or None while the object is out of the frame."""
        if t < self.enter_s or (self.leave_s is not None and t >= self.leave_s + self.slide_s):
            return None
        inside = min(1.0, (t - self.enter_s) / self.slide_s)
        if self.leave_s is not None and t > self.leave_s:
            inside = 1.0 - (t - self.leave_s) / self.slide_s
        (y0, x0), (y1, x1) = self._offscreen_yx(width, height), self.rest_yx
        return round(y0 + (y1 - y0) * inside), round(x0 + (x1 - x0) * inside)

    def draw(self, image: np.ndarray, t: float) -> None:
        height, width = image.shape[:2]
        corner = self.position(t, width, height)
        if corner is None:
            return
        y, x = corner
        oh, ow = self.sprite.shape[:2]
        top, left, bottom, right = max(y, 0), max(x, 0), min(y + oh, height), min(x + ow, width)
        if top >= bottom or left >= right:
            return
        piece = self.sprite[top - y : bottom - y, left - x : right - x]
        mask = _ellipse_mask(oh, ow)[top - y : bottom - y, left - x : right - x]
        image[top:bottom, left:right][mask] = piece[mask]


def random_object(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    enter_s: float,
    leave_s: float | None,
    area: tuple[float, float] = (0.03, 0.08),
    colour: np.ndarray | None = None,
) -> SlidingObject:
    """An upright blob covering `area` (a range, as fractions of the frame), in a saturated colour."""
    box_area = rng.uniform(*area) * width * height / (math.pi / 4)  # the blob is the box's inscribed ellipse
    aspect = rng.uniform(1.0, 2.0)  # taller than wide, like a person or a parked bike
    oh = min(height - 8, round(math.sqrt(box_area * aspect)))
    ow = round(box_area / oh)
    if colour is None:
        colour = np.array([235, 40, 40], np.float32)[rng.permutation(3)] * rng.uniform(0.8, 1.0)
    shading = np.linspace(1.1, 0.8, oh, dtype=np.float32)[:, None, None]  # lit from above
    sprite = np.broadcast_to(colour * shading, (oh, ow, 3)).astype(np.float32)
    edge = str(rng.choice(["left", "right", "top", "bottom"]))
    rest = (int(rng.integers(2, height - oh - 2)), int(rng.integers(2, width - ow - 2)))
    return SlidingObject(sprite, rest, edge, enter_s, leave_s, slide_s=float(rng.uniform(0.5, 1.0)))


@dataclass(frozen=True)
class Clip:
    """What a synthetic video shows: shots over time, objects in front of them, and the camera's flaws."""

    width: int
    height: int
    shots: list[Shot]
    objects: list[SlidingObject] = field(default_factory=list)
    noise_sigma: float = 2.5  # per-pixel sensor noise, in 0-255 units
    jitter_px: int = 0  # hand-held shake: the view moves by up to this much each frame
    drift: float = 0.0  # slow lighting change, as a fraction of brightness (period ~10 s)

    def events(self, times: Sequence[float]) -> list[float]:
        """Event times for a video whose frames are shown at `times`."""
        events = []
        for shot in self.shots[1:]:
            if shot.dissolve_s:
                events.append(shot.start_s)
            else:  # the cut is seen on the first frame of the new shot
                later = [t for t in times if t >= shot.start_s]
                if later:
                    events.append(later[0])
        for obj in self.objects:
            events.extend(obj.events)
        end = times[-1] if times else 0.0
        return sorted(round(e, 4) for e in events if 0 <= e <= end)

    def _view(self, shot: Shot, t: float, shake: np.ndarray) -> np.ndarray:
        travel = np.array(shot.pan_px_per_s) * max(0.0, t - shot.start_s)
        y, x = np.clip(np.rint(self.jitter_px + travel + shake), 0, 2 * _MARGIN).astype(int)
        return shot.scene[y : y + self.height, x : x + self.width]

    def _backdrop(self, t: float, shake: np.ndarray) -> np.ndarray:
        starts = [shot.start_s for shot in self.shots]
        k = max(0, bisect.bisect_right(starts, t) - 1)
        for incoming in (k + 1, k):  # a dissolve straddles its start: check both neighbours
            if not 0 < incoming < len(self.shots):
                continue
            shot = self.shots[incoming]
            alpha = (t - shot.start_s) / shot.dissolve_s + 0.5 if shot.dissolve_s else -1.0
            if 0 <= alpha < 1:
                before = self._view(self.shots[incoming - 1], t, shake)
                return (1 - alpha) * before + alpha * self._view(shot, t, shake)
        return self._view(self.shots[k], t, shake).copy()

    def frames(self, times: Sequence[float], rng: np.random.Generator) -> Iterator[np.ndarray]:
        for t in times:
            shake = rng.integers(-self.jitter_px, self.jitter_px + 1, 2) if self.jitter_px else np.zeros(2)
            image = self._backdrop(t, shake)
            for obj in self.objects:
                obj.draw(image, t)
            if self.drift:
                image *= 1 + self.drift * math.sin(2 * math.pi * t / 10)
            image += self.noise_sigma * rng.standard_normal((self.height, self.width, 1), dtype=np.float32)
            yield np.clip(image, 0, 255).astype(np.uint8)


def _shot_starts(rng: np.random.Generator, seconds: float, n_shots: int, min_gap: float = 2.0) -> list[float]:
    """Shot boundaries at least `min_gap` apart and from both ends, so events never blur together."""
    min_gap = min(min_gap, seconds / n_shots)
    slack = seconds - min_gap * n_shots
    cuts = np.sort(rng.uniform(0, max(slack, 0.0), n_shots - 1)) + min_gap * np.arange(1, n_shots)
    return [0.0] + [round(float(c), 3) for c in cuts]


def cuts_clip(rng: np.random.Generator, width: int, height: int, seconds: float, n_shots: int = 4) -> Clip:
    """Hand-held shots of different scenes joined by hard cuts."""
    shots = [
        Shot(random_scene(rng, width, height), start, pan_px_per_s=tuple(rng.uniform(-1, 4, 2)))
        for start in _shot_starts(rng, seconds, n_shots)
    ]
    return Clip(width, height, shots, jitter_px=1)


def dissolve_clip(rng: np.random.Generator, width: int, height: int, seconds: float) -> Clip:
    """Two scenes joined by a one-second cross-fade in the middle of the video."""
    middle = round(float(rng.uniform(0.4, 0.6)) * seconds, 3)
    shots = [
        Shot(random_scene(rng, width, height), 0.0, pan_px_per_s=(0.0, 2.0)),
        Shot(random_scene(rng, width, height), middle, pan_px_per_s=(2.0, 0.0), dissolve_s=1.0),
    ]
    return Clip(width, height, shots)


def object_clip(rng: np.random.Generator, width: int, height: int, seconds: float, *, dim: bool = False) -> Clip:
    """A still camera on a still scene; an object slides in, rests, and leaves.

    `dim` is the hard case: a dark, low-contrast scene with a small, dull object that stays to the end.
    """
    if dim:
        scene = random_scene(rng, width, height, brightness=0.3, contrast=0.35)
        colour = np.float32(scene.mean()) + np.array([45, 30, 10], np.float32)
        enter = float(rng.uniform(0.3, 0.5)) * seconds
        obj = random_object(rng, width, height, enter_s=enter, leave_s=None, area=(0.03, 0.035), colour=colour)
        return Clip(width, height, [Shot(scene, 0.0)], [obj], noise_sigma=3.0)
    enter = float(rng.uniform(0.15, 0.3)) * seconds
    leave = enter + float(rng.uniform(0.35, 0.5)) * seconds
    obj = random_object(rng, width, height, enter_s=enter, leave_s=leave)
    return Clip(width, height, [Shot(random_scene(rng, width, height), 0.0)], [obj], noise_sigma=2.0)


def quiet_clip(rng: np.random.Generator, width: int, height: int, seconds: float) -> Clip:
    """Nothing happens: a still scene, sensor noise and slowly changing light."""
    scene = random_scene(rng, width, height)
    return Clip(width, height, [Shot(scene, 0.0)], noise_sigma=3.0, drift=float(rng.uniform(0.04, 0.08)))


def mixed_clip(rng: np.random.Generator, width: int, height: int, seconds: float) -> Clip:
    """Two hard cuts, then an object enters the last (still) shot and stays."""
    starts = _shot_starts(rng, seconds * 0.6, 3)
    shots = [Shot(random_scene(rng, width, height), s, pan_px_per_s=(0.0, 3.0)) for s in starts[:2]]
    shots.append(Shot(random_scene(rng, width, height), starts[2]))
    enter = starts[2] + float(rng.uniform(2.0, 2.5))
    obj = random_object(rng, width, height, enter_s=enter, leave_s=None)
    return Clip(width, height, shots, [obj])


@dataclass
class GroundTruth:
    events: dict[str, list[float]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    rotation: dict[str, int] = field(default_factory=dict)
    videos: dict[str, dict] = field(default_factory=dict)

    def write(self, out_dir: Path) -> None:
        text = json.dumps(asdict(self), indent=1, ensure_ascii=False, sort_keys=True)
        (out_dir / GROUND_TRUTH_FILE).write_text(text + "\n", encoding="utf-8")


def read_ground_truth(root: Path) -> dict:
    """The ground truth written beside a sample dataset or archive."""
    return json.loads((Path(root) / GROUND_TRUTH_FILE).read_text(encoding="utf-8"))


def _write_clip(
    truth: GroundTruth,
    out_dir: Path,
    relative: str,
    clip: Clip,
    rng: np.random.Generator,
    *,
    seconds: float,
    fps: Fraction | int,
    encoding: Encoding = H264,
    pts: Sequence[int] | None = None,
    rotation: int = 0,
) -> None:
    n_frames = len(pts) if pts is not None else round(seconds * fps)
    times = frame_times(n_frames, fps, pts)
    path = out_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, clip.frames(times, rng), fps=fps, encoding=encoding, pts=pts, rotation=rotation)
    # The last frame lasts one tick, as Matroska and decord count it; for constant rate, n / fps.
    duration = times[-1] + float(1 / Fraction(fps))
    truth.events[relative] = clip.events(times)
    truth.videos[relative] = {
        "frames": n_frames,
        "fps": round(n_frames / duration, 4) if pts is not None else float(fps),
        "seconds": round(duration, 4),
        "width": clip.width,
        "height": clip.height,
        "codec": encoding.codec,
        "vfr": pts is not None,
    }
    if rotation:
        truth.rotation[relative] = rotation


def _vfr_pts(seconds: float) -> list[int]:
    """Ticks of 1/40 s that alternate frame durations of 1/20 s and 1/40 s (26.7 fps on average)."""
    return [tick for tick in range(int(seconds * 40)) if tick % 3 != 1]


def _write_broken(truth: GroundTruth, out_dir: Path, rng: np.random.Generator) -> None:
    broken = out_dir / "broken"
    broken.mkdir(parents=True, exist_ok=True)
    clip = cuts_clip(rng, 160, 120, 3.0, n_shots=2)

    (broken / "empty.mp4").write_bytes(b"")
    truth.broken["broken/empty.mp4"] = "empty file (0 bytes)"

    # Without faststart the mp4 index (moov) is written last, so the cut takes it away.
    whole = broken / "whole.mp4"
    write_video(whole, clip.frames(frame_times(75, 25), rng), fps=25)
    data = whole.read_bytes()
    whole.unlink()
    (broken / "truncated.mp4").write_bytes(data[: int(len(data) * 0.4)])
    truth.broken["broken/truncated.mp4"] = "cut to 40% of its bytes: the mp4 index (moov atom) at the end is lost"

    (broken / "notes.mp4").write_text("Shift notes: camera 3 was offline from 02:00 to 04:00.\n", encoding="utf-8")
    truth.broken["broken/notes.mp4"] = "a text file with a video extension"

    _write_sine(broken / "audio_only.mp4", seconds=2.0)
    truth.broken["broken/audio_only.mp4"] = "an AAC audio stream only: no video stream"

    write_video(broken / "one_frame.mp4", clip.frames([0.0], rng), fps=25)
    truth.broken["broken/one_frame.mp4"] = "a single frame: decodes, but shows no motion and spans no time"

    (broken / "folder.mp4").mkdir(exist_ok=True)
    truth.broken["broken/folder.mp4"] = "a directory named like a video"

    (broken / "garbage.mkv").write_bytes(rng.bytes(64_000))
    truth.broken["broken/garbage.mkv"] = "random bytes with a video extension"


def _write_sine(path: Path, seconds: float, rate: int = 44_100) -> None:
    samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


NTSC = Fraction(30000, 1001)


def make_sample_dataset(out_dir: Path, *, seed: int = 0, include_broken: bool = True) -> Path:
    """Write a small, varied archive with its ground truth to `out_dir` and return `out_dir`.

    Twelve 6-12 s videos in mp4, mkv, webm, avi and mov, at 25, 30 and 29.97 fps: hard cuts, a
    dissolve, objects entering still scenes (one dim), quiet scenes, a mix, a variable-frame-rate
    video and a rotated one; plus, with `include_broken`, the broken files in `broken/`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = GroundTruth()

    def add(relative, clip, seconds, fps, encoding=H264, **kwargs):
        _write_clip(truth, out_dir, relative, clip, rng, seconds=seconds, fps=fps, encoding=encoding, **kwargs)

    add("cuts/street shots.mp4", cuts_clip(rng, 320, 240, 10.0), 10.0, 25)
    add("cuts/archivo_1998/cinta 03.avi", cuts_clip(rng, 240, 180, 8.0, n_shots=3), 8.0, NTSC, MPEG4)
    add("cuts/interview.mkv", cuts_clip(rng, 192, 144, 9.0, n_shots=3), 9.0, 30, MPEG4)
    add("transitions/dissolve.mp4", dissolve_clip(rng, 256, 192, 8.0), 8.0, NTSC)
    add("cámara 1/entrada.mp4", object_clip(rng, 320, 240, 10.0), 10.0, 30)
    add("cámara 2/calle noche.mkv", object_clip(rng, 320, 240, 8.0, dim=True), 8.0, 25)
    add("cámara 3/parking lot.webm", object_clip(rng, 240, 180, 9.0), 9.0, 25, VP9)
    add("quiet/empty room.avi", quiet_clip(rng, 240, 180, 8.0), 8.0, 25, MJPEG)
    add("quiet/pasillo vacío.mov", quiet_clip(rng, 160, 120, 6.0), 6.0, 30)
    add("mixed/día de mercado.mp4", mixed_clip(rng, 320, 240, 12.0), 12.0, NTSC)
    # Matroska keeps milliseconds, so alternating 1/20 s and 1/40 s frames stay exact, and irregular.
    add("phone/vfr walk.mkv", cuts_clip(rng, 240, 180, 8.0, n_shots=2), 8.0, 40, pts=_vfr_pts(8.0))
    add("phone/portrait.mp4", object_clip(rng, 320, 240, 8.0), 8.0, 30, rotation=90)

    if include_broken:
        _write_broken(truth, out_dir, rng)
    truth.write(out_dir)
    return out_dir


def make_archive(
    out_dir: Path,
    n_videos: int,
    seconds: float = 4.0,
    seed: int = 0,
    *,
    width: int = 160,
    height: int = 120,
    fps: int = 25,
    encoding: Encoding = H264,
) -> Path:
    """Write `n_videos` short, plain, good h264 mp4 videos (quiet, cuts, object) with ground truth.

    Meant for scale: 100 videos of 4 s take about 7 s on two cores. Files go 100 to a folder.
    `encoding` changes how they are compressed (the benchmarks compare x264 presets).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = GroundTruth()
    kinds = [quiet_clip, functools.partial(cuts_clip, n_shots=2), object_clip]
    for i in range(n_videos):
        clip = kinds[i % len(kinds)](rng, width, height, seconds)
        relative = f"part_{i // 100:03d}/clip_{i:05d}.mp4"
        _write_clip(truth, out_dir, relative, clip, rng, seconds=seconds, fps=fps, encoding=encoding)
    truth.write(out_dir)
    return out_dir


RED = np.array([230, 35, 35], np.float32)
NOT_RED = (np.array([35, 60, 230], np.float32), np.array([40, 200, 60], np.float32))


def make_red_object_archive(out_dir: Path, n_videos: int, seconds: float = 10.0, seed: int = 0) -> Path:
    """An archive where the event is a RED object entering; cuts and other colours are not events.

    Each video has two hard cuts and three objects sliding in and out, each red or not at random.
    The training-free change score fires on all of it; only a trained model can tell which moments
    matter. Writes `annotations.jsonl` (the documented annotation format, with descriptions) and
    `ground_truth.json` (events = red entries only) beside the videos.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = GroundTruth()
    lines = []
    width, height = 160, 120
    for i in range(n_videos):
        starts = _shot_starts(rng, seconds, 3, min_gap=3.0)
        shots = [Shot(random_scene(rng, width, height), s) for s in starts]
        objects, red = [], []
        for k, s in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else seconds
            enter = s + float(rng.uniform(0.6, max(0.7, end - s - 2.6)))
            leave = min(end - 0.9, enter + float(rng.uniform(1.2, 1.6)))
            is_red = bool(rng.random() < 0.5)
            colour = RED if is_red else NOT_RED[int(rng.integers(0, 2))]
            obj = random_object(
                rng,
                width,
                height,
                enter_s=enter,
                leave_s=leave,
                area=(0.05, 0.08),
                colour=colour * rng.uniform(0.9, 1.0),
            )
            objects.append(obj)
            if is_red:
                red.append(obj)
        relative = f"red/clip_{i:04d}.mp4"
        clip = Clip(width, height, shots, objects, noise_sigma=2.0)
        _write_clip(truth, out_dir, relative, clip, rng, seconds=seconds, fps=25)
        truth.events[relative] = [round(obj.enter_s + obj.slide_s / 2, 4) for obj in red]
        for obj in red:
            lines.append(
                {
                    "video": relative,
                    "start": round(obj.enter_s, 3),
                    "end": round(obj.enter_s + obj.slide_s, 3),
                    "label": "red_object",
                    "description": "a red object comes into view",
                }
            )
        if not red:
            lines.append({"video": relative})
    truth.write(out_dir)
    (out_dir / "annotations.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return out_dir
