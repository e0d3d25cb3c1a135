"""`vtm describe`: describe only the triggered windows of a whole archive.

    per video, in the driver, from the cache (no decoding): score (the checkpoint's trigger model, or the
    training-free change score) -> select windows (threshold, peaks, merging, budget) -> the adapter's
    context for each window (the time-aware encoder's output)
    -> decode only the windows' key frames (CPU tasks) -> describe [+ detect objects] (actors holding the VLM;
       batches mix windows of several videos) -> video summary (the same actors) -> JSON, WebVTT, timeline
       plot, thumbnails [, spoken summary] per video

Outputs in OUT_DIR (`vtm.pipeline.describe_output`), per video: `<video path>.json` (the analysis, see
`analysis_json`; with --objects each trigger's DETR detections), `<video path>.vtt`, `<video path>.timeline.png`
(scores, threshold, triggers), `<video path>.frames/NN.jpg` (each window's key frame, objects drawn) and, with
--audio, `<video path>.wav` (the summary, spoken); for the run: `descriptions.parquet` (every description of the
run's settings, rebuilt at the end), `describe_manifest.json` (per video: status, error, fingerprint) and
`describe_config.yaml`.
Every file is written atomically. A video's manifest entry is written after its files, so a re-run
skips exactly the videos whose outputs are complete and were made with the same cache content, model,
checkpoint and settings (the fingerprint); the rest are (re)described.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from vtm.cache import schema
from vtm.cache.atomic import atomic_path, write_json
from vtm.cache.output_dir import owned_output_dir
from vtm.cache.storage import StorageError, stat_object
from vtm.cache.store import CacheError, FeatureCache
from vtm.cache.windows import read_model_inputs
from vtm.models.llava_adapter import LanguageModelLoadError
from vtm.models.trigger_model import TriggerModel
from vtm.pipeline.checkpoint import CheckpointError, load_trigger_model
from vtm.pipeline.config import Config, dump_config
from vtm.pipeline.describe_output import (
    CONFIG_FILE,
    DESCRIPTIONS_FILE,
    MANIFEST_FILE,
    analysis_json,
    webvtt,
)
from vtm.pipeline.describer import describe_stage, window_context
from vtm.pipeline.discover import content_digest
from vtm.pipeline.executor import ActorPool, Batching, Call, Executor, TaskPool
from vtm.pipeline.ray_runner import cluster_gpus, get_plain, init_ray, release, stage_actors, stage_task
from vtm.pipeline.rescore import ensure_change_scores
from vtm.stages.base import Resources
from vtm.stages.decode import DecodeStage, decode_batch
from vtm.stages.describe import DescribeStage, joined_summary
from vtm.stages.select_windows import SelectWindowsStage
from vtm.ui.plots import timeline_png
from vtm.ui.speech import speak_to_wav
from vtm.ui.thumbnails import display_frame, draw_source_objects, jpeg_bytes, rescale_boxes

log = logging.getLogger(__name__)

KEY_FRAMES_PER_DECODE = 32  # key frames per decode task (bounds a task's memory in --dense)

DESCRIPTIONS_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("video_path", pa.string(), nullable=False),  # relative to the dataset root, as in the cache manifest
        pa.field("trigger", pa.int32(), nullable=False),  # 0.. in time order within the video
        pa.field("timestamp_s", pa.float64(), nullable=False),
        pa.field("frame_index", pa.int64(), nullable=False),  # in the source video
        pa.field("trigger_confidence", pa.float32(), nullable=False),
        pa.field("description", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
    ]
)


@dataclass
class DescribeSummary:
    out_dir: Path
    videos: int = 0  # ok in the cache
    skipped: int = 0  # already described with the same fingerprint
    described: int = 0  # described by this run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    frames_sampled: int = 0  # sampled frames of the videos described by this run
    frames_to_vlm: int = 0  # key frames sent to the vision-language model (one per window)
    windows: int = 0
    vlm_seconds: float = 0.0  # generation time summed over the describe workers (windows and summaries)
    seconds: float = 0.0  # wall time of the whole run
    model: str = ""
    adapter: bool = False

    @property
    def all_ok(self) -> bool:
        return not self.failed

    @property
    def vlm_share(self) -> float:
        return self.frames_to_vlm / self.frames_sampled if self.frames_sampled else 0.0

    @property
    def windows_per_s(self) -> float:
        return self.windows / self.seconds if self.seconds else 0.0

    def report(self) -> dict:
        return {
            "videos": self.videos,
            "described": self.described,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "frames_sampled": self.frames_sampled,
            "frames_to_vlm": self.frames_to_vlm,
            "vlm_share": round(self.vlm_share, 4),
            "windows": self.windows,
            "vlm_seconds": round(self.vlm_seconds, 3),
            "seconds": round(self.seconds, 3),
            "windows_per_s": round(self.windows_per_s, 3),
            "model": self.model,
            "adapter": self.adapter,
        }


def pick_windows(select: SelectWindowsStage, timestamps: np.ndarray, score: np.ndarray, dense: bool = False) -> dict:
    """{trigger_index, trigger_time, trigger_score}: the selected triggers, or every sampled frame when dense."""
    if dense:
        idx = np.arange(len(timestamps))
        return {
            "trigger_index": idx,
            "trigger_time": np.asarray(timestamps, np.float64),
            "trigger_score": np.asarray(score, np.float64),
        }
    return select({"timestamps": timestamps, "score": score})


# --- the job --------------------------------------------------------------------------------------------


@dataclass
class _Video:
    row: dict  # the cache manifest row
    source: Path | str  # the video file, or its object-storage URL
    fingerprint: str
    frames_analyzed: int = 0
    sample_index: np.ndarray | None = None  # the windows' centre samples
    times: np.ndarray | None = None
    scores: np.ndarray | None = None
    frame_index: np.ndarray | None = None
    context: np.ndarray | None = None
    mask: np.ndarray | None = None
    timeline: tuple | None = None  # (timestamps, score) of every sampled frame, for the plot
    descriptions: dict = field(default_factory=dict)  # window number -> text
    objects: dict = field(default_factory=dict)  # window number -> objects found (key-frame pixels)
    pictures: dict = field(default_factory=dict)  # window number -> the key frame at display size, for its thumbnail

    @property
    def n_windows(self) -> int:
        return len(self.sample_index)


@dataclass(frozen=True)
class _Describer:
    """What describes: the VLM, the trigger model that scores, and the fingerprint of both."""

    stage: DescribeStage
    trigger_model: TriggerModel | None
    digest: str  # of the model choice and the checkpoint's files


def run_describe(
    cache_dir: Path,
    out_dir: Path,
    config: Config = Config(),
    checkpoint: Path | None = None,
    progress: bool = True,
    dataset_root: Path | None = None,
) -> DescribeSummary:
    """Describe the triggered windows of every `ok` video of the cache; see the module docstring.

    `config.triggers` picks the windows (threshold, min_gap_s, before_s/after_s, max_triggers, ...),
    `config.describe` the model and how it runs. `dataset_root` is where the videos are now, if they
    moved as a whole since extract (default: where the cache says they were). `out_dir` must be new, empty
    or an earlier describe output (`vtm.cache.output_dir`), and is locked for the run: a second describe
    into it is refused with who holds it.
    """
    with owned_output_dir(Path(out_dir), "describe", "vtm describe", "--out", _is_describe_output):
        return _describe(cache_dir, out_dir, config, checkpoint, progress, dataset_root)


def _is_describe_output(out_dir: Path) -> bool:
    """A describe output written before outputs were marked: its manifest is vtm's."""
    try:
        manifest = json.loads((out_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "format_version" in manifest and isinstance(manifest.get("videos"), dict)


def _describe(
    cache_dir: Path, out_dir: Path, config: Config, checkpoint: Path | None, progress: bool, dataset_root: Path | None
) -> DescribeSummary:
    started = time.perf_counter()
    dc = config.describe
    cache = FeatureCache.open(cache_dir)
    ensure_change_scores(cache, config.change_score, progress)  # an older cache, or other change_score settings
    root = Path(dataset_root) if dataset_root else cache.dataset_root
    if root is None:
        raise CacheError(
            f"the cache at {cache.root} does not record where its videos are; pass the dataset directory (dataset_root)"
        )
    out_dir = Path(out_dir)
    describer = _build_describer(cache, config, checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / CONFIG_FILE) as tmp:
        tmp.write_text(dump_config(config))
    manifest = _read_manifest(out_dir)
    stage = describer.stage
    summary = DescribeSummary(out_dir, model=stage.model, adapter=stage.adapter is not None)
    rows = cache.manifest().filter(pl.col("status") == schema.STATUS_OK).sort("path").to_dicts()
    summary.videos = len(rows)
    todo = []
    current: dict[str, str] = {}  # video id -> fingerprint of this run's settings
    for row in rows:
        fp = _video_fingerprint(describer.digest, cache, config, row)
        current[row["video_id"]] = fp
        prior = manifest["videos"].get(row["video_id"])
        if prior and prior["status"] == "ok" and prior["fingerprint"] == fp and _outputs_complete(out_dir, prior):
            summary.skipped += 1
            continue
        todo.append(_Video(row, row.get("url") or root / row["path"], fp))

    if todo:  # nothing to do starts no Ray and loads no model
        # Until this run ends, the table and the report would describe an earlier state: drop them.
        (out_dir / DESCRIPTIONS_FILE).unlink(missing_ok=True)
        manifest["last_run"] = {"complete": False}
        _write_manifest(out_dir, manifest)
        init_ray(config.ray.address)
        use_gpu = dc.device != "cpu" and cluster_gpus() > 0
        stage = dataclasses.replace(
            stage, device="cuda" if use_gpu else "cpu", resources=Resources(cpus=1, gpus=1 if use_gpu else 0)
        )
        actors = stage_actors(stage, dc.num_describers or (cluster_gpus() if use_gpu else 1))
        try:
            info = get_plain(actors[0].invoke.remote("model_info"), LanguageModelLoadError)  # fails here, once
            log.info("describing with %s", info)
            _Description(
                cache, config, describer.trigger_model, stage, actors, out_dir, manifest, summary, progress
            ).run(todo)
        finally:
            release(actors)  # the actors hold CPUs/GPUs and a model: free them with the job, not when collected
    _write_descriptions_table(out_dir, manifest, current, stage.model)
    summary.seconds = time.perf_counter() - started
    manifest["last_run"] = {**summary.report(), "complete": True}
    _write_manifest(out_dir, manifest)
    return summary


def _build_describer(cache: FeatureCache, config: Config, checkpoint: Path | None) -> _Describer:
    """Check the checkpoint against the cache and the model against the checkpoint, before any worker starts."""
    trigger_model = None
    if checkpoint is not None:
        trigger_model, _, report = load_trigger_model(Path(checkpoint), cache.settings)
        if report.mismatches:
            raise CheckpointError(
                f"checkpoint {checkpoint} was trained on other features than the cache at {cache.root} holds "
                f"({'; '.join(report.mismatches)}): "
                "its scores would be meaningless here. Describe a cache extracted with the same encoder and "
                "settings, or train on this cache."
            )
        for line in report.lines():
            log.warning("checkpoint %s", line)
    stage, digest = describe_stage(checkpoint, config.describe)
    return _Describer(stage, trigger_model, digest)


def _video_fingerprint(describer_digest: str, cache: FeatureCache, config: Config, row: dict) -> str:
    """What a video's outputs depend on: its cached content, the models, the settings that change them."""
    dc = config.describe
    settings = {
        "describer": describer_digest,
        "cache": cache.settings.fingerprint,
        "video": row["digest"],
        "path": row["path"],
        "triggers": {k: v for k, v in dataclasses.asdict(config.triggers).items() if k != "resources"},
        "describe": {
            k: getattr(dc, k)
            for k in (
                "model",
                "prompt",
                "max_windows_per_video",
                "dense",
                "image_size",
                "max_new_tokens",
                "summary",
                "objects",
                "audio",
            )
        },
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Description:
    """What describe does with each video and result; `Executor` schedules: it scores and decodes a bounded
    number of videos ahead of the describe actors."""

    def __init__(
        self,
        cache,
        config: Config,
        trigger_model,
        stage: DescribeStage,
        actors: list,
        out_dir: Path,
        manifest: dict,
        summary: DescribeSummary,
        progress: bool,
    ):
        dc = config.describe
        self.cache, self.config, self.trigger_model, self.stage = cache, config, trigger_model, stage
        self.out_dir, self.manifest, self.summary, self.progress = out_dir, manifest, summary, progress
        select = config.triggers
        if dc.max_windows_per_video is not None:
            cap = (
                dc.max_windows_per_video
                if select.max_triggers is None
                else min(select.max_triggers, dc.max_windows_per_video)
            )
            select = dataclasses.replace(select, max_triggers=cap)
        self.select = dataclasses.replace(select)
        self.key_frame_size = dc.image_size  # key frames are this square: objects' boxes map back from it
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.max_decodes = 2 * cpus
        # Batches mix windows of several videos; a video's summary goes ahead of the windows still queued.
        self.describers = ActorPool(actors, per_actor=2, batching=Batching(dc.batch_size, self._batch, self._described))
        self.max_pending = 4 * dc.batch_size * len(actors)  # windows decoded and waiting for an actor
        self.decode = TaskPool(stage_task(DecodeStage(image_size=dc.image_size)), self.max_decodes)

    def run(self, todo: list[_Video]) -> None:
        self.executor = Executor(
            [self.decode, self.describers],
            self._fail,
            lambda: _write_manifest(self.out_dir, self.manifest),
            total=len(todo),
            desc="describe",
            progress=self.progress,
        )
        self.executor.run(
            todo,
            self._start,
            admit=lambda: self.decode.backlog < self.max_decodes and len(self.describers.queue) < self.max_pending,
        )

    def _start(self, v: _Video) -> None:
        if not self._prepare(v):
            if not self.executor.has_failed(v):
                self._summarize(v)  # no windows: nothing to decode or describe
            return
        for lo in range(0, v.n_windows, KEY_FRAMES_PER_DECODE):
            ks = list(range(lo, min(lo + KEY_FRAMES_PER_DECODE, v.n_windows)))
            batch = decode_batch(v.source, v.frame_index[ks], v.row["rotation"] or 0, v.row["decoder"] or "decord")
            self.decode.submit(Call(v, (batch,), partial(self._decoded, v, ks)))

    def _decoded(self, v: _Video, ks: list[int], out: dict) -> None:
        frames = out["frames"]
        for j, i in enumerate(ks):
            v.pictures[i] = display_frame(frames[j], v.row["width"], v.row["height"])
            self.describers.submit(Call(v, (i, frames[j]), failed_as="describe worker failed: "))

    def _described(self, calls: list[Call], result: dict) -> None:
        self.summary.vlm_seconds += result["vlm_seconds"]
        objects = result.get("objects") or [None] * len(calls)
        for call, text, found in zip(calls, result["description"], objects):
            v, i = call.item, call.args[0]
            if self.executor.has_failed(v) or i in v.descriptions:  # keyed by window: nothing is described twice
                continue
            v.descriptions[i] = text
            if found is not None:
                v.objects[i] = rescale_boxes(found, (self.key_frame_size,) * 2, (v.row["width"], v.row["height"]))
            if len(v.descriptions) == v.n_windows:
                self._summarize(v)

    def _summarize(self, v: _Video) -> None:
        descriptions = [v.descriptions[i] for i in range(v.n_windows)]
        if self.stage.summary == "join" or not v.descriptions:
            self._finish(v, joined_summary(list(v.times), descriptions, v.frames_analyzed))
            return
        request = {
            "times": [float(t) for t in v.times],
            "descriptions": descriptions,
            "frames_analyzed": v.frames_analyzed,
        }
        call = Call(
            v,
            ("summarize", request),
            partial(self._summarized, v),
            method="invoke",
            failed_as="describe worker failed on the summary: ",
        )
        self.describers.submit(call, first=True)

    def _summarized(self, v: _Video, result: dict) -> None:
        self.summary.vlm_seconds += result["vlm_seconds"]
        self._finish(v, result["summary"])

    def _prepare(self, v: _Video) -> bool:
        """Score and select from the cache; check the source video. False if there is nothing to decode."""
        vid = v.row["video_id"]
        try:
            scores = self.cache.read_scores([vid]).sort("sample_index")
            timestamps = scores["timestamp_s"].to_numpy()
            features = None
            if self.trigger_model is not None:
                features, _ = read_model_inputs(self.cache, vid, self.trigger_model.config)
                score, _ = self.trigger_model.score_video(features, timestamps)
            else:
                score = scores["change_score"].to_numpy()
            picked = pick_windows(self.select, timestamps, score, self.config.describe.dense)
        except (OSError, CacheError) as e:
            self.executor.fail(v, f"cannot read this video from the cache: {e}")
            return False
        v.frames_analyzed = len(timestamps)
        v.timeline = (timestamps, np.asarray(score, np.float64))
        v.sample_index = np.asarray(picked["trigger_index"], np.int64)
        v.times, v.scores = picked["trigger_time"], picked["trigger_score"]
        v.frame_index = scores["frame_index"].to_numpy()[v.sample_index]
        if v.n_windows == 0:
            return False
        problem = _source_problem(v)
        if problem:
            self.executor.fail(v, problem)
            return False
        if self.stage.adapter is not None:
            v.context, v.mask = window_context(self.trigger_model, features, timestamps, v.sample_index)
        return True

    def _batch(self, calls: list[Call]) -> tuple:
        """The describe stage's batch of these windows (each call's args: window number, key frame)."""
        batch = {"frames": np.stack([call.args[1] for call in calls])}
        if self.stage.adapter is not None:
            batch["context"] = np.stack([call.item.context[call.args[0]] for call in calls])
            batch["mask"] = np.stack([call.item.mask[call.args[0]] for call in calls])
        return (batch,)

    def _fail(self, v: _Video, reason: str) -> None:
        v.descriptions.clear()
        v.pictures.clear()
        v.context = v.mask = None
        self.manifest["videos"][v.row["video_id"]] = {
            "path": v.row["path"],
            "status": "failed",
            "error": reason,
            "fingerprint": v.fingerprint,
        }
        self.summary.failed.append((v.row["path"], reason))

    def _finish(self, v: _Video, video_summary: str) -> None:
        texts = [v.descriptions[i] for i in range(v.n_windows)]
        objects = [v.objects.get(i, []) for i in range(v.n_windows)] if self.stage.detector is not None else None
        analysis = analysis_json(
            str(v.source), v.frames_analyzed, v.times, v.frame_index, v.scores, texts, video_summary, objects
        )
        rel = v.row["path"]
        entry = {
            "path": rel,
            "status": "ok",
            "error": None,
            "fingerprint": v.fingerprint,
            "json": f"{rel}.json",
            "vtt": f"{rel}.vtt",
            "timeline": f"{rel}.timeline.png",
            "triggers": v.n_windows,
        }
        entry["frames"] = self._write_thumbnails(v, objects)
        timestamps, score = v.timeline
        timeline_png(
            self.out_dir / entry["timeline"], timestamps, score, self.select.threshold, v.times, v.scores, title=rel
        )
        if self.config.describe.audio:
            entry["audio"] = f"{rel}.wav"
            speak_to_wav(video_summary, self.out_dir / entry["audio"])
        write_json(self.out_dir / entry["json"], analysis)
        t = self.config.triggers
        with atomic_path(self.out_dir / entry["vtt"]) as tmp:
            tmp.write_text(
                webvtt([float(x) for x in v.times], texts, t.before_s, t.after_s, v.row.get("duration_s")),
                encoding="utf-8",
            )
        # Last: only now is the video complete for a re-run.
        self.manifest["videos"][v.row["video_id"]] = entry
        self.summary.described += 1
        self.summary.windows += v.n_windows
        self.summary.frames_to_vlm += v.n_windows
        self.summary.frames_sampled += v.frames_analyzed
        v.context = v.mask = None
        v.pictures.clear()
        self.executor.done(v)

    def _write_thumbnails(self, v: _Video, objects: list | None) -> list[str]:
        """One JPEG per window, `<video>.frames/NN.jpg` in time order, objects drawn; older extra ones removed."""
        folder = self.out_dir / f"{v.row['path']}.frames"
        folder.mkdir(parents=True, exist_ok=True)
        names = [f"{i + 1:02d}.jpg" for i in range(v.n_windows)]
        for i, name in enumerate(names):
            picture = draw_source_objects(v.pictures[i], objects[i] if objects else [], v.row["width"], v.row["height"])
            with atomic_path(folder / name) as tmp:
                tmp.write_bytes(jpeg_bytes(picture))
        for old in folder.glob("*.jpg"):
            if old.name not in names:
                old.unlink()
        return [f"{v.row['path']}.frames/{name}" for name in names]


def _outputs_complete(out_dir: Path, entry: dict) -> bool:
    files = [entry.get(k) for k in ("json", "vtt", "timeline", "audio")] + entry.get("frames", [])
    return all(entry.get(k) for k in ("json", "vtt", "timeline")) and all((out_dir / f).is_file() for f in files if f)


def _source_problem(v: _Video) -> str | None:
    """Why the source video cannot give the key frames the cache's frame indices point at, or None."""
    path, row = v.source, v.row
    if row.get("url"):
        try:
            stored = stat_object(row["url"])
            changed = stored.size_bytes != row["size_bytes"] or (
                stored.etag != row.get("etag") and content_digest(row["url"]) != row["digest"]
            )
        except StorageError as e:
            return f"cannot read the source video: {e}"
        if changed:
            return (
                f"source video {row['url']} changed since extract (other content than the cache was built from): "
                "re-run `vtm extract` first"
            )
        return None
    if not path.is_file():
        return (
            f"source video not found at {path} (moved or deleted since extract?): put it back, or pass the directory "
            "the videos are in now"
        )
    stat = path.stat()
    if stat.st_size != row["size_bytes"] or (
        stat.st_mtime_ns != row["mtime_ns"] and content_digest(path) != row["digest"]
    ):
        return (
            f"source video {path} changed since extract (other content than the cache was built from): re-run `vtm "
            "extract` first"
        )
    return None


def _read_manifest(out_dir: Path) -> dict:
    path = out_dir / MANIFEST_FILE
    if not path.is_file():
        return {"format_version": 1, "videos": {}}
    return json.loads(path.read_text())


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    write_json(out_dir / MANIFEST_FILE, manifest)


def _write_descriptions_table(out_dir: Path, manifest: dict, current: dict[str, str], model: str) -> None:
    """descriptions.parquet: every description made with this run's settings (this run's and earlier runs')."""
    rows = []
    for vid, entry in sorted(manifest["videos"].items(), key=lambda kv: kv[1]["path"]):
        if entry["status"] != "ok" or current.get(vid) != entry["fingerprint"]:
            continue
        path = out_dir / entry["json"]
        if not path.is_file():
            continue
        analysis = json.loads(path.read_text())
        rows += [
            {
                "video_id": vid,
                "video_path": entry["path"],
                "trigger": k,
                "timestamp_s": t["timestamp"],
                "frame_index": t["frame_index"],
                "trigger_confidence": t["trigger_confidence"],
                "description": t["analysis"],
                "model": model,
            }
            for k, t in enumerate(analysis["triggers"])
        ]
    table = pa.Table.from_pylist(rows, schema=DESCRIPTIONS_SCHEMA)
    with atomic_path(out_dir / DESCRIPTIONS_FILE) as tmp:
        pq.write_table(table, tmp)
