"""A checkpoint whose weights do not fit its config.json scored with a randomly initialised detector (exit 0,
warnings only, one of them garbled: "checkpoint not used from checkpoint: ...")."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from vtm.cache.store import CacheSettings, FeatureCache
from vtm.models.configs import TemporalEncoderConfig, TriggerDetectorConfig, TriggerModelConfig
from vtm.models.trigger_model import TriggerModel
from vtm.pipeline.checkpoint import CheckpointError, load_trigger_model, save_checkpoint
from vtm.pipeline.cli import main

SETTINGS = CacheSettings(
    encoder="tiny",
    weights="random",
    weights_digest="abc",
    pretrained=False,
    feature_dim=8,
    sample_fps=3.0,
    image_size=32,
    max_frames=None,
)


@pytest.fixture
def checkpoint(tmp_path):
    config = TriggerModelConfig(
        encoder=TemporalEncoderConfig(input_dim=8, d_model=8, num_layers=1, num_heads=2),
        detector=TriggerDetectorConfig(input_dim=8, hidden_sizes=(16,)),
        window=4,
        grid=None,
    )
    features = {
        k: getattr(SETTINGS, k) for k in ("encoder", "weights_digest", "feature_dim", "sample_fps", "image_size")
    }
    return save_checkpoint(tmp_path / "final", TriggerModel(config), {"epoch": 1, "features": features})


@pytest.fixture
def cache(tmp_path):
    (tmp_path / "videos").mkdir()
    return FeatureCache.create(tmp_path / "cache", SETTINGS, dataset_root=tmp_path / "videos")


def _edit_config(checkpoint, edit):
    d = json.loads((checkpoint / "config.json").read_text())
    edit(d["model"])
    (checkpoint / "config.json").write_text(json.dumps(d))


def test_weights_that_do_not_fit_the_config_are_an_error_naming_the_file_and_the_shapes(checkpoint, cache):
    _edit_config(checkpoint, lambda m: m["detector"].update(hidden_sizes=[4]))  # the weights are 16 wide
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors does not fit the model described by .*config\.json: .*detector\.mlp\.0\.weight has "
        r"shape \(16, 8\) in the file, \(4, 8\) in the configuration",
    ):
        load_trigger_model(checkpoint, SETTINGS)
    result = CliRunner().invoke(main, ["triggers", str(cache.root), "--checkpoint", str(checkpoint)])
    assert result.exit_code == 2 and "does not fit the model described by" in result.output, result.output
    assert "Traceback" not in result.output


def test_weights_missing_from_the_file_are_an_error(checkpoint):
    state = load_file(str(checkpoint / "model.safetensors"))
    gone = next(k for k in state if k.startswith("encoder."))
    save_file({k: v for k, v in state.items() if k != gone}, str(checkpoint / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"{gone} is missing from the file"):
        load_trigger_model(checkpoint)


def test_a_harmless_extra_tensor_is_a_warning_in_plain_words(checkpoint, cache):
    state = load_file(str(checkpoint / "model.safetensors"))
    save_file({**state, "extra.weight": torch.zeros(2)}, str(checkpoint / "model.safetensors"))
    _, _, report = load_trigger_model(checkpoint, SETTINGS)
    assert report.unused == ["extra.weight"] and not report.fresh
    result = CliRunner().invoke(main, ["triggers", str(cache.root), "--checkpoint", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert "warning: checkpoint holds a tensor the model does not use: extra.weight" in result.output
    assert "from checkpoint" not in result.output
