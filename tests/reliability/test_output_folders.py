"""`vtm describe --out` and `vtm train-from-cache --out` pointed at a user's folder overwrote files there
(and training ran a whole epoch before failing); a run that failed before writing left an empty folder."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vtm.cache.output_dir import MARKER, OutputDirError
from vtm.cache.store import CacheError, CacheSettings, FeatureCache
from vtm.pipeline.annotations import AnnotationError
from vtm.pipeline.cli import main
from vtm.pipeline.config import load_config
from vtm.pipeline.describe import run_describe
from vtm.pipeline.describe_output import MANIFEST_FILE
from vtm.pipeline.train import run_train

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


def _users_folder(root, names):
    files = {rel: f"mine: {rel}".encode() for rel in names}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _untouched(root, files):
    """Every file is as the user left it, and vtm added nothing (no lock, no mark)."""
    assert all((root / rel).read_bytes() == data for rel, data in files.items())
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == sorted(files)


@pytest.fixture
def describe_config(tmp_path):
    """A config naming a LLaVA model that is only a config.json: an empty cache describes nothing, so no weights are
    loaded."""
    (tmp_path / "llava").mkdir()
    (tmp_path / "llava" / "config.json").write_text('{"model_type": "llava"}')
    return load_config(None, {"describe": {"model": str(tmp_path / "llava")}})


@pytest.fixture
def cache(tmp_path):
    (tmp_path / "videos").mkdir()
    return FeatureCache.create(tmp_path / "cache", SETTINGS, dataset_root=tmp_path / "videos")


def test_describe_into_a_users_folder_is_refused_and_overwrites_nothing(tmp_path, cache):
    du = tmp_path / "du"
    files = _users_folder(du, ["d1.mp4.json", "descriptions.parquet", "d1.mp4.frames/01.jpg", "describe_config.yaml"])
    with pytest.raises(OutputDirError, match=f"--out {du} is not empty and not a vtm describe output"):
        run_describe(cache.root, du, progress=False)
    _untouched(du, files)
    result = CliRunner().invoke(main, ["describe", str(cache.root), "--out", str(du), "--no-progress"])
    assert result.exit_code == 2 and "not a vtm describe output" in result.output and "Traceback" not in result.output
    _untouched(du, files)


def test_a_describe_output_is_reused_and_an_empty_new_one_is_not_left_behind(tmp_path, cache, describe_config):
    out = tmp_path / "out"
    (out / "d1.mp4.json").parent.mkdir()
    (out / MANIFEST_FILE).write_text(
        json.dumps({"format_version": 1, "videos": {}})
    )  # written by an earlier vtm, before the mark
    (out / "d1.mp4.json").write_text("{}")
    summary = run_describe(
        cache.root, out, describe_config, progress=False
    )  # an empty cache: nothing to describe, no model loaded
    assert summary.videos == 0 and json.loads((out / MARKER).read_text())["kind"] == "describe"
    assert run_describe(cache.root, out, describe_config, progress=False).videos == 0  # marked now: reused again
    with pytest.raises(CacheError):
        run_describe(tmp_path / "no-cache", tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


def test_describe_and_training_outputs_are_not_mixed_up(tmp_path, cache, describe_config):
    annotations = tmp_path / "a.jsonl"
    annotations.write_text("not json\n")
    out = tmp_path / "out"
    run_describe(cache.root, out, describe_config, progress=False)
    with pytest.raises(OutputDirError, match="is a vtm describe output, not a train one"):
        run_train(cache.root, annotations, out, load_config(), progress=False)


def test_training_into_a_users_folder_is_refused_before_anything_is_written(tmp_path, cache):
    tu = tmp_path / "tu"
    files = _users_folder(tu, ["config.yaml", "final/notes.txt", "checkpoint-epoch-1/x.bin"])
    annotations = tmp_path / "a.jsonl"
    annotations.write_text("")
    with pytest.raises(OutputDirError, match=f"--out {tu} is not empty and not a vtm train output"):
        run_train(cache.root, annotations, tu, load_config(), progress=False)
    _untouched(tu, files)
    result = CliRunner().invoke(
        main,
        ["train-from-cache", str(cache.root), "--annotations", str(annotations), "--out", str(tu), "--no-progress"],
    )
    assert result.exit_code == 2 and "not a vtm train output" in result.output and "Traceback" not in result.output
    _untouched(tu, files)


def test_training_with_invalid_annotations_leaves_no_out_folder(tmp_path, cache):
    annotations = tmp_path / "a.jsonl"
    annotations.write_text("not json\n")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        run_train(cache.root, annotations, tmp_path / "run", load_config(), progress=False)
    assert not (tmp_path / "run").exists()
    (tmp_path / "empty").mkdir()  # a folder the user made stays, empty as it was
    with pytest.raises(AnnotationError):
        run_train(cache.root, annotations, tmp_path / "empty", load_config(), progress=False)
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
