"""Defect 4: a partly corrupt video lost every frame, and `vtm infer` and the page crashed on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vtm.stages.decode import DecodeStage, lost_time_ranges, probe

from .conftest import corrupt_middle, write_video


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> Path:
    """10 s of video whose middle 30 % of bytes are noise."""
    return corrupt_middle(write_video(tmp_path_factory.mktemp("damaged") / "damaged.mp4", seconds=10))


def test_decoding_keeps_the_frames_before_and_after_the_damage(damaged):
    plan = probe(damaged, 3.0)
    out = DecodeStage(image_size=32)(
        {"path": str(damaged), "frame_index": plan.frame_index, "rotation": plan.rotation, "decoder": plan.decoder}
    )
    decoded = out["decoded"]
    assert decoded[:3].all() and decoded[-3:].all()  # the start and the end are kept
    assert not decoded.all()
    lost = lost_time_ranges(plan.timestamps, decoded, 3.0)
    assert all(1.0 < start < end < 9.5 for start, end in lost)  # only inside the damaged middle
    assert (
        out["frames"][decoded].reshape(int(decoded.sum()), -1).max(axis=1).min() > 0
    )  # real pictures, not the black fill


def test_extract_keeps_what_decoded_with_a_warning(messy_extract):
    from click.testing import CliRunner

    from vtm.cache.store import FeatureCache
    from vtm.pipeline.cli import main

    result, root, cache_dir = messy_extract
    assert "warning: damaged.mp4: partly decoded" in result.output
    cache = FeatureCache.open(cache_dir)
    row = cache.manifest().filter(path="damaged.mp4").to_dicts()[0]
    assert row["status"] == "ok" and row["error"] is None
    assert "lost" in row["warning"] and " s" in row["warning"]
    planned = len(probe(root / "damaged.mp4", 3.0).frame_index)
    assert 3 <= row["frames_sampled"] < planned
    _, timestamps, _ = cache.read_features(row["video_id"])
    assert len(timestamps) == row["frames_sampled"] and np.all(np.diff(timestamps) > 0)
    info = CliRunner().invoke(main, ["cache", "info", str(cache_dir)])
    assert "warning: damaged.mp4: partly decoded" in info.output


def test_infer_analyses_what_decoded_and_says_what_was_lost(damaged, caplog):
    from vtm.models.configs import TemporalEncoderConfig, TriggerDetectorConfig, TriggerModelConfig
    from vtm.models.trigger_model import TriggerModel
    from vtm.pipeline.infer import VideoTriggerModel
    from vtm.stages.describe import DescribeStage
    from vtm.stages.encode import EncodeStage

    encoder = EncodeStage(encoder="resnet18", device="cpu")
    encoder.setup()
    config = TriggerModelConfig(
        encoder=TemporalEncoderConfig(input_dim=encoder.info.feature_dim + 64, d_model=16, num_layers=1, num_heads=2),
        detector=TriggerDetectorConfig(input_dim=16, hidden_sizes=(8,)),
        window=8,
        grid=None,
    )
    describer = DescribeStage(
        model="not-loaded", summary="join"
    )  # nothing reaches the threshold, so nothing is described
    model = VideoTriggerModel(encoder, TriggerModel(config).eval(), describer, sample_fps=3.0, image_size=64)
    with caplog.at_level("WARNING"):
        analysis = model.analyze(damaged, threshold=2.0)
    assert not [
        r for r in caplog.records if "lost" in r.getMessage()
    ]  # `vtm infer` and the page show the warning: not the log as well
    planned = len(probe(damaged, 3.0).frame_index)
    assert 3 <= analysis.result["num_frames_analyzed"] < planned
    assert analysis.warning and analysis.result["warning"] == analysis.warning and "lost" in analysis.warning
