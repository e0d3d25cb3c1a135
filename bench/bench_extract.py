"""Benchmark `vtm extract` against baselines measured in the same run, and report ratios.

    python bench/bench_extract.py [--quick] [--out DIR]

Shared machines are noisy, so nothing here is compared with a fixed number of seconds: every
result is a ratio to a baseline timed minutes earlier on the same machine.

1. throughput   sampled frames per second of `vtm extract` over a generated archive
2. encoder      extract wall / the encoder alone over the same frames, configured as extract
                configures it on this machine (the floor extract cannot beat)
3. scenedetect  extract wall / PySceneDetect's ContentDetector over the same videos
4. scale        10 vs 100 short videos: time and peak memory of the whole process tree

Each extract runs in a fresh subprocess (a fresh Ray); its memory is sampled from outside, over
the process and all its descendants (Ray's GCS, raylet and workers). Results go to
DIR/bench_extract.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MEMORY_SAMPLE_S = 0.2
NOISY_OTHER_CORES = 0.15  # other programs' average busy cores above which a timing is flagged
CHILD_TIMEOUT_S = 900
CHILD_ENV = {
    # Without an address, ray.init() joins any Ray already running on the machine (another job's,
    # a test run's) and dies with it; "local" always starts this child's own.
    "RAY_ADDRESS": "local",
    "RAY_AUTH_MODE": "disabled",  # a throwaway local Ray needs no token (and warns without this)
    "RAY_USAGE_STATS_ENABLED": "0",  # no network here; skip the usage-stats prompt
    "HF_HUB_OFFLINE": "1",
}


# --------------------------------------------------------------------------------------------
# children: each runs in its own process, writes its measurements as JSON and exits
# --------------------------------------------------------------------------------------------


def child_extract(
    dataset: Path,
    cache: Path,
    result: Path,
    probe_threads: bool = False,
    config_file: Path | None = None,
) -> None:
    """Run extract as a user of the library would, timing its phases from the outside.

    Ray is started here (the same call run_extract makes; it skips its own when Ray is up) so that
    start-up is timed on its own; and a thread waits for the encoder actors as soon as they are created,
    so that model load is timed too ("work" counts from then, though extract starts probing and decoding
    the first videos while the model loads). Neither changes what extract does. With
    `probe_threads` it also asks Ray, after the run, how many torch threads the encoder actor got.
    `config_file`: a YAML config instead of the defaults.
    """
    t_process = time.perf_counter()
    import ray

    import vtm.pipeline.extract as extract
    from vtm.pipeline.config import Config, load_config
    from vtm.pipeline.ray_runner import init_ray

    import_s = time.perf_counter() - t_process
    config = load_config(config_file) if config_file else Config()
    t = time.perf_counter()
    init_ray(config.ray.address)
    ray_init_s = time.perf_counter() - t

    marks = {}
    make_actors = extract.stage_actors

    def stage_actors_ready(stage, n, *args, **kwargs):
        actors = make_actors(stage, n, *args, **kwargs)
        marks["encode_stage"] = dataclasses.asdict(stage)  # the baseline rebuilds exactly this stage
        marks["n_encoders"] = n
        marks["actors"] = actors
        created_at = time.time()

        def wait_for_model():
            ray.get([a.invoke.remote("encoder_info") for a in actors])
            marks["encoders_ready"] = time.perf_counter()
            setup = ray.get(actors[0].invoke.remote("setup_timing"))
            marks["encoder_setup"] = {"actor_start_s": setup.pop("started_at") - created_at, **setup}
            marks["actor_pids"] = actor_pids(actors)

        marks["waiter"] = threading.Thread(target=wait_for_model, daemon=True)
        marks["waiter"].start()
        return actors

    release = extract.release

    def release_after_pids(actors):
        marks["waiter"].join()
        marks["end_pids"] = actor_pids(actors)  # extract ends its actors with the job: ask them first
        release(actors)

    extract.stage_actors = stage_actors_ready
    extract.release = release_after_pids
    t_run = time.perf_counter()
    summary = extract.run_extract(dataset, cache, config, progress=False)
    t_end = time.perf_counter()
    # A restarted actor (crashed, or killed by something else on the machine) reloads its model
    # and redoes its calls: a run with one is not a measure of the pipeline.
    restarted = sum(a != b for a, b in zip(marks["actor_pids"], marks["end_pids"]))
    out = {
        "import_s": import_s,
        "ray_init_s": ray_init_s,
        "model_load_s": marks["encoders_ready"] - t_run,  # actor start + encoder setup (+ discovery, tiny)
        "encoder_setup": marks["encoder_setup"],  # the first actor's: process start, import, build, to device
        "run_extract_s": summary.seconds,  # as reported by extract itself (Ray was already up)
        "work_s": t_end - marks["encoders_ready"],  # encoders loaded -> last video written
        "videos": summary.videos,
        "ok": summary.ok,
        "failed": summary.failed,
        "frames": summary.frames,
        "cluster_cpus": ray.cluster_resources().get("CPU", 0),
        "encode_stage": marks["encode_stage"],
        "n_encoders": marks["n_encoders"],
        "encoders_restarted": restarted,
        "busy_s": dict(summary.busy_s),  # per stage, summed over workers
        "decoded_with": dict(summary.decoded_with),
    }
    if probe_threads:
        out["actor_torch_threads"] = actor_torch_threads(marks["encode_stage"]["resources"]["cpus"])
    t = time.perf_counter()
    ray.shutdown()
    out["ray_shutdown_s"] = time.perf_counter() - t
    result.write_text(json.dumps(out))


def actor_pids(actors: list) -> list[int]:
    import ray

    return ray.get([a.__ray_call__.remote(lambda _: os.getpid()) for a in actors])


def actor_torch_threads(cpus: float) -> int:
    """The torch threads Ray gives a worker that asks for `cpus` CPUs (it sets OMP_NUM_THREADS)."""
    import ray

    @ray.remote(num_cpus=cpus)
    def threads() -> int:
        import torch

        return torch.get_num_threads()

    return ray.get(threads.remote())


def child_encoder(dataset: Path, stage_json: Path, result: Path) -> None:
    """Decode every sampled frame of every video (timed apart), then time the encoder alone on them.

    The encoder is the stage extract built (its settings come from the extract child), with the
    torch threads Ray gives an actor (OMP_NUM_THREADS = the CPUs it asks for, set by the parent),
    fed one extract segment per call, in one process: one encoder actor's work without Ray.
    """
    import numpy as np
    import torch

    from vtm.pipeline.config import Config
    from vtm.pipeline.discover import discover_videos
    from vtm.stages.base import Resources
    from vtm.stages.decode import DecodeStage, probe
    from vtm.stages.encode import EncodeStage

    ec = Config().extract
    settings = json.loads(Path(stage_json).read_text())
    settings["resources"] = Resources(**settings["resources"])
    t = time.perf_counter()
    plans = [probe(v.path, ec.fps, ec.max_frames) for v in discover_videos(dataset)]
    probe_s = time.perf_counter() - t

    decode = DecodeStage(image_size=ec.image_size)
    decode.setup()
    segments = []
    t = time.perf_counter()
    for video, plan in zip(discover_videos(dataset), plans):
        for start in range(0, len(plan.frame_index), ec.segment_frames):
            idx = plan.frame_index[start : start + ec.segment_frames]
            batch = {"path": str(video.path), "frame_index": idx, "rotation": plan.rotation, "decoder": plan.decoder}
            segments.append(decode(batch)["frames"])
    decode_s = time.perf_counter() - t

    encode = EncodeStage(**settings)
    t = time.perf_counter()
    encode.setup()
    model_load_s = time.perf_counter() - t
    per_call = []
    t = time.perf_counter()
    for frames in segments:
        t_call = time.perf_counter()
        encode({"frames": frames})
        per_call.append(time.perf_counter() - t_call)
    encode_s = time.perf_counter() - t
    result.write_text(
        json.dumps(
            {
                "frames": int(sum(len(f) for f in segments)),
                "calls": len(segments),
                "torch_threads": torch.get_num_threads(),
                "probe_s": probe_s,
                "decode_s": decode_s,
                "model_load_s": model_load_s,
                "encode_s": encode_s,
                "encode_call_s_median": float(np.median(per_call)),
                "pretrained": encode.info.pretrained,
                "device": encode.device,
                "max_batch": encode.max_batch,
            }
        )
    )


def child_scenedetect(dataset: Path, result: Path) -> None:
    """PySceneDetect's ContentDetector over every video, one after another, as its README shows."""
    import cv2
    from scenedetect import ContentDetector, detect

    from vtm.pipeline.discover import discover_videos

    videos = discover_videos(dataset)
    scenes, errors = 0, []
    t = time.perf_counter()
    for v in videos:
        try:
            scenes += len(detect(str(v.path), ContentDetector()))
        except Exception as e:  # noqa: BLE001 - count it, keep timing the rest
            errors.append(f"{v.relpath}: {type(e).__name__}: {e}"[:200])
    result.write_text(
        json.dumps(
            {
                "seconds": time.perf_counter() - t,
                "videos": len(videos),
                "scenes": scenes,
                "errors": errors,
                "cv2_threads": cv2.getNumThreads(),
            }
        )
    )


CHILDREN = {
    "extract": child_extract,
    "extract_probe_threads": functools.partial(child_extract, probe_threads=True),
    "extract_config": lambda dataset, cache, config_file, result: child_extract(
        dataset, cache, result, config_file=config_file
    ),
    "encoder": child_encoder,
    "scenedetect": child_scenedetect,
}


# --------------------------------------------------------------------------------------------
# the parent: makes the data, starts the children, samples their memory, prints ratios
# --------------------------------------------------------------------------------------------


class TreeMonitor:
    """Peak memory and CPU of a process and all its descendants, sampled from this process.

    Memory: RSS summed over processes counts shared pages (torch's libraries, Ray's object store)
    once per process that maps them; PSS divides each shared page among its users, so its sum is
    what the tree really holds. Both are reported; RSS is what people usually quote. RSS is cheap
    to read (every MEMORY_SAMPLE_S); PSS costs the kernel a page-table walk (~30 ms for a Ray
    tree, which on two cores would slow the run it measures), so it is read every PSS_EVERY-th time.

    CPU: the machine's busy CPU time minus the tree's and this process's is what other programs
    used meanwhile; `other_cores` (their average number of busy cores) says how noisy a number is.
    `stolen_cores` is CPU time the hypervisor gave to other virtual machines instead.
    """

    PSS_EVERY = 5

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.me = psutil.Process()
        self.peak_rss = self.peak_pss = 0
        self.peak_procs = 0
        self.cpu_by_pid: dict[int, float] = {}
        self._machine0, self._me0, self._t0 = self._machine_busy(), self._own_cpu(), time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _machine_busy() -> tuple[float, float]:
        """CPU seconds this machine spent running anything, and those its hypervisor took away."""
        import psutil

        t = psutil.cpu_times()
        steal = getattr(t, "steal", 0.0)
        return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(
            t, "guest_nice", 0.0
        ) - steal, steal

    def _own_cpu(self) -> float:
        t = self.me.cpu_times()
        return t.user + t.system

    def _run(self) -> None:
        import psutil

        sample = 0
        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.Error:
                return
            with_pss = sample % self.PSS_EVERY == 0
            rss = pss = 0
            for p in procs:
                try:
                    if with_pss:
                        info = p.memory_full_info()
                        pss += info.pss
                    else:
                        info = p.memory_info()
                    rss += info.rss
                    cpu = p.cpu_times()
                    self.cpu_by_pid[p.pid] = cpu.user + cpu.system
                except psutil.Error:
                    pass  # exited between listing and reading
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_procs = max(self.peak_procs, len(procs))
            sample += 1
            self._stop.wait(MEMORY_SAMPLE_S)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        wall = time.perf_counter() - self._t0
        tree_cpu = sum(
            self.cpu_by_pid.values()
        )  # up to MEMORY_SAMPLE_S short per process: a slight overestimate of `other`
        busy, steal = self._machine_busy()
        other = busy - self._machine0[0] - tree_cpu - (self._own_cpu() - self._me0)
        return {
            "peak_rss_mb": self.peak_rss / 2**20,
            "peak_pss_mb": self.peak_pss / 2**20,
            "peak_processes": self.peak_procs,
            "tree_cpu_s": tree_cpu,
            "other_cores": max(0.0, other) / wall,
            "stolen_cores": (steal - self._machine0[1]) / wall,
        }


def run_child(kind: str, *args, threads: int | None = None) -> dict:
    """Run a child in a fresh interpreter: its JSON result, plus its wall time, memory peaks and CPU."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = Path(f.name)
    env = {**os.environ, **CHILD_ENV}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, *map(str, args), str(result)]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    monitor = TreeMonitor(proc.pid)
    try:
        output, _ = proc.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        output, _ = proc.communicate()
        monitor.stop()
        raise SystemExit(
            f"bench child {kind} still running after {CHILD_TIMEOUT_S} s; killed it:\n{output[-4000:]}"
        ) from None
    wall = time.perf_counter() - t
    measured = monitor.stop()
    if proc.returncode != 0:
        raise SystemExit(f"bench child {kind} failed (exit {proc.returncode}):\n{output[-4000:]}")
    out = json.loads(result.read_text())
    result.unlink()
    out["process_s"] = wall
    out.update(measured)
    if out.get("encoders_restarted"):
        log(
            f"  NOTE: {out['encoders_restarted']} encoder actor(s) restarted during this run (crashed or killed "
            "from outside); its timing includes a model reload and redone calls"
        )
    if measured["other_cores"] + measured["stolen_cores"] > NOISY_OTHER_CORES:
        log(
            f"  NOTE: other programs kept {measured['other_cores']:.2f} cores busy meanwhile "
            f"(+{measured['stolen_cores']:.2f} stolen by the hypervisor); this number is noisy"
        )
    return out


def kill_tree(pid: int) -> None:
    """Kill a child we started and everything it started (its Ray), by process id."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.Error:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_data(work: Path, quick: bool) -> dict:
    from vtm.data.sample_archive import make_archive, make_sample_dataset

    t = time.perf_counter()
    throughput = work / "throughput"
    make_sample_dataset(throughput / "sample", include_broken=False)
    n_long, long_s = (2, 20.0) if quick else (8, 60.0)
    make_archive(throughput / "long", n_long, seconds=long_s, width=320, height=240, fps=30, seed=1)
    make_archive(work / "warmup", 2, seed=2)
    archive10 = make_archive(work / "archive10", 10)
    archive100 = make_archive(work / "archive100", 100)
    log(f"data generated in {time.perf_counter() - t:.0f} s ({n_long} x {long_s:.0f} s long videos)")
    return {
        "warmup": work / "warmup",
        "throughput": throughput,
        "archive10": archive10,
        "archive100": archive100,
        "long_videos": f"{n_long} x {long_s:.0f} s 320x240 30 fps",
    }


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def run_bench(quick: bool, keep_data: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="vtm-bench-data-"))
    try:
        data = make_data(work, quick)

        # The first Ray start and torch import on a fresh machine read ~1 GB of libraries from disk;
        # a small untimed extract first keeps that out of every number below. It also finds out
        # how many torch threads Ray gives the encoder actor, for the encoder-alone baseline.
        log("warm-up extract (untimed) ...")
        warm = run_child("extract_probe_threads", data["warmup"], work / "cache_warmup")
        log("extract (throughput archive) ...")
        ext = run_child("extract", data["throughput"], work / "cache_throughput")
        log(f"  {ext['frames']} frames, work {ext['work_s']:.1f} s, process {ext['process_s']:.1f} s")

        log("encoder alone (same frames, decoded first, untimed) ...")
        if ext["n_encoders"] != 1:
            log(f"WARNING: extract used {ext['n_encoders']} encoders; the baseline times one")
        stage_json = work / "encode_stage.json"
        stage_json.write_text(json.dumps(ext["encode_stage"]))
        enc = run_child("encoder", data["throughput"], stage_json, threads=warm["actor_torch_threads"])
        log(f"  {enc['frames']} frames in {enc['encode_s']:.1f} s with {enc['torch_threads']} torch thread(s)")
        if enc["frames"] != ext["frames"]:
            log(f"WARNING: extract encoded {ext['frames']} frames, the baseline {enc['frames']}")

        log("PySceneDetect ContentDetector (same videos, sequential) ...")
        psd = run_child("scenedetect", data["throughput"])
        log(f"  {psd['seconds']:.1f} s, {len(psd['errors'])} errors")

        scale = {}
        for name in ("archive10", "archive100"):
            log(f"extract ({name}) ...")
            scale[name] = run_child("extract", data[name], work / f"cache_{name}")
            s = scale[name]
            log(f"  {s['videos']} videos, process {s['process_s']:.1f} s, peak RSS {s['peak_rss_mb']:.0f} MiB")
    finally:
        if keep_data:
            log(f"data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    # What each extract wall contains:
    #   process  python start + imports + Ray start + model load + work + Ray shutdown (= `vtm extract`)
    #   run      Ray start + model load + work (= run_extract called without Ray running)
    #   work     work only: encoders loaded -> last video written (probe, decode, encode, score, write)
    run_s = ext["ray_init_s"] + ext["run_extract_s"]
    s10, s100 = scale["archive10"], scale["archive100"]
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "quick": quick,
        "data": {"throughput": f"make_sample_dataset (12 videos) + {data['long_videos']}"},
        "extract": {
            **ext,
            "run_s": run_s,
            "frames_per_s_work": ratio(ext["frames"], ext["work_s"]),
            "frames_per_s_run": ratio(ext["frames"], run_s),
            "frames_per_s_process": ratio(ext["frames"], ext["process_s"]),
        },
        "encoder_alone": {
            **enc,
            "ray_actor_torch_threads": warm["actor_torch_threads"],
            "frames_per_s": ratio(enc["frames"], enc["encode_s"]),
        },
        "scenedetect": psd,
        "scale": {"archive10": s10, "archive100": s100},
        "ratios": {
            "extract_work_over_encoder": ratio(ext["work_s"], enc["encode_s"]),
            "extract_run_over_encoder": ratio(run_s, enc["encode_s"]),
            "extract_process_over_encoder": ratio(ext["process_s"], enc["encode_s"]),
            "extract_work_over_scenedetect": ratio(ext["work_s"], psd["seconds"]),
            "extract_run_over_scenedetect": ratio(run_s, psd["seconds"]),
            "extract_process_over_scenedetect": ratio(ext["process_s"], psd["seconds"]),
            "scale_process_100_over_10": ratio(s100["process_s"], s10["process_s"]),
            "scale_work_100_over_10": ratio(s100["work_s"], s10["work_s"]),
            "scale_peak_rss_100_over_10": ratio(s100["peak_rss_mb"], s10["peak_rss_mb"]),
            "scale_peak_pss_100_over_10": ratio(s100["peak_pss_mb"], s10["peak_pss_mb"]),
        },
    }


def print_table(r: dict) -> None:
    ext, enc, psd, q = r["extract"], r["encoder_alone"], r["scenedetect"], r["ratios"]
    s10, s100 = r["scale"]["archive10"], r["scale"]["archive100"]
    rows = [
        ("data", r["data"]["throughput"]),
        ("sampled frames", f"{ext['frames']} ({ext['videos']} videos, {len(ext['failed'])} failed)"),
        (
            "encoder restarts",
            " | ".join(
                f"{name} {x['encoders_restarted']}"
                for name, x in (("extract", ext), ("scale10", s10), ("scale100", s100))
            )
            + "   (should be 0)",
        ),
        (
            "extract phases (s)",
            f"import {ext['import_s']:.1f} | Ray start {ext['ray_init_s']:.1f} | model load "
            f"{ext['model_load_s']:.1f} | work {ext['work_s']:.1f} | Ray shutdown {ext['ray_shutdown_s']:.1f} | "
            f"process {ext['process_s']:.1f}",
        ),
        (
            "extract frames/s",
            f"work {ext['frames_per_s_work']:.1f} | run {ext['frames_per_s_run']:.1f} | process "
            f"{ext['frames_per_s_process']:.1f}",
        ),
        (
            "extract peak memory",
            f"RSS sum {ext['peak_rss_mb']:.0f} MiB, PSS sum {ext['peak_pss_mb']:.0f} MiB, {ext['peak_processes']} "
            "processes",
        ),
        (
            "encoder alone",
            f"{enc['encode_s']:.1f} s = {enc['frames_per_s']:.1f} frames/s ({enc['torch_threads']} thread, "
            f"{enc['calls']} calls); decode alone {enc['decode_s']:.1f} s + probe {enc['probe_s']:.1f} s (1 "
            "process)",
        ),
        (
            "extract / encoder",
            f"work {q['extract_work_over_encoder']:.2f} | run {q['extract_run_over_encoder']:.2f} | process "
            f"{q['extract_process_over_encoder']:.2f}   (target: work < 1.3)",
        ),
        (
            "PySceneDetect",
            f"{psd['seconds']:.1f} s over {psd['videos']} videos ({psd['scenes']} scenes, {len(psd['errors'])} errors)",
        ),
        (
            "extract / PySceneDetect",
            f"work {q['extract_work_over_scenedetect']:.2f} | run {q['extract_run_over_scenedetect']:.2f} | process "
            f"{q['extract_process_over_scenedetect']:.2f}",
        ),
        (
            "scale 10 videos",
            f"process {s10['process_s']:.1f} s (work {s10['work_s']:.1f}), {s10['process_s'] / 10:.2f} s/video, "
            f"peak RSS {s10['peak_rss_mb']:.0f} MiB / PSS {s10['peak_pss_mb']:.0f} MiB",
        ),
        (
            "scale 100 videos",
            f"process {s100['process_s']:.1f} s (work {s100['work_s']:.1f}), {s100['process_s'] / 100:.2f} s/video, "
            f"peak RSS {s100['peak_rss_mb']:.0f} MiB / PSS {s100['peak_pss_mb']:.0f} MiB",
        ),
        (
            "time 100 / 10",
            f"process {q['scale_process_100_over_10']:.2f} | work {q['scale_work_100_over_10']:.2f}   (linear: 10)",
        ),
        (
            "peak memory 100 / 10",
            f"RSS {q['scale_peak_rss_100_over_10']:.2f} | PSS {q['scale_peak_pss_100_over_10']:.2f}   (flat: 1.0)",
        ),
        (
            "CPU used (cores)",
            f"extract {ext['tree_cpu_s'] / ext['process_s']:.2f} of {r['machine']['cpus']} | encoder alone "
            f"{enc['tree_cpu_s'] / enc['process_s']:.2f}",
        ),
        (
            "other load (cores)",
            " | ".join(
                f"{name} {x['other_cores']:.2f}+{x['stolen_cores']:.2f}"
                for name, x in (
                    ("extract", ext),
                    ("encoder", enc),
                    ("scenedetect", psd),
                    ("scale10", s10),
                    ("scale100", s100),
                )
            )
            + f"   (other programs + hypervisor steal; > {NOISY_OTHER_CORES}: noisy)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if psd["errors"]:
        print("PySceneDetect errors:", *psd["errors"], sep="\n  ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller throughput archive (~2 minutes in all)")
    parser.add_argument("--out", type=Path, help="directory for bench_extract.json (default: a new temp dir)")
    parser.add_argument("--keep-data", action="store_true", help="keep the generated videos and caches")
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        CHILDREN[args.child](*args.child_args)
        return
    try:
        import psutil  # noqa: F401
    except ImportError:
        raise SystemExit("the benchmark needs psutil to sample memory: pip install psutil") from None

    out_dir = args.out or Path(tempfile.mkdtemp(prefix="vtm-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    results = run_bench(args.quick, args.keep_data)
    results["bench_s"] = time.perf_counter() - t
    print_table(results)
    (out_dir / "bench_extract.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nwhole benchmark {results['bench_s']:.0f} s; results: {out_dir / 'bench_extract.json'}")


if __name__ == "__main__":
    main()
