"""End to end: `vtm describe` on a real cache, a real local Ray (and a 3-node one), a tiny offline LLaVA."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import wave
from pathlib import Path
from urllib.parse import quote

import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from vtm.cache.store import FeatureCache
from vtm.models.llava_adapter import LanguageModelLoadError
from vtm.models.tiny import make_tiny_causal_lm, make_tiny_llava
from vtm.pipeline.checkpoint import CheckpointError, load_trigger_model
from vtm.pipeline.cli import main as cli
from vtm.pipeline.config import ConfigError, DescribeConfig, load_config
from vtm.pipeline.describe import run_describe
from vtm.pipeline.describe_output import webvtt
from vtm.pipeline.describer import describe_stage
from vtm.pipeline.triggers import find_triggers, learned_scores

ANALYSIS_KEYS = {"video_path", "num_frames_analyzed", "num_triggers_detected", "triggers", "video_summary"}
TRIGGER_KEYS = {"timestamp", "frame_index", "trigger_confidence", "analysis"}
SMALL = {"describe": {"image_size": 64, "max_new_tokens": 12}}  # tiny model: small key frames, short texts


def _config_file(tmp_path: Path, **describe) -> Path:
    path = tmp_path / "describe.yaml"
    path.write_text(yaml.safe_dump({"describe": {**SMALL["describe"], **describe}}))
    return path


def _config(model, **describe):
    return load_config(None, {"describe": {**SMALL["describe"], "model": str(model), **describe}})


def _outputs(out: Path, cache: FeatureCache) -> dict[str, dict]:
    """{video path: analysis JSON} for every ok video, checking the format and the VTT beside it."""
    found = {}
    for row in cache.manifest().filter(pl.col("status") == "ok").iter_rows(named=True):
        analysis = json.loads((out / f"{row['path']}.json").read_text())
        assert set(analysis) == ANALYSIS_KEYS
        assert all(set(t) == TRIGGER_KEYS for t in analysis["triggers"])
        assert analysis["num_triggers_detected"] == len(analysis["triggers"])
        assert analysis["num_frames_analyzed"] == row["frames_sampled"]
        assert isinstance(analysis["video_summary"], str) and analysis["video_summary"]
        vtt = (out / f"{row['path']}.vtt").read_text(encoding="utf-8")
        assert vtt.startswith("WEBVTT\n") and vtt.count(" --> ") == len(analysis["triggers"])
        found[row["path"]] = analysis
    return found


def _check_table(out: Path, analyses: dict[str, dict]) -> None:
    table = pl.read_parquet(out / "descriptions.parquet")
    assert len(table) == sum(len(a["triggers"]) for a in analyses.values())
    assert table.select(["video_path", "frame_index"]).is_duplicated().sum() == 0  # each window described once
    for path, a in analyses.items():
        rows = table.filter(pl.col("video_path") == path).sort("trigger")
        assert rows["description"].to_list() == [t["analysis"] for t in a["triggers"]]


def test_cli_describe_writes_every_format_once_per_trigger_and_a_rerun_skips(red_cache, tiny_llava, tmp_path):
    videos, cache_dir = red_cache
    cache = FeatureCache.open(cache_dir)
    out = tmp_path / "out"
    args = [
        "describe",
        str(cache_dir),
        "--out",
        str(out),
        "--model",
        str(tiny_llava),
        "--config",
        str(_config_file(tmp_path)),
        "--no-progress",
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "5 described" in res.output and "sent to the VLM" in res.output

    analyses = _outputs(out, cache)
    expected = find_triggers(cache, load_config().triggers, "change")  # the same selection `vtm triggers` makes
    for path, a in analyses.items():
        assert [(t["timestamp"], t["frame_index"]) for t in a["triggers"]] == [
            (t["time"], t["frame_index"]) for t in expected[path]
        ]
        assert a["video_path"] == str(videos.resolve() / path)
    assert sum(len(a["triggers"]) for a in analyses.values()) >= 10
    _check_table(out, analyses)
    report = json.loads((out / "describe_manifest.json").read_text())["last_run"]
    assert report["frames_to_vlm"] == sum(len(a["triggers"]) for a in analyses.values())
    assert report["complete"] and 0 < report["vlm_share"] <= 0.3 and report["vlm_seconds"] > 0

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.name != "describe_manifest.json"}
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "0 described, 5 already described" in again.output, again.output
    assert {p: p.stat().st_mtime_ns for p in before} == before
    _check_table(out, analyses)

    other = CliRunner().invoke(cli, args + ["--threshold", "0.7", "--max-windows-per-video", "1"])
    assert other.exit_code == 0 and "5 described" in other.output, other.output  # other settings: described again
    fewer = _outputs(out, cache)
    assert all(len(a["triggers"]) <= 1 for a in fewer.values())
    _check_table(out, fewer)


def test_describe_with_objects_and_audio_then_a_report_of_the_run(red_cache, tiny_llava, tmp_path):
    from PIL import Image

    from vtm.models.tiny import TINY_DETR_LABELS, make_tiny_detr

    _, cache_dir = red_cache
    rows = {r["video_id"]: r for r in FeatureCache.open(cache_dir).manifest().to_dicts()}
    out = tmp_path / "out"
    detr = make_tiny_detr(tmp_path / "detr")
    config = _config_file(tmp_path, detector_threshold=0.0)  # a random DETR scores low: keep everything it finds
    args = [
        "describe",
        str(cache_dir),
        "--out",
        str(out),
        "--model",
        str(tiny_llava),
        "--objects",
        "--detector",
        str(detr),
        "--audio",
        "--config",
        str(config),
        "--no-progress",
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert f"vtm report {out}" in res.output

    videos = json.loads((out / "describe_manifest.json").read_text())["videos"]
    assert len(videos) == 5
    for video_id, entry in videos.items():
        row, analysis = rows[video_id], json.loads((out / entry["json"]).read_text())
        assert len(entry["frames"]) == analysis["num_triggers_detected"] == entry["triggers"] >= 1
        for trigger, frame in zip(analysis["triggers"], entry["frames"]):
            assert trigger["objects"] and {o["label"] for o in trigger["objects"]} <= set(TINY_DETR_LABELS.values())
            for o in trigger["objects"]:  # boxes in the source video's pixels
                x0, y0, x1, y1 = o["box"]
                assert 0 <= x0 <= x1 <= row["width"] and 0 <= y0 <= y1 <= row["height"]
            with Image.open(out / frame) as thumbnail:  # the video's own shape, not the square the VLM saw
                assert abs(thumbnail.width / thumbnail.height - row["width"] / row["height"]) < 0.02
        assert (out / entry["timeline"]).read_bytes().startswith(b"\x89PNG")
        with wave.open(str(out / entry["audio"])) as spoken:
            assert (
                spoken.getframerate() == 22050 and spoken.getnframes() > 22050 // 10
            )  # the tiny model's summaries are short

    # A lost output is made again, for its video only.
    lost_id, lost = next(iter(videos.items()))
    (out / lost["frames"][0]).unlink()
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "1 described, 4 already described" in again.output, again.output
    assert (out / lost["frames"][0]).is_file()

    res = CliRunner().invoke(cli, ["report", str(out)])
    assert res.exit_code == 0, res.output
    page = (out / "report.html").read_text()
    for entry in videos.values():
        assert (
            all(quote(frame) in page for frame in entry["frames"])
            and quote(entry["timeline"]) in page
            and quote(entry["audio"]) in page
        )
    analyses = [json.loads((out / entry["json"]).read_text()) for entry in videos.values()]
    share = sum(a["num_triggers_detected"] for a in analyses) / sum(a["num_frames_analyzed"] for a in analyses)
    assert (
        f"{100 * share:.1f} % of sampled frames went to the vision-language model" in page
    )  # the whole archive, not only the re-run's video
    missing = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert missing.exit_code == 2 and "vtm describe" in missing.output


def test_a_missing_source_video_fails_only_that_video(red_cache, tiny_llava, tmp_path):
    videos, cache_dir = red_cache
    moved = tmp_path / "videos"
    shutil.copytree(videos, moved)
    (moved / "red/clip_0002.mp4").unlink()
    cfg = _config(tiny_llava, summary="join")
    summary = run_describe(cache_dir, tmp_path / "out", cfg, progress=False, dataset_root=moved)
    assert summary.described == 4 and [p for p, _ in summary.failed] == ["red/clip_0002.mp4"]
    assert "source video not found" in summary.failed[0][1] and "moved or deleted" in summary.failed[0][1]
    assert not (tmp_path / "out/red/clip_0002.mp4.json").exists()

    shutil.copy2(videos / "red/clip_0002.mp4", moved / "red/clip_0002.mp4")
    retried = run_describe(cache_dir, tmp_path / "out", cfg, progress=False, dataset_root=moved)
    assert (retried.described, retried.skipped, retried.failed) == (1, 4, [])


def test_a_model_that_cannot_be_loaded_says_what_to_do(red_cache, tmp_path):
    _, cache_dir = red_cache
    with pytest.raises(LanguageModelLoadError, match="save_pretrained"):
        run_describe(cache_dir, tmp_path / "out", _config(tmp_path / "no-such-model"), progress=False)
    with pytest.raises(LanguageModelLoadError, match="hf download"):
        run_describe(cache_dir, tmp_path / "out", _config("vtm-tests/not-cached-anywhere"), progress=False)
    with pytest.raises(ConfigError, match="--model"):
        run_describe(cache_dir, tmp_path / "out", load_config(), progress=False)
    with pytest.raises(LanguageModelLoadError, match="cannot see frames"):
        run_describe(cache_dir, tmp_path / "out", _config(make_tiny_causal_lm(tmp_path / "causal")), progress=False)
    res = CliRunner().invoke(
        cli, ["describe", str(cache_dir), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "nope")]
    )
    assert res.exit_code == 2 and "error:" in res.output and "save_pretrained" in res.output


def test_describe_with_a_trained_adapter_rescored_by_its_trigger_model(red_cache, adapter_checkpoint, tmp_path):
    _, cache_dir = red_cache
    cache = FeatureCache.open(cache_dir)
    cfg = load_config(None, {**SMALL, "triggers": {"threshold": 0.3}})
    summary = run_describe(cache_dir, tmp_path / "out", cfg, checkpoint=adapter_checkpoint, progress=False)
    assert summary.all_ok and summary.adapter and summary.described == 5
    analyses = _outputs(tmp_path / "out", cache)
    model, _, _ = load_trigger_model(adapter_checkpoint, cache.settings)
    expected = find_triggers(cache, cfg.triggers, "learned", learned_scores(cache, model))
    assert {p: [t["frame_index"] for t in a["triggers"]] for p, a in analyses.items()} == {
        p: [t["frame_index"] for t in ts] for p, ts in expected.items()
    }
    assert summary.windows == sum(len(ts) for ts in expected.values()) > 0
    _check_table(tmp_path / "out", analyses)


def test_a_checkpoint_for_other_features_or_another_llm_is_refused(red_cache, adapter_checkpoint, tmp_path):
    _, cache_dir = red_cache
    other = tmp_path / "other"
    shutil.copytree(adapter_checkpoint, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["features"]["encoder"], meta["features"]["weights_digest"] = "resnet18", "0123"
    (other / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="other features.*encoder"):
        run_describe(cache_dir, tmp_path / "out", load_config(None, SMALL), checkpoint=other, progress=False)
    causal = make_tiny_causal_lm(tmp_path / "causal")
    with pytest.raises(CheckpointError, match="trained with the llava model"):
        run_describe(cache_dir, tmp_path / "out", _config(causal), checkpoint=adapter_checkpoint, progress=False)


def test_a_fine_tuned_llm_saved_in_the_checkpoint_is_the_one_that_describes(adapter_checkpoint, tmp_path):
    tuned = tmp_path / "tuned"
    shutil.copytree(adapter_checkpoint, tuned)
    make_tiny_llava(tuned / "llm", seed=1)  # stands in for train.freeze_llm: false
    stage, digest = describe_stage(tuned, DescribeConfig(max_new_tokens=4))
    assert stage.model == str(tuned / "llm") and stage.adapter is not None
    assert digest != describe_stage(adapter_checkpoint, DescribeConfig(max_new_tokens=4))[1]  # a re-run describes again
    stage.setup()
    window = np.zeros((1, 16, 32), np.float32)
    assert (
        len(
            stage({"frames": np.zeros((1, 32, 32, 3), np.uint8), "context": window, "mask": np.ones((1, 16), bool)})[
                "description"
            ]
        )
        == 1
    )


def test_a_killed_describe_actor_is_restarted_and_nothing_is_lost_or_duplicated(
    red_cache, tiny_llava, tmp_path, kill_an_actor_when
):
    _, cache_dir = red_cache
    out = tmp_path / "out"
    # --dense with one window per call: enough calls that the actor is killed with most of them still to come.
    cfg = _config(tiny_llava, dense=True, batch_size=1, max_new_tokens=24)
    # one video done: the actor is mid-run
    killer, killed = kill_an_actor_when(lambda: any(out.rglob("*.mp4.json")))
    summary = run_describe(cache_dir, out, cfg, progress=False)
    killer.join()
    assert killed, "no describe actor was found to kill"
    assert summary.all_ok and summary.described == 5
    cache = FeatureCache.open(cache_dir)
    analyses = _outputs(out, cache)
    for row in cache.manifest().iter_rows(named=True):  # dense: every sampled frame, exactly once
        assert len(analyses[row["path"]]["triggers"]) == row["frames_sampled"]
    _check_table(out, analyses)
    assert summary.vlm_share == 1.0


def test_a_killed_run_resumes_and_ends_complete(red_cache, tiny_llava, tmp_path, power_cut):
    _, cache_dir = red_cache
    out = tmp_path / "out"
    config = _config_file(
        tmp_path, dense=True, batch_size=1, summary="join"
    )  # many small calls: time to kill it mid-run
    args = [
        "describe",
        str(cache_dir),
        "--out",
        str(out),
        "--model",
        str(tiny_llava),
        "--config",
        str(config),
        "--no-progress",
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vtm.pipeline.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    power_cut(proc, lambda: any(out.rglob("*.mp4.json")))
    manifest = json.loads((out / "describe_manifest.json").read_text())
    assert (
        manifest["last_run"] == {"complete": False} and not (out / "descriptions.parquet").exists()
    )  # nothing claims to be whole
    done_before = {v for v, e in manifest["videos"].items() if e["status"] == "ok"}
    assert len(done_before) < 5

    resumed = run_describe(
        cache_dir, out, load_config(config, {"describe": {"model": str(tiny_llava)}}), progress=False
    )
    assert resumed.all_ok and resumed.skipped == len(done_before) and resumed.described == 5 - len(done_before)
    analyses = _outputs(out, FeatureCache.open(cache_dir))
    assert all(a["num_triggers_detected"] == a["num_frames_analyzed"] for a in analyses.values())
    _check_table(out, analyses)
    assert json.loads((out / "describe_manifest.json").read_text())["last_run"]["complete"]


MULTI_NODE = textwrap.dedent(
    """
    import subprocess, sys
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        done = subprocess.run([sys.executable, "-m", "vtm.pipeline.cli", *sys.argv[1:], "--address", cluster.address],
        capture_output=True, text=True)
        print(done.stdout, done.stderr)
        sys.exit(done.returncode)
    finally:
        cluster.shutdown()
    """
)


def test_describe_on_a_three_node_cluster_by_address(red_cache, tiny_llava, tmp_path):
    _, cache_dir = red_cache
    out = tmp_path / "out"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"describe": {**SMALL["describe"], "num_describers": 2, "batch_size": 2}}))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    args = [
        "describe",
        str(cache_dir),
        "--out",
        str(out),
        "--model",
        str(tiny_llava),
        "--config",
        str(config),
        "--no-progress",
    ]
    done = subprocess.run(
        [sys.executable, "-c", MULTI_NODE, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 described" in done.stdout
    analyses = _outputs(out, FeatureCache.open(cache_dir))
    _check_table(out, analyses)


def test_webvtt_cues_hold_their_trigger_and_never_overlap():
    text = webvtt([0.2, 1.0, 5.0], ["first", "two\nlines --> here", ""], before_s=1.0, after_s=1.0, duration_s=5.5)
    assert text.splitlines()[:4] == ["WEBVTT", "", "1", "00:00:00.000 --> 00:00:00.600"]
    assert "00:00:00.600 --> 00:00:02.000\ntwo lines -> here" in text
    assert "00:00:04.000 --> 00:00:05.500\n(empty description)" in text
