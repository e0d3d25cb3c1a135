"""End to end: `vtm extract` on real files, a real local Ray, real Parquet and HDF5."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest
import torch
import yaml
from click.testing import CliRunner

from vtm.cache.store import CacheError, FeatureCache
from vtm.data.sample_archive import make_archive
from vtm.models.encoder_weights import efficientnet_lite0_package_weights
from vtm.pipeline.cli import main as cli
from vtm.pipeline.config import Config, ConfigError, load_config
from vtm.pipeline.evaluation import event_scores
from vtm.pipeline.extract import run_extract
from vtm.pipeline.triggers import find_triggers
from vtm.stages.decode import DecodeStage, probe


def test_every_good_video_ok_every_broken_one_failed_with_a_reason(extracted, ground_truth):
    summary, cache = extracted
    manifest = cache.manifest()
    status = dict(zip(manifest["path"], manifest["status"]))
    assert {p for p, s in status.items() if s == "ok"} == set(ground_truth["videos"])
    assert {p for p, s in status.items() if s == "failed"} == set(ground_truth["broken"])
    assert sorted(p for p, _ in summary.failed) == sorted(ground_truth["broken"])
    failed = manifest.filter(pl.col("status") == "failed")
    assert all(len(reason) > 10 for reason in failed["error"])
    reasons = dict(zip(failed["path"], failed["error"]))
    assert "no video stream" in reasons["broken/audio_only.mp4"]
    assert "directory" in reasons["broken/folder.mp4"]
    assert "empty" in reasons["broken/empty.mp4"]
    assert not summary.all_ok and summary.ok == len(ground_truth["videos"])


def test_cache_holds_what_design_md_promises(extracted, ground_truth):
    _, cache = extracted
    meta = json.loads((cache.root / "cache.json").read_text())
    assert meta["settings"]["encoder"] == "efficientnet_lite0" and meta["settings"]["pretrained"]
    manifest = cache.manifest().filter(pl.col("status") == "ok")
    scores = pl.read_parquet(cache.root / "scores" / "*.parquet")  # any Parquet reader, whole archive
    for row in manifest.iter_rows(named=True):
        truth = ground_truth["videos"][row["path"]]
        assert row["duration_s"] == pytest.approx(truth["seconds"], abs=0.1)
        assert row["native_fps"] == pytest.approx(truth["fps"], rel=0.02)
        per_video = scores.filter(pl.col("video_id") == row["video_id"])
        assert (
            len(per_video) == row["frames_sampled"] == pytest.approx(truth["seconds"] * 3 + 1, abs=1)
        )  # + the last frame
        with h5py.File(cache.root / "features" / f"{row['video_id']}.h5") as f:
            assert f["features"].shape == (row["frames_sampled"], 1280) and f["features"].dtype == np.float16
            np.testing.assert_allclose(f["timestamps"][:], per_video.sort("sample_index")["timestamp_s"].to_numpy())
    portrait = manifest.filter(pl.col("path") == "phone/portrait.mp4").row(0, named=True)
    assert (portrait["rotation"], portrait["width"], portrait["height"]) == (90, 240, 320)
    assert (cache.root / "extract_config.yaml").is_file()


def test_triggers_find_the_events_better_than_pyscenedetect(extracted, ground_truth, sample_dir):
    from scenedetect import ContentDetector, detect

    _, cache = extracted
    ours = {p: [t["time"] for t in ts] for p, ts in find_triggers(cache, Config().triggers).items()}
    theirs = {
        p: [start.seconds for start, _ in detect(str(sample_dir / p), ContentDetector())[1:]]
        for p in ground_truth["videos"]
    }
    truth = ground_truth["events"]
    our_f1, their_f1 = event_scores(ours, truth)["f1"], event_scores(theirs, truth)["f1"]
    assert our_f1 >= 0.95, ours
    assert our_f1 > their_f1
    assert ours["quiet/empty room.avi"] == [] and ours["quiet/pasillo vacío.mov"] == []


def _small_dataset(
    sample_dir: Path, dest: Path, names=("cuts/street shots.mp4", "transitions/dissolve.mp4", "broken/notes.mp4")
) -> Path:
    for rel in names:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sample_dir / rel, dest / rel)
    return dest


def test_rerun_skips_done_videos_redoes_changed_ones_and_retries_failures(sample_dir, ray_local, tmp_path):
    data = _small_dataset(sample_dir, tmp_path / "data")
    cache = tmp_path / "cache"
    first = run_extract(data, cache, progress=False)
    assert (first.ok, first.skipped, len(first.failed)) == (2, 0, 1)
    before = (cache / "scores").stat().st_mtime_ns, FeatureCache.open(cache).manifest()

    again = run_extract(data, cache, progress=False)
    assert (again.ok, again.skipped, len(again.failed)) == (2 - 2, 2, 1)  # failures are retried
    assert FeatureCache.open(cache).manifest().equals(before[1])

    shutil.copy2(sample_dir / "cuts/interview.mkv", data / "cuts/street shots.mp4")  # new content, same name
    changed = run_extract(data, cache, progress=False)
    assert (changed.ok, changed.skipped) == (1, 1)
    row = FeatureCache.open(cache).manifest().filter(pl.col("path") == "cuts/street shots.mp4").row(0, named=True)
    assert row["duration_s"] == pytest.approx(9.0, abs=0.1)  # the interview's length now


def test_other_settings_need_rebuild(sample_dir, ray_local, tmp_path):
    data = _small_dataset(sample_dir, tmp_path / "data", names=("transitions/dissolve.mp4",))
    cache = tmp_path / "cache"
    run_extract(data, cache, progress=False)
    two_fps = load_config(None, {"extract": {"fps": 2.0}})
    with pytest.raises(CacheError, match="sample_fps.*--rebuild"):
        run_extract(data, cache, two_fps, progress=False)
    rebuilt = run_extract(
        data,
        cache,
        dataclasses.replace(two_fps, extract=dataclasses.replace(two_fps.extract, rebuild=True)),
        progress=False,
    )
    assert rebuilt.ok == 1 and FeatureCache.open(cache).settings.sample_fps == 2.0


def test_a_decoder_crash_fails_only_that_video(sample_dir, ray_local, tmp_path):
    data = _small_dataset(sample_dir, tmp_path / "data", names=("cuts/street shots.mp4", "transitions/dissolve.mp4"))

    @dataclasses.dataclass
    class SegfaultingDecoder(DecodeStage):  # stands in for a decoder bug hit by a corrupt file
        def __call__(self, batch):
            if "dissolve" in batch["path"]:
                os.kill(os.getpid(), signal.SIGSEGV)
            return super().__call__(batch)

    summary = run_extract(data, tmp_path / "cache", progress=False, decode_stage=SegfaultingDecoder())
    assert summary.ok == 1
    assert summary.failed == [
        ("transitions/dissolve.mp4", "the decoder process crashed on this file (corrupted stream?)")
    ]


def test_a_killed_encoder_worker_is_replaced_and_nothing_is_lost(sample_dir, ray_local, tmp_path, kill_an_actor_when):
    data = make_archive(tmp_path / "data", 6, seconds=4.0, seed=3)
    scores = tmp_path / "cache" / "scores"
    killer, killed = kill_an_actor_when(lambda: scores.is_dir() and any(scores.iterdir()), timeout_s=60)
    summary = run_extract(data, tmp_path / "cache", progress=False)
    killer.join()
    assert killed, "no encoder actor was found to kill"
    assert summary.all_ok and summary.ok == 6


def _extract_subprocess(data: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "vtm.pipeline.cli", "extract", str(data), "--cache", str(cache), "--no-progress"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_killed_run_resumes_to_the_same_cache_as_an_uninterrupted_one(ray_local, tmp_path, power_cut):
    data = make_archive(tmp_path / "data", 10, seconds=4.0, seed=5)
    straight = tmp_path / "straight"
    assert run_extract(data, straight, progress=False).all_ok

    resumed = tmp_path / "resumed"
    power_cut(_extract_subprocess(data, resumed), lambda: len(list((resumed / "scores").glob("*.parquet"))) >= 2)
    partial = len(list((resumed / "scores").glob("*.parquet")))
    assert 2 <= partial < 10

    finish = _extract_subprocess(data, resumed)
    out, _ = finish.communicate(timeout=300)
    assert finish.returncode == 0, out
    assert "10 videos" in out
    assert _tree_bytes(resumed).keys() == _tree_bytes(straight).keys()
    differing = [k for k, v in _tree_bytes(resumed).items() if v != _tree_bytes(straight)[k]]
    assert differing == []


def test_ctrl_c_mid_run_ends_with_vtms_word_and_no_rays(tmp_path):
    """SIGINT while videos are being encoded: exit 130 with vtm's one line of what is kept, and no "Task
    StageActor.call failed ... will be retried" from Ray after it (the encoders' queued calls are cancelled before
    the actors are ended, not retried on their way out)."""
    data = make_archive(tmp_path / "data", 30, seconds=4.0, seed=9)
    cache = tmp_path / "cache"
    run = _extract_subprocess(data, cache)
    deadline = time.monotonic() + 120
    while not list((cache / "scores").glob("*.parquet")) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 130, out
    assert f"interrupted: the videos finished so far are kept in {cache}" in out
    assert "retried" not in out and "Traceback" not in out, out


def test_cli_extract_triggers_and_info(sample_dir, ray_local, tmp_path):
    data = _small_dataset(sample_dir, tmp_path / "data")
    cache = tmp_path / "cache"
    runner = CliRunner()
    res = runner.invoke(cli, ["extract", str(data), "--cache", str(cache), "--no-progress"])
    assert res.exit_code == 1, res.output  # one video failed: the exit status says so
    assert "2 extracted" in res.output and "broken/notes.mp4" in res.output

    res = runner.invoke(cli, ["triggers", str(cache), "--json", str(tmp_path / "t.json")])
    assert res.exit_code == 0, res.output
    times = json.loads((tmp_path / "t.json").read_text())
    assert set(times) == {
        str(data.resolve() / "cuts/street shots.mp4"),
        str(data.resolve() / "transitions/dissolve.mp4"),
    }
    assert len(times[str(data.resolve() / "cuts/street shots.mp4")]) == 3

    res = runner.invoke(cli, ["cache", "info", str(cache)])
    assert res.exit_code == 0 and "2 ok" in res.output and "1 failed" in res.output and "not a video" in res.output

    (data / "broken/notes.mp4").unlink()
    res = runner.invoke(cli, ["extract", str(data), "--cache", str(cache), "--no-progress"])
    assert res.exit_code == 0, res.output  # every video now succeeded
    assert "2 already in the cache" in res.output

    res = runner.invoke(cli, ["extract", str(data), "--cache", str(cache), "--fps", "1"])
    assert res.exit_code == 2 and "--rebuild" in res.output


def test_extracted_samples_stay_within_one_frame_of_the_plan(extracted, sample_dir):
    """Extract skips decoding unreferenced frames, so a sample may be its planned frame's neighbour."""
    _, cache = extracted
    moved = 0
    for row in cache.manifest().filter(pl.col("status") == "ok").iter_rows(named=True):
        plan = probe(sample_dir / row["path"], fps=3.0)
        _, timestamps, frame_index = cache.read_features(row["video_id"])
        assert len(frame_index) == len(plan.frame_index) == row["frames_sampled"]
        assert np.all(np.abs(frame_index - plan.frame_index) <= 1), row["path"]
        np.testing.assert_allclose(timestamps, plan.pts[frame_index])
        moved += int(np.sum(frame_index != plan.frame_index))
    assert moved > 0  # the H.264 videos have B-frames: some samples did move


def test_every_sample_keeps_the_change_between_the_frames_decoded_since_the_one_before(extracted, ground_truth):
    """The cut measure (`schema.H5_FRAME_CHANGE`): for every sample but a video's first, the largest and median change
    between consecutive decoded frames since the sample before; at a cut, the largest stands out."""
    _, cache = extracted
    for row in cache.manifest().filter(pl.col("status") == "ok").iter_rows(named=True):
        change = cache.read_frame_change(row["video_id"])
        assert change.shape == (row["frames_sampled"], 2) and change.dtype == np.float16
        assert np.isnan(change[0]).all() and np.isfinite(change[1:]).all(), row["path"]
        assert np.all(change[1:, 0] >= change[1:, 1])
    street = cache.manifest().filter(pl.col("path") == "cuts/street shots.mp4").row(0, named=True)
    _, timestamps, _ = cache.read_features(street["video_id"])
    change = cache.read_frame_change(street["video_id"]).astype(np.float32)
    jump = change[:, 0] - change[:, 1]
    at_cuts = sorted({int(np.searchsorted(timestamps, t - 1e-6)) for t in ground_truth["events"][street["path"]]})
    assert len(at_cuts) >= 3 and jump[at_cuts].min() > 3 * np.delete(jump, [0, *at_cuts]).max()


def test_decode_tasks_of_one_sample_each_measure_the_cuts_as_one_task_does(extracted, sample_dir, ray_local, tmp_path):
    """Each decode task starts from the sample before its first (`VideoPlan.pts_around(since=)`), so the frames between
    two tasks are measured too: with one sample per task, every cut's jump is about what one task for the whole video
    measures."""
    _, whole = extracted
    data = _small_dataset(sample_dir, tmp_path / "data", names=("cuts/street shots.mp4",))
    config = load_config(None, {"extract": {"segment_frames": 1}})
    assert run_extract(data, tmp_path / "cache", config, progress=False).all_ok
    pieces = FeatureCache.open(tmp_path / "cache")
    video_id = pieces.manifest()["video_id"][0]
    one, many = whole.read_frame_change(video_id).astype(np.float32), pieces.read_frame_change(video_id)
    jump_one, jump_many = one[:, 0] - one[:, 1], many[:, 0].astype(np.float32) - many[:, 1]
    cuts = np.flatnonzero(jump_one > 0.05)
    assert len(cuts) >= 3  # the clip's cuts
    np.testing.assert_allclose(jump_many[cuts], jump_one[cuts], rtol=0.25)


def test_the_first_videos_are_probed_and_decoded_while_the_encoder_loads(sample_dir, ray_local, tmp_path):
    """A new cache's videos need no model to be probed and decoded: extract starts them while its encoders load
    (`_start_early`), a bounded number of decodes at a time and of segments in all, and stops starting them once
    the model is there."""
    import ray

    from vtm.pipeline.discover import discover_videos
    from vtm.pipeline.extract import _start_early
    from vtm.pipeline.ray_runner import stage_task
    from vtm.stages.decode import ProbeStage

    names = ("cuts/street shots.mp4", "transitions/dissolve.mp4", "cámara 1/entrada.mp4")
    data = _small_dataset(sample_dir, tmp_path / "data", names)
    videos, ec = discover_videos(data), Config().extract
    probe = stage_task(ProbeStage(fps=ec.fps, max_frames=ec.max_frames))
    decode_task = stage_task(DecodeStage(image_size=ec.image_size, nearest_frames=True))
    submitted = []

    def decode(batch):  # one decode at a time (max_in_flight=1): every earlier one is done when the next starts
        assert not [r for r in submitted if not ray.wait([r], timeout=0, fetch_local=False)[0]]
        submitted.append(decode_task(batch))
        return submitted[-1]

    loading = ray.remote(num_cpus=0)(lambda: time.sleep(60)).remote()  # a model that takes its time
    try:
        t = time.perf_counter()
        early = _start_early(videos, probe, decode, ec.segment_frames, loading, max_segments=100, max_in_flight=1)
        assert time.perf_counter() - t < 30  # back once every video was started, not when the model loaded
        assert len(submitted) == len(videos)  # one segment each, one after another
        for v in videos:
            started = early[v.video_id]
            plan = started.probed["plan"]
            assert len(started.decodes) == -(-len(plan.frame_index) // ec.segment_frames)
            first = ray.get(started.decodes[0])
            assert first["frames"].shape[1:] == (ec.image_size, ec.image_size, 3)
            assert np.abs(first["frame_index"] - plan.frame_index[: len(first["frame_index"])]).max() <= 1

        bounded = _start_early(videos, probe, decode_task, ec.segment_frames, loading, max_segments=1, max_in_flight=4)
        assert sum(bool(e.decodes) for e in bounded.values()) == 1  # one video's segments, then no more
        assert all(e.probed is not None for e in bounded.values())  # the others probed: the run decodes them
    finally:
        ray.cancel(loading, force=True)
    loaded = ray.put("loaded")
    started = _start_early(videos, probe, decode_task, ec.segment_frames, loaded, max_segments=100, max_in_flight=4)
    assert not any(e.decodes for e in started.values())


def test_nvdec_decodes_take_the_gpus_slots_and_the_cores_the_rest(ray_local):
    """`decode_device: nvdec`: a decode goes to the GPU's decoders while fewer than `slots` run there, else to a core;
    a slot is free again once its decode is done."""
    import ray

    from vtm.pipeline.extract import SplitDecodes

    @ray.remote(num_cpus=0)
    def decode(batch, where, seconds):
        time.sleep(seconds)
        return where

    split = SplitDecodes(lambda b: decode.remote(b, "cpu", 0.0), lambda b: decode.remote(b, "gpu", 2.0), slots=2)
    first = [split({"segment": i}) for i in range(5)]
    assert ray.get(first) == ["gpu", "gpu", "cpu", "cpu", "cpu"]
    assert ray.get(split({"segment": 5})) == "gpu"  # the first two are done: their slots are free


@pytest.mark.skipif(importlib.util.find_spec("PyNvVideoCodec") is not None, reason="PyNvVideoCodec is installed here")
def test_nvdec_without_pynvvideocodec_says_how_to_get_it():
    from vtm.pipeline.extract import _nvdec_beside

    with pytest.raises(ConfigError, match="decode_device is nvdec, which needs PyNvVideoCodec: pip install pynvvideo"):
        _nvdec_beside(None, DecodeStage(nearest_frames=True), streams=8)


def test_a_rerun_with_nothing_to_do_starts_no_ray_loads_no_model_and_writes_nothing(ray_local, tmp_path):
    weights = tmp_path / "lite0.pth"
    shutil.copy2(efficientnet_lite0_package_weights(), weights)
    config = load_config(None, {"extract": {"weights": str(weights)}})
    data = make_archive(tmp_path / "data", 2, seconds=2.0, seed=7)
    cache = tmp_path / "cache"
    first = run_extract(data, cache, config, progress=False)
    assert first.all_ok and first.ok == 2 and first.started_ray
    before = _tree_bytes(cache)

    again = run_extract(data, cache, config, progress=False)
    assert (again.videos, again.skipped, again.ok, again.frames, again.started_ray) == (2, 2, 0, 0, False)
    assert _tree_bytes(cache) == before

    clip = next(data.rglob("*.mp4"))
    os.utime(clip)  # touched, same bytes: the full run looks, finds nothing to do, and remembers the new time
    assert run_extract(data, cache, config, progress=False).started_ray
    assert not run_extract(data, cache, config, progress=False).started_ray

    sd = torch.load(weights, weights_only=True)
    name = next(k for k, v in sd.items() if v.is_floating_point())
    sd[name] = sd[name] + 0.01
    torch.save(sd, weights)  # other weights under the same name: the cache must refuse them, not skip
    with pytest.raises(CacheError, match="weights_digest.*--rebuild"):
        run_extract(data, cache, config, progress=False)


def test_ctrl_c_says_what_is_kept_and_how_to_go_on(tmp_path, monkeypatch):
    """Ctrl-C during `vtm extract`: one line saying what is kept and which command goes on, exit status 130
    (interrupted), not click's bare "Aborted!"; not "the same command" where that was a --rebuild, which would
    delete what is kept."""
    import vtm.pipeline.extract as extract

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract, "run_extract", interrupted)
    (tmp_path / "videos").mkdir()
    command = ["extract", str(tmp_path / "videos"), "--cache", str(tmp_path / "cache")]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 130
    assert "interrupted before any video was finished: nothing kept in" in result.output  # no cache was made

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cache.json").write_text("{}")
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 130
    assert "interrupted: the videos finished so far are kept in" in result.output
    assert "the same command goes on from there" in result.output
    result = CliRunner().invoke(cli, [*command, "--rebuild"])
    assert "; the same command without --rebuild goes on from there" in result.output


def test_the_config_a_cache_keeps_never_says_rebuild():
    """extract_config.yaml is what `--config` runs again (`vtm cache info` prints that command): a run with --rebuild
    is recorded without it, else running it again would delete what the cache holds."""
    from vtm.pipeline.extract import _recorded_config

    recorded = yaml.safe_load(_recorded_config(load_config(None, {"extract": {"rebuild": True, "fps": 2.0}})))
    assert recorded["extract"]["rebuild"] is False and recorded["extract"]["fps"] == 2.0
