"""Every `vtm extract --weights` problem printed a Ray remote traceback ("error: ray::StageActor.invoke() ...")
instead of the one-line EncoderLoadError, and left an empty cache folder behind."""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from vtm.models.encoder_weights import EncoderLoadError
from vtm.models.visual_encoder import _load_state_dict
from vtm.pipeline.cli import main


def _extract(tmp_path, weights):
    (tmp_path / "videos").mkdir(exist_ok=True)
    return CliRunner().invoke(
        main,
        [
            "extract",
            str(tmp_path / "videos"),
            "--cache",
            str(tmp_path / "cache"),
            "--encoder",
            "resnet18",
            "--weights",
            str(weights),
            "--no-progress",
        ],
    )


def test_a_missing_weights_file_is_said_before_ray_starts_and_leaves_no_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("vtm.pipeline.extract.init_ray", lambda *a, **k: pytest.fail("Ray started for a usage error"))
    result = _extract(tmp_path, tmp_path / "nowhere.pth")
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"error: weights file {tmp_path / 'nowhere.pth'} not found; --weights (extract.weights) takes a local .pth "
        "or .safetensors file"
    )
    assert not (tmp_path / "cache").exists()


def _garbage(path):
    path.write_bytes(b"not a safetensors file at all")


def _pickled(path):
    path.write_bytes(pickle.dumps({"layer.weight": [1.0, 2.0]}, protocol=4))


def _wrong_keys(path):
    save_file({"something.else": torch.zeros(3)}, str(path))


@pytest.mark.parametrize(
    "name, make, words",
    [
        ("w.safetensors", _garbage, "weights file {} is not a readable safetensors file"),
        ("w.pkl", _pickled, "weights file {} holds pickled Python objects"),
        ("w.safetensors", _wrong_keys, "{} does not fit resnet18: missing ['conv1.weight'"),
    ],
)
def test_a_bad_weights_file_is_one_line_without_rays_traceback(tmp_path, ray_local, name, make, words):
    make(tmp_path / name)
    result = _extract(tmp_path, tmp_path / name)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + words.format(tmp_path / name)), result.output
    assert "ray::" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "cache").exists()


def test_torchs_pickle_protocol_warning_is_not_shown(tmp_path):
    _pickled(tmp_path / "w.pkl")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with pytest.raises(EncoderLoadError, match="holds pickled Python objects"):
            _load_state_dict(tmp_path / "w.pkl")
    assert not [w for w in shown if "pickle protocol" in str(w.message)]
