"""`vtm extract`: decode every video, encode sampled frames, score changes, fill the feature cache.

    discover -> probe (CPU task) -> decode segments (CPU tasks) -> encode (actors holding the model)
             -> change score + write (driver, per video, as soon as its last segment is back)

Videos stream through: only the segments in flight are in memory, each finished video is written
atomically, and the manifest is flushed every few seconds, so a killed run resumes where it stopped.

Speed (bench/bench_extract_scale.py): decode tasks run one decoder thread each, skip the frames no
other frame refers to (a sampled frame may become its neighbour, within one frame interval) and use
the GPU's video decoder where the encoders have a GPU; a new cache is probed while the model loads;
and a re-run with nothing to do answers from the cache alone, without Ray or the model.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import ray

from vtm.cache import schema
from vtm.cache.atomic import atomic_path, write_json
from vtm.cache.storage import StorageError, is_url
from vtm.cache.store import CacheError, CacheSettings, FeatureCache
from vtm.cache.windows import frame_inputs
from vtm.models.encoder_weights import EncoderLoadError, weights_source
from vtm.pipeline.config import Config, ConfigError, ExtractConfig, dump_config
from vtm.pipeline.discover import VideoFile, content_digest, discover_videos
from vtm.pipeline.executor import ActorPool, Call, Executor, TaskPool, ThreadPool
from vtm.pipeline.ray_runner import cluster_gpus, get_plain, init_ray, release, stage_actors, stage_task
from vtm.pipeline.rescore import ensure_change_scores, score_record, scored_with
from vtm.stages.base import Resources
from vtm.stages.decode import (
    DecodeError,
    DecodeStage,
    ProbeStage,
    VideoPlan,
    cuda_decoding_built,
    decode_batch,
    partial_decode_warning,
)
from vtm.stages.encode import EncodeStage

log = logging.getLogger(__name__)


@dataclass
class ExtractSummary:
    cache_dir: Path
    videos: int = 0  # found in the dataset
    skipped: int = 0  # already in the cache with the same content and settings
    ok: int = 0  # extracted by this run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    gone: int = 0  # in the cache, their source no longer in the dataset: kept (their features stay usable)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path, what was lost) of videos kept partly
    frames: int = 0  # sampled frames encoded by this run
    seconds: float = 0.0
    pretrained: bool = True
    # seconds each stage worked, summed over its workers (probe_s, decode_s, ...)
    busy_s: Counter = field(default_factory=Counter)
    # decode tasks by how they decoded (pyav-nonref, decord, ...)
    decoded_with: Counter = field(default_factory=Counter)
    started_ray: bool = False  # False: everything was already in the cache, nothing was started

    @property
    def all_ok(self) -> bool:
        return not self.failed


EARLY_BYTES = 2**30  # decoded segments held for the encoders while they load, at most
WRITE_THREADS = 4  # threads scoring and writing finished videos (numpy, scipy and file writes release the GIL)


@dataclass
class _Video:
    """One video in flight: its manifest row so far, its plan, and the segments back so far."""

    file: VideoFile
    row: dict
    plan: VideoPlan | None = None
    parts: dict = field(default_factory=dict)
    n_segments: int = 0


def run_extract(
    dataset_dir: Path | str,
    cache_dir: Path,
    config: Config = Config(),
    progress: bool = True,
    decode_stage: DecodeStage | None = None,
) -> ExtractSummary:
    """Extract every video under `dataset_dir` into the cache at `cache_dir`; see the module docstring.

    `dataset_dir` may be an object-storage URL (s3://bucket/prefix, see `vtm.cache.storage`): the workers stream
    its objects. `decode_stage` replaces the default DecodeStage (e.g. another decoder implementation). The
    cache is locked for the whole run: a second writer is refused with who holds it.
    """
    weights = config.extract.weights
    # A usage error: said before Ray starts or a cache folder is made.
    if weights and not Path(weights).expanduser().is_file():
        raise EncoderLoadError(
            f"weights file {weights} not found; --weights (extract.weights) takes a local .pth or .safetensors file"
        )
    with FeatureCache.lock_for_writing(cache_dir, "vtm extract"):
        return _extract(dataset_dir, cache_dir, config, progress, decode_stage)


def _extract(
    dataset_dir: Path, cache_dir: Path, config: Config, progress: bool, decode_stage: DecodeStage | None
) -> ExtractSummary:
    ec = config.extract
    started = time.perf_counter()
    dataset_dir = dataset_dir if is_url(dataset_dir) else Path(dataset_dir).resolve()
    videos = discover_videos(dataset_dir)
    source = _encoder_source(ec)
    done = _nothing_to_do(videos, dataset_dir, Path(cache_dir), config, source)
    if done is not None:
        done.seconds = time.perf_counter() - started
        return done
    if progress:  # Ray's start and the model load take a while before the first video is done
        print(f"extract: {len(videos)} videos; starting Ray and loading {ec.encoder} ...", file=sys.stderr, flush=True)
    init_ray(config.ray.address)

    use_gpu = ec.device != "cpu" and cluster_gpus() > 0
    if ec.decode_device in ("cuda", "nvdec") and not use_gpu:
        raise ConfigError(
            f"extract.decode_device is {ec.decode_device}, but the encoder runs on no GPU (no GPU in the Ray cluster, "
            "or extract.device is cpu): set extract.decode_device to auto or cpu, or run where Ray has a GPU"
        )
    # Only when asked: on 16 cores + H100, NVDEC through PyAV spared 40 % of the decoding CPU but finished later than
    # the cores (bench_extract_scale: work 24.5 s against 19.3 s). Each decode task falls back to its CPU.
    gpu_decode = use_gpu and ec.decode_device == "cuda" and cuda_decoding_built()
    n_encoders = ec.num_encoders or (cluster_gpus() if use_gpu else 1)
    encode = EncodeStage(
        encoder=ec.encoder,
        weights=ec.weights,
        device="cuda" if use_gpu else "cpu",
        allow_random=ec.allow_random_weights,
        # Decoding on the GPU shares it: the encoders take half of each GPU, the decode tasks the rest.
        resources=Resources(cpus=1, gpus=(0.5 if gpu_decode or ec.decode_device == "nvdec" else 1) if use_gpu else 0),
    )
    if decode_stage is None:
        decode_stage = DecodeStage(
            image_size=ec.image_size, nearest_frames=True, device="cuda" if gpu_decode else "cpu"
        )
        # Ray shows a task a GPU only if it asks for one: the decode tasks share what the encoders leave.
        # A decode task on NVDEC waits for the GPU about half its time, yet two sharing a core were slower
        # (bench_extract_scale, 16 cores + H100: 34.7 s of work against 28.6 s): each takes a whole core.
        if gpu_decode:
            tasks = max(1.0, ray.cluster_resources().get("CPU", 1))
            decode_stage = dataclasses.replace(
                decode_stage, resources=Resources(cpus=1, gpus=_decoders_gpu_share(tasks))
            )
    # One task function per stage for the whole run, so that a worker sets each stage up once, early calls or not.
    probe, decode = stage_task(ProbeStage(fps=ec.fps, max_frames=ec.max_frames)), stage_task(decode_stage)
    if ec.decode_device == "nvdec":  # with a GPU: checked above
        decode = _nvdec_beside(decode, decode_stage, ec.nvdec_streams)
    encoders = stage_actors(encode, n_encoders)
    extraction = None
    try:
        info_ref = encoders[0].invoke.remote("encoder_info")
        early = {}
        if ec.rebuild or not (Path(cache_dir) / schema.CACHE_JSON).is_file():
            # A new cache skips nothing, so every video will be probed and decoded: start while the encoders
            # load their model (10 s on a GPU machine, when 16 cores could decode).
            resources = ray.cluster_resources()
            cpus = max(1, int(resources.get("CPU", 1)))
            # Decoded segments wait in the object store for the encoders: a quarter of it at most, a GiB at most.
            # An encoder on the CPU is slower than the decoding anyway: segments decoded further ahead only wait.
            held = min(EARLY_BYTES, resources.get("object_store_memory", 0) / 4) if use_gpu else 0
            max_segments = max(2 * cpus, int(held // (ec.segment_frames * 3 * ec.image_size**2)))
            early = _start_early(
                videos, probe, decode, ec.segment_frames, info_ref, max_segments=max_segments, max_in_flight=2 * cpus
            )
        info = get_plain(info_ref, EncoderLoadError)  # a model that cannot load fails here, once
        settings = _cache_settings(info, ec)
        cache = FeatureCache.create(cache_dir, settings, rebuild=ec.rebuild, dataset_root=dataset_dir)
        with atomic_path(cache.root / schema.EXTRACT_CONFIG) as tmp:
            tmp.write_text(_recorded_config(config))
        if source is not None and _same_weights(source, info):
            write_json(cache.root / schema.ENCODER_SOURCE_JSON, {"source": source, "encoder_info": info})

        trigger_model = None
        if ec.trigger_checkpoint:
            from vtm.pipeline.checkpoint import load_trigger_model

            trigger_model, _, report = load_trigger_model(Path(ec.trigger_checkpoint), settings)
            for line in report.lines():
                log.warning("trigger checkpoint %s", line)

        # Videos already in the cache keep their features; their change scores follow this run's settings.
        ensure_change_scores(cache, config.change_score, progress)
        summary = ExtractSummary(cache.root, videos=len(videos), pretrained=settings.pretrained, started_ray=True)
        # Videos gone from disk keep their rows while they are ok (their features stay useful); a failure
        # that no longer exists is forgotten.
        found = {v.video_id for v in videos}
        rows = {
            r["video_id"]: r
            for r in cache.manifest().to_dicts()
            if r["status"] == schema.STATUS_OK or r["video_id"] in found
        }
        summary.gone = sum(1 for vid in rows if vid not in found)
        todo = []
        for v in videos:
            if v.error is not None:  # found but unreadable (folder, broken link): recorded, never skipped
                rows[v.video_id] = {
                    "video_id": v.video_id,
                    "path": v.relpath,
                    "size_bytes": 0,
                    "mtime_ns": 0,
                    "digest": "",
                    "fingerprint": settings.fingerprint,
                    "status": schema.STATUS_FAILED,
                    "error": v.error,
                }
                summary.failed.append((v.relpath, v.error))
                continue
            prior = rows.get(v.video_id)
            remote = {"url": v.path, "etag": v.etag} if is_url(v.path) else {}
            try:
                digest = _recorded_digest(prior, v)
                if digest is None:
                    digest = content_digest(v.path)
            except StorageError as e:  # this object cannot be read now: it fails alone
                rows[v.video_id] = {
                    "video_id": v.video_id,
                    "path": v.relpath,
                    "size_bytes": v.size_bytes,
                    "mtime_ns": v.mtime_ns,
                    "digest": "",
                    "fingerprint": settings.fingerprint,
                    **remote,
                    "status": schema.STATUS_FAILED,
                    "error": str(e),
                }
                summary.failed.append((v.relpath, str(e)))
                continue
            if _already_extracted(prior, digest, settings.fingerprint, cache):
                summary.skipped += 1
                # touched, same content (or the same content under a new ETag): next time needs no digest
                rows[v.video_id] = {**prior, "size_bytes": v.size_bytes, "mtime_ns": v.mtime_ns, **remote}
                continue
            base = {
                "video_id": v.video_id,
                "path": v.relpath,
                "size_bytes": v.size_bytes,
                "mtime_ns": v.mtime_ns,
                "digest": digest,
                "fingerprint": settings.fingerprint,
                **remote,
            }
            todo.append(_Video(v, base))

        extraction = _Extraction(cache, config, probe, decode, encoders, rows, summary, progress, trigger_model)
        extraction.run(todo, early)
        summary.seconds = time.perf_counter() - started
        return summary
    finally:
        if extraction is not None:  # calls still queued on the encoders end here, not retried on their way out
            for ref in extraction.encode.in_flight:
                ray.cancel(ref)
        release(encoders)  # the actors hold CPUs/GPUs and a model: free them with the job, not when collected


class SplitDecodes:
    """Decode tasks to the GPU's video decoders while fewer than `slots` of them run there, the others to the cores:
    the decoders alone give fewer frames per second than 16 cores, beside them they add about 75 % (16-core + H100,
    bench/bench_gpu_decoders.py). A callable like a `stage_task`: batch -> ObjectRef."""

    def __init__(self, on_cpu, on_gpu, slots: int):
        self.on_cpu, self.on_gpu, self.slots = on_cpu, on_gpu, slots
        self.running: set[ray.ObjectRef] = set()  # on the GPU

    def __call__(self, batch: dict) -> ray.ObjectRef:
        if self.running:
            done, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=0, fetch_local=False)
            self.running.difference_update(done)
        if len(self.running) >= self.slots:
            return self.on_cpu(batch)
        ref = self.on_gpu(batch)
        self.running.add(ref)
        return ref


def _decoders_gpu_share(tasks: float) -> float:
    """Each of `tasks` decode tasks' share of what the encoders leave of the cluster's GPUs (half), in the 4 decimals
    Ray takes, never 0 (Ray shows a task a GPU only if it asks for one)."""
    return max(0.0001, int(0.5 * cluster_gpus() / tasks * 10_000) / 10_000)


def _nvdec_beside(on_cpu, cpu_stage: DecodeStage, streams: int) -> SplitDecodes:
    """`extract.decode_device: nvdec`: `streams` decode tasks at a time with PyNvVideoCodec beside the CPU ones."""
    if importlib.util.find_spec("PyNvVideoCodec") is None:
        raise ConfigError(
            "extract.decode_device is nvdec, which needs PyNvVideoCodec: pip install pynvvideocodec (or use cpu)"
        )
    # A quarter of a core each: they mostly wait for the GPU.
    stage = dataclasses.replace(
        cpu_stage, device="nvdec", resources=Resources(cpus=0.25, gpus=_decoders_gpu_share(streams))
    )
    return SplitDecodes(on_cpu, stage_task(stage), streams)


@dataclass
class _Early:
    """A video started while the encoders load: its probe, and once that is back, its decode tasks."""

    probe: ray.ObjectRef
    probed: dict | None = None
    decodes: list = field(default_factory=list)


def _start_early(
    videos: list[VideoFile], probe, decode, segment_frames: int, info_ref, max_segments: int, max_in_flight: int
) -> dict[str, _Early]:
    """Probe and decode `videos` in order (`probe`, `decode`: the run's `stage_task`s) until `info_ref` (the
    encoder's model loaded) is ready: at most `max_in_flight` decodes running or queued in Ray, as many probes as
    keep them fed, and `max_segments` segments in all (they wait in the object store for the encoders). Returns the
    videos started, some perhaps still probing or probed with no decode yet; the run takes them from there. A probe
    that failed is left to the run, which records why."""
    early: dict[str, _Early] = {}
    upcoming = iter(videos)
    probing: dict[ray.ObjectRef, VideoFile] = {}
    probed: deque[VideoFile] = deque()  # probed, waiting for room to decode
    decoding: set[ray.ObjectRef] = set()
    segments = 0
    while True:
        while probed and len(decoding) < max_in_flight and segments < max_segments:
            v = probed.popleft()
            started = early[v.video_id]
            started.decodes = [decode(b) for b in _segment_batches(v.path, started.probed["plan"], segment_frames)]
            decoding.update(started.decodes)
            segments += len(started.decodes)
        while len(probing) + len(probed) < max(1, max_in_flight // 2) and segments < max_segments:
            v = next(upcoming, None)
            if v is None:
                break
            ref = probe({"path": str(v.path)})
            early[v.video_id], probing[ref] = _Early(ref), v
        if not probing and (not probed or segments >= max_segments):
            return early  # all started, or as many as may wait: the rest is the run's
        ready, _ = ray.wait([info_ref, *probing, *decoding], num_returns=1, fetch_local=False)
        if ready[0] == info_ref:
            return early
        if ready[0] in decoding:
            decoding.discard(ready[0])
            continue
        v = probing.pop(ready[0])
        try:
            early[v.video_id].probed = ray.get(ready[0])
        except Exception:  # noqa: BLE001 - the run gets the same error from this probe and records it
            continue
        probed.append(v)


def _segment_batches(path, plan: VideoPlan, segment_frames: int) -> list[dict]:
    """The decode tasks' batches of one video: `segment_frames` samples each."""
    batches = []
    for s in range(0, len(plan.frame_index), segment_frames):
        idx = plan.frame_index[s : s + segment_frames]
        # From the sample before: the decoder then sees every frame shown since, for the cut measure.
        around = plan.pts_around(idx, since=plan.frame_index[s - 1] if s else None)
        batches.append(decode_batch(path, idx, plan.rotation, plan.decoder, around, plan.n_frames))
    return batches


def _recorded_config(config: Config) -> str:
    """The configuration a cache keeps of the run that wrote it (`extract_config.yaml`), to run again with `--config`:
    `rebuild` is what that run did to the cache, not a setting of it, so it is kept false (true, the same command
    would delete what the cache holds, e.g. after the run was interrupted)."""
    return dump_config(dataclasses.replace(config, extract=dataclasses.replace(config.extract, rebuild=False)))


def _cache_settings(info: dict, ec: ExtractConfig) -> CacheSettings:
    """The cache settings of a run: what its encoder is (`EncodeStage.encoder_info`) and how it samples."""
    return CacheSettings(
        encoder=info["name"],
        weights=info["weights"],
        weights_digest=info["weights_digest"],
        pretrained=info["pretrained"],
        feature_dim=info["feature_dim"],
        sample_fps=ec.fps,
        image_size=ec.image_size,
        max_frames=ec.max_frames,
    )


def _encoder_source(ec: ExtractConfig) -> dict | None:
    """What decides the encoder's weights (`weights_source`), or None where only loading the model can say."""
    try:
        source = weights_source(ec.encoder, ec.weights)
    except EncoderLoadError:
        return None  # the run itself reports it, from the encoder actor
    if source is not None and "random" in source and not ec.allow_random_weights:
        return None
    return source


def _same_weights(source: dict, info: dict) -> bool:
    """Whether the encoder actor loaded the weights that `source` names (on a cluster its node could differ)."""
    if "file" in source:
        return info["weights"] != "random" and Path(info["weights"]).resolve() == Path(source["file"])
    return info["weights"] == ("random" if "random" in source else source["encoder"])


def _recorded_digest(prior: dict | None, v: VideoFile) -> str | None:
    """The content digest recorded for `v` when its file looks as it did then (size, mtime, ETag), else None."""
    recorded = (prior["size_bytes"], prior["mtime_ns"], prior.get("etag")) if prior is not None else None
    return prior["digest"] if recorded == (v.size_bytes, v.mtime_ns, v.etag) else None


def _already_extracted(prior: dict | None, digest: str, fingerprint: str, cache: FeatureCache) -> bool:
    """Whether the video whose content has `digest` is in the cache, ok, extracted with these settings."""
    return (
        prior is not None
        and prior["status"] == schema.STATUS_OK
        and prior["digest"] == digest
        and prior["fingerprint"] == fingerprint
        and cache.has_video(prior["video_id"])
    )


def _nothing_to_do(
    videos: list[VideoFile], dataset_dir: Path, cache_dir: Path, config: Config, source: dict | None
) -> ExtractSummary | None:
    """The run's summary when every video is already in the cache with the same content and settings, else None.

    Answers without Ray and without loading the model: the weights digest comes from the cache's
    record of the weights source (`weights_source`, a digest of the weights file) that built it.
    Anything else to do, or anything unusual (a failed video, a moved dataset, a checkpoint to apply,
    --rebuild), is left to the full run.
    """
    ec = config.extract
    record = cache_dir / schema.ENCODER_SOURCE_JSON
    if source is None or ec.rebuild or ec.trigger_checkpoint or not record.is_file():
        return None
    try:
        cache = FeatureCache.open(cache_dir)
        recorded = json.loads(record.read_text())
        if recorded["source"] != source or cache.dataset_root != dataset_dir:
            return None
        settings = _cache_settings(recorded["encoder_info"], ec)
    except (CacheError, OSError, ValueError, KeyError, TypeError):
        return None
    if settings.fingerprint != cache.settings.fingerprint or scored_with(cache) != score_record(config.change_score):
        return None  # other settings, or stored change scores to bring up to date: the full run does that
    rows = {r["video_id"]: r for r in cache.manifest().to_dicts()}
    if any(r["status"] != schema.STATUS_OK for r in rows.values()):
        return None
    for v in videos:
        prior = rows.get(v.video_id)
        digest = _recorded_digest(prior, v)
        if digest is None or not _already_extracted(prior, digest, settings.fingerprint, cache):
            return None
    resolved = _recorded_config(config)
    config_file = cache.root / schema.EXTRACT_CONFIG
    if not config_file.is_file() or config_file.read_text() != resolved:
        with atomic_path(config_file) as tmp:
            tmp.write_text(resolved)
    gone = len(set(rows) - {v.video_id for v in videos})
    return ExtractSummary(
        cache.root, videos=len(videos), skipped=len(videos), gone=gone, pretrained=settings.pretrained
    )


class _Extraction:
    """What extract does with each result; `Executor` schedules: a bounded number of probes, decodes and
    encodes in flight, so only the segments in flight are in memory."""

    def __init__(
        self,
        cache: FeatureCache,
        config: Config,
        probe,
        decode,
        encoders: list,
        rows: dict,
        summary: ExtractSummary,
        progress: bool,
        trigger_model=None,
    ):
        ec = config.extract
        self.cache, self.rows, self.summary = cache, rows, summary
        self.segment_frames = ec.segment_frames
        self.change_score = dataclasses.replace(config.change_score)
        self.sample_fps = ec.fps
        self.progress = progress
        self.trigger_model = trigger_model
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.max_decodes = 2 * cpus
        # Decoded segments stay in the object store until an encoder takes them (the encoder gets the reference).
        self.encode = ActorPool(encoders, per_actor=2)
        self.decode = TaskPool(decode, self.max_decodes, fetch=False, results_wait_in=self.encode)
        self.probe = TaskPool(probe, max_in_flight=cpus)
        # Scoring and writing a finished video takes this process 0.1-0.25 s: done in the loop, it kept 16 cores
        # half idle (bench_extract_scale on a 16-core machine: 37 of 52 s of work were writes).
        self.write = ThreadPool(self._score_and_write, WRITE_THREADS)
        self.frames_done, self.t0 = 0, time.perf_counter()

    def run(self, todo: list[_Video], early: dict[str, _Early] | None = None) -> None:
        """Extract `todo`; `early` (video id -> `_Early`) are videos already started while the encoders loaded."""
        early = early or {}
        # The segments decoded while the encoders loaded wait for them on top of the usual bound, which each encoded
        # segment brings back down (`_encoded`): new decodes keep the cores busy while that backlog drains (counted
        # in the bound, they idled 16 cores for seconds).
        self.decode.max_held = self.max_decodes + sum(len(e.decodes) for e in early.values())
        for v in todo:
            started = early.get(v.file.video_id)
            if started is None:
                continue
            if started.probed is None:
                self.probe.track(started.probe, Call(v, (), partial(self._probed, v)))
            else:
                self._probed(v, started.probed, started.decodes)
        self.executor = Executor(
            [self.probe, self.decode, self.encode, self.write],
            self._fail,
            lambda: self.cache.write_manifest(self.rows.values()),
            total=len(todo),
            desc="extract",
            progress=self.progress,
            postfix=lambda: {
                "frames_s": f"{self.frames_done / (time.perf_counter() - self.t0):.1f}",
                "failed": len(self.summary.failed),
            },
        )
        try:
            self.executor.run(
                (v for v in todo if v.file.video_id not in early),
                lambda v: self.probe.submit(Call(v, ({"path": str(v.file.path)},), partial(self._probed, v))),
                admit=lambda: self.probe.backlog < self.probe.max_in_flight
                and len(self.decode.queue) < 4 * self.max_decodes
                and len(self.write.queue) < 4 * WRITE_THREADS,
            )
        finally:
            self.summary.frames += self.frames_done

    def _probed(self, v: _Video, probed: dict, decoding: list | None = None) -> None:
        """`v`'s plan is back: decode its segments (`decoding`: their tasks, where already started)."""
        v.plan = probed["plan"]
        self.summary.busy_s.update(probed.get("timing", {}))
        batches = _segment_batches(v.file.path, v.plan, self.segment_frames)
        v.n_segments = len(batches)
        for seg, batch in enumerate(batches):
            call = Call(v, (batch,), partial(self._decoded, v, seg))
            if decoding:
                self.decode.track(decoding[seg], call)
            else:
                self.decode.submit(call)

    def _decoded(self, v: _Video, seg: int, ref) -> None:
        self.encode.submit(Call(v, (ref,), partial(self._encoded, v, seg)))

    def _encoded(self, v: _Video, seg: int, part: dict) -> None:
        self.decode.max_held = max(self.max_decodes, self.decode.max_held - 1)
        v.parts[seg] = part
        self.summary.busy_s.update(part.get("timing", {}))
        self.summary.decoded_with[part.get("decoded_with", "?")] += 1
        if len(v.parts) == v.n_segments:
            joined = self._joined(v)
            if joined is not None:
                video, warning = joined
                n = len(video["frame_index"])
                self.write.submit(Call(v, (v.row["video_id"], video), partial(self._written, v, n, warning)))

    def _fail(self, v: _Video, reason: str) -> None:
        v.parts.clear()
        self.rows[v.row["video_id"]] = {**v.row, "status": schema.STATUS_FAILED, "error": reason}
        self.summary.failed.append((v.row["path"], reason))

    def _joined(self, v: _Video) -> tuple[dict, str | None] | None:
        """The video's segments joined, the frames that did not decode left out, and the warning that says so (None:
        too few decoded)."""
        parts = [v.parts[i] for i in range(v.n_segments)]
        v.parts.clear()
        kept = ("features", "hist", "grid", "frame_change", "frame_index")
        joined = {k: np.concatenate([p[k] for p in parts]) for k in kept}
        decoded = np.concatenate([p.get("decoded", np.ones(len(p["features"]), bool)) for p in parts])
        # The frames decoded may be neighbours of the planned ones (DecodeStage.nearest_frames): store those.
        plan = v.plan
        joined["timestamps"] = plan.pts[joined["frame_index"]] if plan.pts is not None else plan.timestamps
        if decoded.all():
            return joined, None
        try:  # a partly corrupt video keeps what decoded, and says what was lost
            warning = partial_decode_warning(joined["timestamps"], decoded, self.sample_fps)
        except DecodeError as e:
            self.executor.fail(v, str(e))
            return None
        return {k: a[decoded] for k, a in joined.items()}, warning

    def _score_and_write(self, video_id: str, video: dict) -> float:
        """Score one joined video and write its files (in a writer thread); returns the seconds it took."""
        t = time.perf_counter()
        # Scored from the values as stored (float16), so re-scoring from the cache later gives the same scores.
        dtypes = {
            "features": self.cache.settings.feature_dtype,
            "hist": np.float16,
            "grid": np.float16,
            "frame_change": np.float16,
        }
        as_stored = {k: video[k].astype(dtype).astype(np.float32) for k, dtype in dtypes.items()}
        scored = self.change_score({**as_stored, "timestamps": video["timestamps"]})
        if self.trigger_model is not None:
            inputs = frame_inputs(self.trigger_model.config, video["features"], video["hist"], video["grid"])
            scored["trigger_score"], _ = self.trigger_model.score_video(inputs, video["timestamps"])
        self.cache.write_video(
            video_id,
            video["features"],
            video["timestamps"],
            video["frame_index"],
            scored,
            color_hist=video["hist"],
            color_grid=video["grid"],
            frame_change=video["frame_change"],
        )
        return time.perf_counter() - t

    def _written(self, v: _Video, frames: int, warning: str | None, seconds: float) -> None:
        """The video's files are written (`frames` samples): its manifest row says so."""
        plan = v.plan
        if warning is not None:
            self.summary.warnings.append((v.row["path"], warning))
        self.rows[v.row["video_id"]] = {
            **v.row,
            "duration_s": plan.duration_s,
            "native_fps": plan.native_fps,
            "width": plan.width,
            "height": plan.height,
            "rotation": plan.rotation,
            "frames_sampled": frames,
            "decoder": plan.decoder,
            "status": schema.STATUS_OK,
            "error": None,
            "warning": warning,
        }
        self.summary.ok += 1
        self.summary.busy_s["write_s"] += seconds
        self.frames_done += frames
        self.executor.done(v)
