"""`vtm extract`: decode every video, encode sampled frames, score changes, fill the feature cache.

    discover -> probe (CPU task) -> decode segments (CPU tasks) -> encode (actors holding the model)
             -> change score + write (driver, per video, as soon as its last segment is back)

Videos stream through: only the segments in flight are in memory, each finished video is written
atomically, and the manifest is flushed every few seconds, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
from tqdm import tqdm

from vtm.cache import schema
from vtm.cache.atomic import atomic_path
from vtm.cache.store import CacheSettings, FeatureCache
from vtm.cache.windows import frame_inputs
from vtm.pipeline.config import Config, dump_config
from vtm.pipeline.discover import VideoFile, content_digest, discover_videos
from vtm.pipeline.ray_runner import cluster_gpus, init_ray, stage_actors, stage_task
from vtm.stages.base import Resources
from vtm.stages.decode import DecodeError, DecodeStage, ProbeStage, VideoPlan
from vtm.stages.encode import EncodeStage

log = logging.getLogger(__name__)
MANIFEST_FLUSH_S = 5.0


@dataclass
class ExtractSummary:
    cache_dir: Path
    videos: int = 0  # found in the dataset
    skipped: int = 0  # already in the cache with the same content and settings
    ok: int = 0  # extracted by this run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    frames: int = 0  # sampled frames encoded by this run
    seconds: float = 0.0
    pretrained: bool = True

    @property
    def all_ok(self) -> bool:
        return not self.failed


@dataclass
class _Video:
    """One video in flight: its manifest row so far, its plan, and the segments back so far."""

    file: VideoFile
    row: dict
    plan: VideoPlan | None = None
    parts: dict = field(default_factory=dict)
    n_segments: int = 0
    failed: bool = False


def failure_reason(err: BaseException) -> str:
    """A person-readable reason from a task error (the original DecodeError text where there is one)."""
    cause = getattr(err, "cause", None) or err
    if isinstance(cause, DecodeError):
        return str(cause)
    if isinstance(err, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)) or "crash" in type(err).__name__.lower():
        return "the decoder process crashed on this file (corrupted stream?)"
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]


def run_extract(
    dataset_dir: Path, cache_dir: Path, config: Config = Config(), progress: bool = True, decode_stage: DecodeStage | None = None
) -> ExtractSummary:
    """Extract every video under `dataset_dir` into the cache at `cache_dir`; see the module docstring.

    `decode_stage` replaces the default DecodeStage (e.g. another decoder implementation).
    """
    ec = config.extract
    started = time.perf_counter()
    dataset_dir = Path(dataset_dir).resolve()
    videos = discover_videos(dataset_dir)
    init_ray(config.ray.address)

    use_gpu = ec.device != "cpu" and cluster_gpus() > 0
    n_encoders = ec.num_encoders or (cluster_gpus() if use_gpu else 1)
    encode = EncodeStage(
        encoder=ec.encoder,
        weights=ec.weights,
        device="cuda" if use_gpu else "cpu",
        allow_random=ec.allow_random_weights,
        resources=Resources(cpus=1, gpus=1 if use_gpu else 0),
    )
    encoders = stage_actors(encode, n_encoders)
    info = ray.get(encoders[0].invoke.remote("encoder_info"))  # raises EncoderLoadError early
    settings = CacheSettings(
        encoder=info["name"],
        weights=info["weights"],
        weights_digest=info["weights_digest"],
        pretrained=info["pretrained"],
        feature_dim=info["feature_dim"],
        sample_fps=ec.fps,
        image_size=ec.image_size,
        max_frames=ec.max_frames,
    )
    cache = FeatureCache.create(cache_dir, settings, rebuild=ec.rebuild, dataset_root=dataset_dir)
    with atomic_path(cache.root / "extract_config.yaml") as tmp:
        tmp.write_text(dump_config(config))

    trigger_model = None
    if ec.trigger_checkpoint:
        from vtm.pipeline.checkpoint import load_trigger_model

        trigger_model, _, report = load_trigger_model(Path(ec.trigger_checkpoint), settings)
        for line in report.lines():
            log.warning("trigger checkpoint %s", line)

    summary = ExtractSummary(cache.root, videos=len(videos), pretrained=settings.pretrained)
    # Videos gone from disk keep their rows while they are ok (their features stay useful); a failure
    # that no longer exists is forgotten.
    found = {v.video_id for v in videos}
    rows = {r["video_id"]: r for r in cache.manifest().to_dicts() if r["status"] == schema.STATUS_OK or r["video_id"] in found}
    todo = []
    for v in videos:
        prior = rows.get(v.video_id)
        unchanged = prior is not None and prior["size_bytes"] == v.size_bytes and prior["mtime_ns"] == v.mtime_ns
        digest = prior["digest"] if unchanged else content_digest(v.path)
        if prior and prior["status"] == schema.STATUS_OK and prior["digest"] == digest and prior["fingerprint"] == settings.fingerprint and cache.has_video(v.video_id):
            summary.skipped += 1
            continue
        base = {"video_id": v.video_id, "path": v.relpath, "size_bytes": v.size_bytes, "mtime_ns": v.mtime_ns, "digest": digest, "fingerprint": settings.fingerprint}
        todo.append(_Video(v, base))

    decode_stage = decode_stage or DecodeStage(image_size=ec.image_size)
    _Extraction(cache, config, decode_stage, encoders, rows, summary, progress, trigger_model).run(todo)
    summary.seconds = time.perf_counter() - started
    return summary


class _Extraction:
    """The streaming loop: keeps a bounded number of probes, decodes and encodes in flight."""

    def __init__(self, cache: FeatureCache, config: Config, decode_stage: DecodeStage, encoders: list, rows: dict, summary: ExtractSummary, progress: bool, trigger_model=None):
        ec = config.extract
        self.cache, self.rows, self.summary = cache, rows, summary
        self.segment_frames = ec.segment_frames
        self.probe = stage_task(ProbeStage(fps=ec.fps, max_frames=ec.max_frames))
        self.decode = stage_task(decode_stage)
        self.change_score = dataclasses.replace(config.change_score)
        self.encoders = encoders
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.max_decodes = 2 * cpus
        self.max_probes = cpus
        self.per_encoder_queue = 2
        self.progress = progress
        self.trigger_model = trigger_model

    def run(self, todo: list[_Video]) -> None:
        waiting = deque(todo)
        segments: deque = deque()  # (video, segment number, frame indices)
        probes: dict = {}  # ref -> video
        decoded: deque = deque()  # (ref, video, seg) decoded, waiting for an encoder
        decodes: dict = {}  # ref -> (video, seg)
        encodes: dict = {}  # ref -> (video, seg, encoder number)
        load = [0] * len(self.encoders)
        bar = tqdm(total=len(todo), unit="video", disable=not self.progress, dynamic_ncols=True, desc="extract")
        frames_done, t0, last_flush = 0, time.perf_counter(), time.perf_counter()
        try:
            while waiting or probes or segments or decoded or decodes or encodes:
                while waiting and len(probes) < self.max_probes and len(segments) < 4 * self.max_decodes:
                    v = waiting.popleft()
                    probes[self.probe({"path": str(v.file.path)})] = v
                while segments and len(decodes) + len(decoded) < self.max_decodes:
                    v, seg, idx = segments.popleft()
                    if not v.failed:
                        batch = {"path": str(v.file.path), "frame_index": idx, "rotation": v.plan.rotation, "decoder": v.plan.decoder, "segment": seg}
                        decodes[self.decode(batch)] = (v, seg)
                while decoded and min(load) < self.per_encoder_queue:
                    ref, v, seg = decoded.popleft()
                    k = int(np.argmin(load))
                    load[k] += 1
                    encodes[self.encoders[k].call.remote(ref)] = (v, seg, k)

                ready, _ = ray.wait(list(probes) + list(decodes) + list(encodes), num_returns=1, timeout=1.0)
                for ref in ready:
                    if ref in probes:
                        v = probes.pop(ref)
                        try:
                            v.plan = ray.get(ref)["plan"]
                        except Exception as e:  # noqa: BLE001 - one video's failure is data
                            self._fail(v, e, bar)
                            continue
                        starts = range(0, len(v.plan.frame_index), self.segment_frames)
                        v.n_segments = len(starts)
                        segments.extend((v, i, v.plan.frame_index[s : s + self.segment_frames]) for i, s in enumerate(starts))
                    elif ref in decodes:
                        v, seg = decodes.pop(ref)
                        decoded.append((ref, v, seg))  # the frames stay in the object store
                    else:
                        v, seg, k = encodes.pop(ref)
                        load[k] -= 1
                        if v.failed:
                            continue
                        try:
                            v.parts[seg] = ray.get(ref)
                        except Exception as e:  # noqa: BLE001
                            self._fail(v, e, bar)
                            continue
                        if len(v.parts) == v.n_segments:
                            frames_done += self._finish(v)
                            bar.update(1)
                            bar.set_postfix(frames_s=f"{frames_done / (time.perf_counter() - t0):.1f}", failed=len(self.summary.failed))
                if time.perf_counter() - last_flush > MANIFEST_FLUSH_S:
                    self.cache.write_manifest(self.rows.values())
                    last_flush = time.perf_counter()
        finally:
            self.cache.write_manifest(self.rows.values())
            bar.close()
            self.summary.frames += frames_done

    def _fail(self, v: _Video, err: BaseException, bar) -> None:
        v.failed = True
        v.parts.clear()
        reason = failure_reason(err)
        self.rows[v.row["video_id"]] = {**v.row, "status": schema.STATUS_FAILED, "error": reason}
        self.summary.failed.append((v.row["path"], reason))
        bar.update(1)

    def _finish(self, v: _Video) -> int:
        parts = [v.parts[i] for i in range(v.n_segments)]
        v.parts.clear()
        joined = {k: np.concatenate([p[k] for p in parts]) for k in ("features", "hist", "grid")}
        plan = v.plan
        scored = self.change_score({**joined, "timestamps": plan.timestamps})
        if self.trigger_model is not None:
            inputs = frame_inputs(self.trigger_model.config, joined["features"], joined["hist"], joined["grid"])
            scored["trigger_score"], _ = self.trigger_model.score_video(inputs, plan.timestamps)
        self.cache.write_video(
            v.row["video_id"], joined["features"], plan.timestamps, plan.frame_index, scored, color_hist=joined["hist"], color_grid=joined["grid"]
        )
        self.rows[v.row["video_id"]] = {
            **v.row,
            "duration_s": plan.duration_s,
            "native_fps": plan.native_fps,
            "width": plan.width,
            "height": plan.height,
            "rotation": plan.rotation,
            "frames_sampled": len(plan.frame_index),
            "decoder": plan.decoder,
            "status": schema.STATUS_OK,
            "error": None,
        }
        self.summary.ok += 1
        return len(plan.frame_index)
