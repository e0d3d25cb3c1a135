"""`vtm infer` and VideoTriggerModel: one video, every phase in-process, the describe JSON format."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import polars as pl
import pytest
import torch
from click.testing import CliRunner

from vtm.cache.store import FeatureCache
from vtm.cache.windows import WindowReader, read_model_inputs
from vtm.pipeline.checkpoint import CheckpointError, load_trigger_model
from vtm.pipeline.cli import main as cli
from vtm.pipeline.config import ConfigError
from vtm.pipeline.infer import VideoTriggerModel
from vtm.pipeline.train import WindowDataset
from vtm.pipeline.triggers import learned_scores
from vtm.stages.decode import DecodeStage, probe
from vtm.stages.select_windows import SelectWindowsStage

ANALYSIS_KEYS = {"video_path", "num_frames_analyzed", "num_triggers_detected", "triggers", "video_summary"}
THRESHOLD = 0.3
VIDEO = "red/clip_0001.mp4"


@pytest.fixture(scope="module")
def model(adapter_checkpoint):
    return VideoTriggerModel.from_checkpoint(adapter_checkpoint)


def _expected_from_cache(cache_dir, checkpoint, path):
    """What `vtm describe --checkpoint` picks for this video from the cache (extract's decode + encode)."""
    cache = FeatureCache.open(cache_dir)
    row = cache.manifest().filter(pl.col("path") == path).row(0, named=True)
    trigger_model, _, _ = load_trigger_model(checkpoint, cache.settings)
    score = learned_scores(cache, trigger_model, [row["video_id"]])[row["video_id"]]
    scores = cache.read_scores([row["video_id"]]).sort("sample_index")
    picked = SelectWindowsStage(threshold=THRESHOLD)({"timestamps": scores["timestamp_s"].to_numpy(), "score": score})
    return scores["frame_index"].to_numpy()[picked["trigger_index"]].tolist(), len(scores)


def test_cli_infer_finds_what_describe_finds_from_the_cache(red_cache, adapter_checkpoint, tmp_path):
    videos, cache_dir = red_cache
    out = tmp_path / "analysis.json"
    res = CliRunner().invoke(
        cli,
        [
            "infer",
            str(videos / VIDEO),
            "--checkpoint",
            str(adapter_checkpoint),
            "--output",
            str(out),
            "--threshold",
            str(THRESHOLD),
        ],
    )
    assert res.exit_code == 0, res.output
    analysis = json.loads(out.read_text())
    assert set(analysis) == ANALYSIS_KEYS and analysis["video_path"] == str(videos / VIDEO)
    frame_index, frames = _expected_from_cache(cache_dir, adapter_checkpoint, VIDEO)
    assert analysis["num_frames_analyzed"] == frames
    assert [t["frame_index"] for t in analysis["triggers"]] == frame_index and frame_index
    assert all(isinstance(t["analysis"], str) and t["trigger_confidence"] >= THRESHOLD for t in analysis["triggers"])


def test_infer_triggered_analysis_from_frames_in_memory(model, red_cache):
    videos, _ = red_cache
    plan = probe(videos / VIDEO, model.sample_fps)
    frames = DecodeStage(image_size=96)(
        {
            "path": str(videos / VIDEO),
            "frame_index": plan.frame_index,
            "rotation": plan.rotation,
            "decoder": plan.decoder,
        }
    )["frames"]
    analysis = model.infer_triggered_analysis(frames, plan.timestamps, trigger_threshold=THRESHOLD)
    assert set(analysis) == ANALYSIS_KEYS and analysis["video_path"] is None
    assert (
        analysis["num_frames_analyzed"] == len(frames)
        and analysis["num_triggers_detected"] == len(analysis["triggers"]) > 0
    )
    for t in analysis["triggers"]:  # frame_index counts the frames given
        assert t["timestamp"] == pytest.approx(plan.timestamps[t["frame_index"]], abs=1e-3)
    assert model.infer_triggered_analysis(frames, plan.timestamps, trigger_threshold=0.999)["triggers"] == []
    with pytest.raises(ValueError, match="timestamps"):
        model.infer_triggered_analysis(frames, plan.timestamps[:-1])


def test_training_and_inference_build_identical_inputs_for_the_same_video(model, red_cache):
    """What infer builds from a video's frames equals, frame for frame, the windows training reads from the cache
    (from memory or from HDF5) and what describe and `vtm triggers` read: a model is scored on what it learnt from."""
    videos, cache_dir = red_cache
    cache = FeatureCache.open(cache_dir)
    video_id = cache.manifest().filter(pl.col("path") == VIDEO)["video_id"][0]
    plan = probe(videos / VIDEO, model.sample_fps)
    pts, pts_start = plan.pts_around(plan.frame_index)
    decoded = DecodeStage(image_size=model.image_size, nearest_frames=True)(  # as extract and infer decode
        {
            "path": str(videos / VIDEO),
            "frame_index": plan.frame_index,
            "rotation": plan.rotation,
            "decoder": plan.decoder,
            "pts": pts,
            "pts_start": pts_start,
        }
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in extract's Ray actors: the encoder's last bits depend on how its sums are split
    try:
        inferred = model.model_inputs(decoded["frames"])
    finally:
        torch.set_num_threads(threads)
    spec = model.trigger_model.config
    assert inferred.shape == (len(plan.frame_index), spec.input_dim)
    described, _ = read_model_inputs(cache, video_id, spec)
    np.testing.assert_array_equal(described, inferred)
    for in_memory in (False, True):
        reader = WindowReader(cache, spec.window, spec)
        if in_memory:
            reader.load([video_id])
        n = reader.num_frames(video_id)
        items = [(video_id, start, "", 0) for start in range(0, n, spec.window)]
        dataset = WindowDataset(reader, {video_id: np.zeros(n, np.int64)}, items)
        trained = np.concatenate([item["features"][item["mask"]] for item in dataset])
        np.testing.assert_array_equal(trained, inferred)
        reader.close()


def test_strict_loading_refuses_other_encoder_weights(adapter_checkpoint, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(adapter_checkpoint, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["features"]["weights_digest"] = "0123456789abcdef"
    (other / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="--strict.*weights_digest"):
        VideoTriggerModel.from_checkpoint(other, strict=True)
    loose = VideoTriggerModel.from_checkpoint(other)
    assert any("weights_digest" in m for m in loose.report.mismatches)
    res = CliRunner().invoke(
        cli, ["infer", __file__, "--checkpoint", str(other), "--output", str(tmp_path / "a.json"), "--strict-loading"]
    )
    assert res.exit_code == 2 and "weights_digest" in res.output


def test_a_checkpoint_without_an_adapter_needs_a_model(adapter_checkpoint, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(adapter_checkpoint, bare)
    (bare / "adapter.safetensors").unlink()
    with pytest.raises(ConfigError, match="--model"):
        VideoTriggerModel.from_checkpoint(bare)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU says")
def test_cuda_without_a_gpu_says_so(adapter_checkpoint):
    with pytest.raises(ConfigError, match="no CUDA GPU.*--device cpu"):
        VideoTriggerModel.from_checkpoint(adapter_checkpoint, device="cuda")


def test_analyze_reports_progress_keeps_the_strongest_moments_and_returns_what_a_page_shows(
    model, red_cache, monkeypatch
):
    videos, _ = red_cache
    # Every local peak of the smoke-test model's score counts: its scores are not what this test is about.
    triggers = dataclasses.replace(model.config.triggers, min_dip=0.0)
    monkeypatch.setattr(model, "config", dataclasses.replace(model.config, triggers=triggers))
    steps = []
    full = model.analyze(
        videos / VIDEO, threshold=THRESHOLD, progress=lambda fraction, message: steps.append((fraction, message))
    )
    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] >= 0.9
    assert any("describing" in m for _, m in steps) and any("encoding" in m for _, m in steps)
    k = full.result["num_triggers_detected"]
    assert k >= 2, "the test needs a video with several moments"
    assert (
        len(full.scores) == len(full.timestamps) == full.result["num_frames_analyzed"] and full.threshold == THRESHOLD
    )
    plan = probe(videos / VIDEO, model.sample_fps)
    assert len(full.pictures) == k
    for picture in full.pictures:  # the video's shape, not the square the describer saw
        assert (
            max(picture.shape[:2]) == 480 and abs(picture.shape[1] / picture.shape[0] - plan.width / plan.height) < 0.01
        )

    one = model.analyze(videos / VIDEO, threshold=THRESHOLD, max_triggers=1).result
    strongest = max(full.result["triggers"], key=lambda t: t["trigger_confidence"])
    assert [t["frame_index"] for t in one["triggers"]] == [strongest["frame_index"]]


def test_cli_infer_with_objects_and_a_spoken_summary(red_cache, adapter_checkpoint, tmp_path):
    import wave

    from vtm.models.tiny import make_tiny_detr

    videos, _ = red_cache
    out, audio = tmp_path / "analysis.json", tmp_path / "summary.wav"
    detr = make_tiny_detr(tmp_path / "detr")
    args = [
        "infer",
        str(videos / VIDEO),
        "--checkpoint",
        str(adapter_checkpoint),
        "--output",
        str(out),
        "--threshold",
        str(THRESHOLD),
    ]
    res = CliRunner().invoke(cli, args + ["--detector", str(detr), "--detector-threshold", "0", "--audio", str(audio)])
    assert res.exit_code == 0, res.output
    analysis = json.loads(out.read_text())
    assert analysis["triggers"] and all(t["objects"] for t in analysis["triggers"])
    with wave.open(str(audio)) as spoken:
        assert spoken.getframerate() == 22050 and spoken.getnframes() > 0
    missing = CliRunner().invoke(cli, args + ["--detector", str(tmp_path / "no-detr")])
    assert missing.exit_code == 2 and "cannot load object detector" in missing.output


def test_cli_infer_takes_its_settings_from_config_and_its_flags_override_it(red_cache, adapter_checkpoint, tmp_path):
    from vtm.models.tiny import make_tiny_detr

    videos, _ = red_cache
    detr = make_tiny_detr(tmp_path / "detr")
    config = tmp_path / "infer.yaml"
    config.write_text(
        f"triggers: {{threshold: {THRESHOLD}, max_triggers: 1}}\n"
        f"describe: {{summary: join, objects: true, detector: {detr}, detector_threshold: 0.0}}\n"
    )
    out = tmp_path / "analysis.json"
    args = ["infer", str(videos / VIDEO), "--checkpoint", str(adapter_checkpoint), "--output", str(out)]
    res = CliRunner().invoke(cli, args + ["--config", str(config), "--detector-threshold", "1.0"])
    assert res.exit_code == 0, res.output
    analysis = json.loads(out.read_text())
    (trigger,) = analysis["triggers"]  # triggers.max_triggers from the file
    assert trigger["trigger_confidence"] >= THRESHOLD  # triggers.threshold from the file, not the checkpoint's
    assert trigger["objects"] == []  # objects on from the file; the flag's threshold 1.0 keeps none
    assert analysis["video_summary"] == f"{trigger['timestamp']:.1f} s: {trigger['analysis']}"  # summary: join

    config.write_text("describe: {detector_threshold: 2.0}\n")
    bad = CliRunner().invoke(cli, args + ["--config", str(config)])
    assert bad.exit_code == 2 and "describe.detector_threshold must be within" in bad.output
