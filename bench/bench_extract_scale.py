"""`vtm extract` on a 720p archive against decoding every frame, on one machine: ratios, where the time goes, GPU use.

    python bench/bench_extract_scale.py [--quick] [--videos N --seconds S] [--x264-preset P] [--out DIR] [--keep-data]

Every number is measured in this run, on this machine, and compared as a ratio:

1. data         a 720p 30 fps H.264 archive written by vtm's `make_archive` (x264, B-frames): by default
                144 x 30 s (72 minutes, the archive of issue 13); --quick 100 x 3 s. A few distinct clips
                are generated, one process per core, and copied to fill the archive. --x264-preset medium
                encodes them as x264 and ffmpeg's libx264 do by default (3 references, b-pyramid normal)
                instead of make_archive's veryfast (1 reference).
2. decode limit every frame decoded with PyAV, one single-threaded process per core, nothing converted:
                what the CPUs can decode (the CPU limit of issue 13).
3. decoders     extract's own decoder (probe, skipping unreferenced frames, resize) without Ray or the
                encoder, one process per core: on the CPU, and on the GPU where there is one.
   scenedetect  PySceneDetect's ContentDetector, one process per core (OpenCV one thread each).
4. extract      `vtm extract` cold: `run_extract` in a fresh process with its own Ray, default settings;
                its phases (import, Ray start, model load, work) and each stage's busy seconds.
5. re-run       `python -m vtm.pipeline.cli extract` again on the finished cache, whole process, as a user
                runs it, against `python -c "import vtm.pipeline.extract"` (best of 2 each).
6. nvdec        where a GPU exists: one clip decoded by extract's decoder on the GPU and on the CPU.
7. GPU decoding where a GPU exists: extract cold again with extract.decode_device: cuda (NVDEC through PyAV),
                and with nvdec (PyNvVideoCodec beside the cores; fails where it is not installed), to compare.

GPU and video-decoder utilisation are sampled with nvidia-smi (where there is one) during every step.
Results go to DIR/bench_extract_scale.json, rewritten after each step; a failed step is recorded
and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_extract  # noqa: E402 - its child runner and tree monitor time extract here too
from bench_extract import CHILD_ENV, log, ratio  # noqa: E402

WIDTH, HEIGHT, FPS = 1280, 720, 30


# --------------------------------------------------------------------------------------------
# work done in pool processes (module level, so a spawned process can import it)
# --------------------------------------------------------------------------------------------


def _warm(kind: str) -> int:
    """Import what a step's workers need before its clock starts; returns the pid (to reach every worker)."""
    time.sleep(0.2)  # keep this worker busy a moment so that the others get a warm-up task too
    if kind == "scenedetect":
        import cv2
        import scenedetect  # noqa: F401

        cv2.setNumThreads(1)
    elif kind == "decoder":
        import decord  # noqa: F401

        import vtm.pipeline.config  # noqa: F401 - imports torch, through the encoder's defaults
        import vtm.stages.decode  # noqa: F401
    else:
        import av  # noqa: F401
    return os.getpid()


def _make_clip(out_dir: str, seconds: float, seed: int, preset: str | None) -> str:
    from vtm.data.sample_archive import H264, Encoding, make_archive

    # Only the preset changes: make_archive's keyframe interval and repeatable rate control stay.
    encoding = H264 if preset is None else Encoding("libx264", options={**H264.options, "preset": preset})
    root = make_archive(
        Path(out_dir), 1, seconds=seconds, seed=seed, width=WIDTH, height=HEIGHT, fps=FPS, encoding=encoding
    )
    return str(next(root.rglob("*.mp4")))


def _decode_every_frame(path: str) -> tuple[int, float]:
    """Frames decoded and CPU seconds: every frame, one thread, no conversion (the floor for a CPU decoder)."""
    import av

    t = time.process_time()
    n = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for _ in container.decode(stream):
            n += 1
    return n, time.process_time() - t


def _extract_decoder(args: tuple[str, str]) -> tuple[int, float, str, float]:
    """Extract's decode stage alone over one video, segment by segment as extract runs it: frames, CPU seconds, how, and
    the CPU seconds of measuring the frames between samples (part of the CPU seconds)."""
    from vtm.pipeline.config import ExtractConfig
    from vtm.stages.decode import DecodeStage, probe

    path, device = args
    ec = ExtractConfig()
    t = time.process_time()
    plan = probe(Path(path), ec.fps, ec.max_frames)
    stage = DecodeStage(image_size=ec.image_size, nearest_frames=True, device=device)
    stage.setup()
    n, how, measure = 0, set(), 0.0
    for s in range(0, len(plan.frame_index), ec.segment_frames):
        idx = plan.frame_index[s : s + ec.segment_frames]
        pts, pts_start = plan.pts_around(idx, since=plan.frame_index[s - 1] if s else None)  # as extract does
        out = stage(
            {
                "path": path,
                "frame_index": idx,
                "rotation": plan.rotation,
                "decoder": plan.decoder,
                "pts": pts,
                "pts_start": pts_start,
            }
        )
        n += len(out["frames"])
        how.add(out["decoded_with"])
        measure += out["timing"]["frame_change_cpu_s"]
    return n, time.process_time() - t, ",".join(sorted(how)), measure


def _scenedetect(path: str) -> int:
    import cv2
    from scenedetect import ContentDetector, detect

    cv2.setNumThreads(1)
    return len(detect(path, ContentDetector()))


def _pool_map(fn, items: list, kind: str, workers: int) -> tuple[list, float]:
    """Map `fn` over `items` with one process per core; wall seconds from the first task to the last result."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_warm, [kind] * workers * 2))
        t = time.perf_counter()
        results = list(pool.map(fn, items, chunksize=1))
        return results, time.perf_counter() - t


# --------------------------------------------------------------------------------------------
# GPU sampling
# --------------------------------------------------------------------------------------------


class GpuSampler:
    """GPU and video-decoder utilisation (%) every 200 ms from nvidia-smi, for as long as the benchmark runs."""

    def __init__(self):
        self.samples: list[tuple[float, float, float, float]] = []  # (time, gpu %, decoder %, memory MiB)
        self.proc = None
        if shutil.which("nvidia-smi"):
            query = "--query-gpu=utilization.gpu,utilization.decoder,memory.used"
            self.proc = subprocess.Popen(
                ["nvidia-smi", query, "--format=csv,noheader,nounits", "-lms", "200"], stdout=subprocess.PIPE, text=True
            )
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                gpu, dec, mem = (float(x) for x in line.split(",")[:3])  # first GPU's line; more GPUs add lines
            except ValueError:
                continue
            self.samples.append((time.perf_counter(), gpu, dec, mem))

    def between(self, t0: float, t1: float) -> dict | None:
        window = [s for s in self.samples if t0 <= s[0] <= t1]
        if not window:
            return None
        col = lambda i: [s[i] for s in window]  # noqa: E731
        return {
            "gpu_mean": sum(col(1)) / len(window),
            "gpu_max": max(col(1)),
            "decoder_mean": sum(col(2)) / len(window),
            "decoder_max": max(col(2)),
            "memory_max_mib": max(col(3)),
            "samples": len(window),
        }

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()


# --------------------------------------------------------------------------------------------
# the steps
# --------------------------------------------------------------------------------------------


def make_data(work: Path, n_videos: int, seconds: float, cores: int, preset: str | None = None) -> dict:
    t = time.perf_counter()
    distinct = max(1, min(n_videos, cores))
    clips, _ = _pool_map(
        _make_clip_args,
        [(str(work / "clips" / f"c{i}"), seconds, i, preset) for i in range(distinct)],
        "av",
        min(cores, distinct),
    )
    archive = work / "archive"
    for i in range(n_videos):
        dest = archive / f"part_{i // 100:03d}" / f"clip_{i:05d}.mp4"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clips[i % distinct], dest)
    warmup = work / "warmup"
    (warmup / "a").mkdir(parents=True)
    shutil.copyfile(clips[0], warmup / "a" / "clip.mp4")
    size = sum(p.stat().st_size for p in archive.rglob("*.mp4"))
    return {
        "archive": archive,
        "warmup": warmup,
        "clip": clips[0],
        "videos": n_videos,
        "seconds_each": seconds,
        "distinct_clips": distinct,
        "x264_preset": preset or "veryfast (make_archive's)",
        "hours": n_videos * seconds / 3600,
        "bytes": size,
        "generate_s": time.perf_counter() - t,
    }


def _make_clip_args(args: tuple) -> str:
    return _make_clip(*args)


def step_decode_limit(data: dict, cores: int) -> dict:
    videos = sorted(str(p) for p in data["archive"].rglob("*.mp4"))
    results, wall = _pool_map(_decode_every_frame, videos, "av", cores)
    return {
        "wall_s": wall,
        "frames": sum(n for n, _ in results),
        "cpu_s": sum(c for _, c in results),
        "processes": cores,
    }


def step_decoders(data: dict, cores: int, sampler: GpuSampler) -> dict:
    """Extract's decoder (probe, decode, resize) without Ray or the encoder, one process per core; on the GPU too where
    there is one."""
    videos = sorted(str(p) for p in data["archive"].rglob("*.mp4"))
    out = {}
    for device in ("cpu", "cuda") if sampler.proc is not None else ("cpu",):
        t0 = time.perf_counter()
        results, wall = _pool_map(_extract_decoder, [(v, device) for v in videos], "decoder", cores)
        out[device] = {
            "wall_s": wall,
            "frames": sum(r[0] for r in results),
            "cpu_s": sum(r[1] for r in results),
            "frame_change_cpu_s": sum(r[3] for r in results),
            "decoded_with": sorted({r[2] for r in results}),
            "gpu": sampler.between(t0, time.perf_counter()),
        }
    return out


def step_scenedetect(data: dict, cores: int) -> dict:
    videos = sorted(str(p) for p in data["archive"].rglob("*.mp4"))
    scenes, wall = _pool_map(_scenedetect, videos, "scenedetect", cores)
    return {"wall_s": wall, "scenes": sum(scenes), "processes": cores}


def step_extract(data: dict, work: Path) -> dict:
    bench_extract.run_child("extract", data["warmup"], work / "cache_warmup")  # untimed: pages in torch, Ray, the model
    out = bench_extract.run_child("extract", data["archive"], work / "cache")
    out["actor"] = out.pop("encode_stage", None)
    return out


# On a GPU machine, the same cold extract decoding on the GPU: step name -> (extract.decode_device, what it is).
GPU_DECODING = {
    "extract_nvdec": ("cuda", "NVDEC through PyAV"),
    "extract_pynvvideocodec": ("nvdec", "PyNvVideoCodec beside the cores"),
}


def step_extract_gpu_decoding(data: dict, work: Path, step: str) -> dict:
    """The cold extract with `GPU_DECODING[step]`'s decode_device."""
    config = work / f"{step}.yaml"
    config.write_text(f"extract:\n  decode_device: {GPU_DECODING[step][0]}\n")
    out = bench_extract.run_child("extract_config", data["archive"], work / f"cache_{step}", config)
    out["actor"] = out.pop("encode_stage", None)
    return out


def _process_s(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **CHILD_ENV}, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-4:])} exited {proc.returncode}: {(proc.stdout + proc.stderr)[-2000:]}")
    return wall, proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


def step_rerun(data: dict, work: Path) -> dict:
    rerun = [
        sys.executable,
        "-m",
        "vtm.pipeline.cli",
        "extract",
        str(data["archive"]),
        "--cache",
        str(work / "cache"),
        "--no-progress",
    ]
    imports = [sys.executable, "-c", "import vtm.pipeline.extract"]
    walls, import_walls, said = [], [], ""
    for _ in range(2):
        import_walls.append(_process_s(imports)[0])
        wall, said = _process_s(rerun)
        walls.append(wall)
    return {
        "wall_s": min(walls),
        "walls": walls,
        "import_s": min(import_walls),
        "import_walls": import_walls,
        "output": said,
    }


def step_nvdec(data: dict) -> dict:
    import numpy as np

    from vtm.stages.decode import DecodeStage, cuda_hwaccel, probe

    if cuda_hwaccel() is None:
        return {"available": False}
    plan = probe(Path(data["clip"]), fps=3.0)
    pts, pts_start = plan.pts_around(plan.frame_index)
    batch = {
        "path": data["clip"],
        "frame_index": plan.frame_index,
        "rotation": 0,
        "decoder": plan.decoder,
        "pts": pts,
        "pts_start": pts_start,
    }
    out, decoded = {"available": True}, {}
    for device in ("cpu", "cuda"):
        stage = DecodeStage(nearest_frames=True, device=device)
        stage.setup()
        stage(batch)  # once untimed: the CUDA context
        t = time.perf_counter()
        cpu0 = time.process_time()
        got = stage(batch)
        out[device] = {
            "wall_s": time.perf_counter() - t,
            "cpu_s": time.process_time() - cpu0,
            "decoded_with": got["decoded_with"],
        }
        decoded[device] = got
    out["same_frame_index"] = bool(np.array_equal(decoded["cpu"]["frame_index"], decoded["cuda"]["frame_index"]))
    out["mean_abs_pixel_diff"] = float(
        np.abs(decoded["cpu"]["frames"].astype(int) - decoded["cuda"]["frames"].astype(int)).mean()
    )
    return out


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def summarise(r: dict) -> list[tuple[str, str]]:
    data, cores = r.get("data", {}), r["machine"]["cpus"]
    hours = data.get("hours", float("nan"))
    vhh = lambda wall: hours / (wall / 3600) if wall else float("nan")  # noqa: E731 - video-hours per hour
    rows = [("machine", f"{cores} cores, {r['machine'].get('gpu') or 'no GPU'}, Python {r['machine']['python']}")]
    if data:
        rows.append(
            (
                "archive",
                f"{data['videos']} x {data['seconds_each']:.0f} s 720p 30 fps H.264 "
                f"(x264 {data.get('x264_preset', 'veryfast')}) = {hours * 60:.1f} min, "
                f"{data['bytes'] / 1e9:.2f} GB "
                f"({data['distinct_clips']} distinct clips, generated in {data['generate_s']:.0f} s)",
            )
        )
    steps = r["steps"]
    limit, psd, ext, rerun = (steps.get(k, {}) for k in ("decode_limit", "scenedetect", "extract", "rerun"))

    def gpu(step: dict) -> str:
        if not step.get("gpu"):
            return ""
        g = step["gpu"]
        return f"; GPU {g['gpu_mean']:.0f} % mean, {g['gpu_max']:.0f} % max, decoder {g['decoder_mean']:.0f} % mean"

    if "wall_s" in limit:
        rows.append(
            (
                "decode every frame",
                f"{limit['wall_s']:.1f} s = {vhh(limit['wall_s']):.0f} video-h/h ({limit['frames']} frames, "
                f"{limit['cpu_s']:.0f} CPU-s, "
                f"{limit['processes']} processes){gpu(limit)}",
            )
        )
    for device, d in steps.get("decoders", {}).items():
        if isinstance(d, dict) and "wall_s" in d:
            rows.append(
                (
                    f"extract's decoder, {device}",
                    f"{d['wall_s']:.1f} s = {vhh(d['wall_s']):.0f} video-h/h ({d['frames']} sampled frames, "
                    f"{d['cpu_s']:.0f} CPU-s, {d.get('frame_change_cpu_s', 0):.1f} of them measuring the frames "
                    f"between samples, {', '.join(d['decoded_with'])}; no Ray, no encoder){gpu(d)}",
                )
            )
        if isinstance(d, dict) and "wall_s" in d and "wall_s" in limit:
            rows.append(
                (
                    "  / decode every frame",
                    f"wall {ratio(d['wall_s'], limit['wall_s']):.2f} | CPU {ratio(d['cpu_s'], limit['cpu_s']):.2f}"
                    + ("   (target: < 1 on the CPU alone)" if device == "cpu" else ""),
                )
            )
    if "wall_s" in psd:
        rows.append(
            (
                "PySceneDetect",
                f"{psd['wall_s']:.1f} s = {vhh(psd['wall_s']):.0f} video-h/h ({psd['scenes']} scenes){gpu(psd)}",
            )
        )
    if "process_s" in ext:
        rows.append(
            (
                "vtm extract cold",
                f"{ext['process_s']:.1f} s = {vhh(ext['process_s']):.0f} video-h/h (process); work "
                f"{ext['work_s']:.1f} s = {vhh(ext['work_s']):.0f} "
                f"video-h/h; {ext['ok']} ok, {len(ext['failed'])} failed{gpu(ext)}",
            )
        )
        rows += _extract_rows(ext, limit, cores)
    if "wall_s" in rerun:
        rows.append(
            (
                "re-run, nothing to do",
                f"{rerun['wall_s']:.2f} s vs import vtm.pipeline.extract {rerun['import_s']:.2f} s: "
                f"{ratio(rerun['wall_s'], rerun['import_s']):.2f}x "
                f"(target <= 2) [{rerun['output']}]",
            )
        )
    if "wall_s" in limit and "process_s" in ext:
        rows.append(
            (
                "extract / decode limit",
                f"process {ratio(ext['process_s'], limit['wall_s']):.2f} | work "
                f"{ratio(ext['work_s'], limit['wall_s']):.2f}   "
                "(target: <= 1.3 on CPU; <= 0.5 with a GPU)",
            )
        )
    if "wall_s" in psd and "process_s" in ext:
        rows.append(
            (
                "extract / PySceneDetect",
                f"process {ratio(ext['process_s'], psd['wall_s']):.2f} | work "
                f"{ratio(ext['work_s'], psd['wall_s']):.2f}",
            )
        )
    for step, (_, what) in GPU_DECODING.items():
        var = steps.get(step, {})
        if "process_s" not in var:
            continue
        rows.append(
            (
                f"extract, {what}",
                f"{var['process_s']:.1f} s = {vhh(var['process_s']):.0f} video-h/h (process); work "
                f"{var['work_s']:.1f} s{gpu(var)}",
            )
        )
        rows += [("  " + k, v) for k, v in _extract_rows(var, limit, cores)]
        if "wall_s" in limit:
            rows.append(
                (
                    "  / decode limit",
                    f"process {ratio(var['process_s'], limit['wall_s']):.2f} | work "
                    f"{ratio(var['work_s'], limit['wall_s']):.2f}",
                )
            )
    nv = steps.get("nvdec", {})
    if nv.get("available"):
        rows.append(
            (
                "NVDEC check",
                f"one clip: CPU {nv['cpu']['cpu_s']:.2f} CPU-s ({nv['cpu']['decoded_with']}) vs GPU "
                f"{nv['cuda']['cpu_s']:.2f} CPU-s "
                f"({nv['cuda']['decoded_with']}), {nv['cuda']['wall_s']:.2f} s wall; same frames "
                f"{nv['same_frame_index']}, "
                f"mean pixel difference {nv['mean_abs_pixel_diff']:.2f}",
            )
        )
    for name, s in steps.items():
        if "error" in s:
            rows.append((f"FAILED {name}", s["error"][-300:]))
    return rows


def _extract_rows(ext: dict, limit: dict, cores: int) -> list[tuple[str, str]]:
    """Where an extract's time went: phases, each stage's busy seconds, idle cores, decoders used, memory."""
    busy = ext.get("busy_s", {})
    rows = [
        (
            "extract phases (s)",
            f"import {ext['import_s']:.1f} | Ray start {ext['ray_init_s']:.1f} | model load "
            f"{ext['model_load_s']:.1f} | work {ext['work_s']:.1f} "
            f"| Ray shutdown {ext['ray_shutdown_s']:.1f}",
        )
    ]
    setup = ext.get("encoder_setup")
    if setup:
        rows.append(
            (
                "model load (s)",
                f"actor process start {setup['actor_start_s']:.1f} | import torch and the model code "
                f"{setup['import_s']:.1f} | build with weights {setup['build_s']:.1f} | to device "
                f"{setup['to_device_s']:.1f}",
            )
        )
    names = ("probe_s", "decode_s", "stats_s", "to_encoder_s", "encode_s", "write_s")
    rows.append(
        (
            "busy (core-s)",
            " | ".join(f"{k[:-2]} {busy.get(k, 0):.1f}" for k in names)
            + f"   (CPU: probe {busy.get('probe_cpu_s', 0):.1f}, decode+stats {busy.get('decode_cpu_s', 0):.1f}; "
            f"decode includes resizing the sampled frames and measuring the frames between them, "
            f"{busy.get('frame_change_cpu_s', 0):.1f})",
        )
    )
    decode_side = sum(busy.get(k, 0) for k in ("probe_s", "decode_s", "stats_s"))
    decode_cpu = sum(busy.get(k, 0) for k in ("probe_cpu_s", "decode_cpu_s"))  # decode_cpu_s includes the statistics
    decode_cores = max(1.0, ext["cluster_cpus"] - ext["n_encoders"])
    slots = decode_cores * ext["work_s"]
    rows.append(
        (
            "idle",
            f"cores beside the encoder: {decode_cores:.0f}, probing and decoding {100 * decode_side / slots:.0f} % of "
            f"the work's {ext['work_s']:.1f} s; the process tree used "
            f"{ext['tree_cpu_s'] / ext['process_s']:.1f} of {cores} cores on average",
        )
    )
    rows.append(
        (
            "decoded with",
            ", ".join(f"{k} {v}" for k, v in sorted(ext.get("decoded_with", {}).items())) + " (decode tasks)",
        )
    )
    if "cpu_s" in limit:
        rows.append(
            (
                "decode CPU",
                f"extract probe+decode+stats {decode_cpu:.0f} CPU-s vs every frame {limit['cpu_s']:.0f} CPU-s: "
                f"{ratio(decode_cpu, limit['cpu_s']):.2f}",
            )
        )
    rows.append(("extract peak memory", f"RSS {ext['peak_rss_mb']:.0f} MiB, PSS {ext['peak_pss_mb']:.0f} MiB"))
    return rows


def print_rows(rows: list[tuple[str, str]]) -> None:
    if not rows:
        return
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"{k:<{width}}  {v}", flush=True)


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        return (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 x 3 s videos (for 2 cores)")
    parser.add_argument("--videos", type=int, help="videos in the archive [144; --quick 100]")
    parser.add_argument("--seconds", type=float, help="seconds per video [30; --quick 3]")
    parser.add_argument(
        "--x264-preset",
        help="encode the archive with this x264 preset instead of make_archive's veryfast (medium: x264's default)",
    )
    parser.add_argument("--out", type=Path, help="directory for bench_extract_scale.json (default: a new temp dir)")
    parser.add_argument("--keep-data", action="store_true", help="keep the generated videos and caches")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=[
            "decode_limit",
            "decoders",
            "scenedetect",
            "extract",
            "rerun",
            "nvdec",
            *GPU_DECODING,
        ],
        help="steps to leave out",
    )
    args = parser.parse_args()
    try:
        import psutil  # noqa: F401
    except ImportError:
        import ray  # noqa: F401 - Ray ships psutil and puts it on the path

    n_videos = args.videos or (100 if args.quick else 144)
    seconds = args.seconds or (3.0 if args.quick else 30.0)
    cores = os.cpu_count() or 1
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="vtm-bench-scale-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": {
            "cpus": cores,
            "gpu": gpu_name(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "steps": {},
    }
    started = time.perf_counter()

    def save() -> None:
        result["bench_s"] = time.perf_counter() - started
        (out_dir / "bench_extract_scale.json").write_text(json.dumps(result, indent=1, default=str) + "\n")

    sampler = GpuSampler()
    work = Path(tempfile.mkdtemp(prefix="vtm-bench-scale-data-"))
    try:
        log(f"generating {n_videos} x {seconds:.0f} s 720p videos ...")
        data = make_data(work, n_videos, seconds, cores, args.x264_preset)
        result["data"] = data
        log(f"  {data['hours'] * 60:.1f} min of video in {data['generate_s']:.0f} s")
        save()
        # Most telling first: a run cut short by a time limit still has them.
        steps = [
            ("decode_limit", lambda: step_decode_limit(data, cores)),
            ("decoders", lambda: step_decoders(data, cores, sampler)),
            ("extract", lambda: step_extract(data, work)),
            ("rerun", lambda: step_rerun(data, work)),
            ("nvdec", lambda: step_nvdec(data)),
            ("scenedetect", lambda: step_scenedetect(data, cores)),
        ]
        if result["machine"]["gpu"]:
            steps += [(s, partial(step_extract_gpu_decoding, data, work, s)) for s in GPU_DECODING]
        shown: set[tuple[str, str]] = set()
        for name, run in steps:
            if name in args.skip:
                continue
            log(f"{name} ...")
            t0 = time.perf_counter()
            try:
                out = run()
            except (Exception, SystemExit) as e:  # noqa: BLE001 - record it, run the other steps
                out = {"error": f"{type(e).__name__}: {e}"}
            out["gpu"] = sampler.between(t0, time.perf_counter())
            result["steps"][name] = out
            save()
            log(
                f"  {name} done in {time.perf_counter() - t0:.0f} s"
                + (f": FAILED {out['error'][-500:]}" if "error" in out else "")
            )
            rows = summarise(result)
            print_rows([row for row in rows if row not in shown])  # what this step added (a cut run keeps it)
            shown.update(rows)
    finally:
        sampler.stop()
        if args.keep_data:
            log(f"data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    save()
    print("\nall steps:")
    print_rows(summarise(result))
    print(f"\nwhole benchmark {result['bench_s']:.0f} s; results: {out_dir / 'bench_extract_scale.json'}")


if __name__ == "__main__":
    main()
