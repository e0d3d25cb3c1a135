"""`vtm calibrate`: fit the change score to an annotated archive from its cache, then use the result."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from vtm.cache.store import FeatureCache
from vtm.pipeline.cli import main as cli
from vtm.pipeline.config import Config, load_config
from vtm.pipeline.rescore import scored_with


def test_calibrate_writes_a_config_that_triggers_uses_without_decoding(extracted, ground_truth, tmp_path):
    _, original = extracted
    cache_dir = tmp_path / "cache"
    shutil.copytree(original.root, cache_dir)  # the command re-scores the cache it is given
    lines = [
        json.dumps({"video": path, "start": t, "end": t})
        for path, times in ground_truth["events"].items()
        for t in times
    ]
    lines += [json.dumps({"video": path}) for path, times in ground_truth["events"].items() if not times]
    annotations = tmp_path / "annotations.jsonl"
    annotations.write_text("\n".join(lines) + "\n")
    out = tmp_path / "calibrated.yaml"

    result = CliRunner().invoke(
        cli, ["calibrate", str(cache_dir), "--annotations", str(annotations), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    before, after = (
        float(x.split()[0]) for x in result.output.split("event F1 on the annotated videos: ")[1].split(" before, ")
    )
    assert after >= before
    calibrated = load_config(out)
    assert calibrated.extract == Config().extract  # only the change score and the threshold move

    result = CliRunner().invoke(cli, ["triggers", str(cache_dir), "--config", str(out)])
    assert result.exit_code == 0, result.output
    assert (
        scored_with(FeatureCache.open(cache_dir))["settings"]["feature_scale"] == calibrated.change_score.feature_scale
    )


def test_calibrate_names_a_bad_annotation_line(extracted, tmp_path):
    _, cache = extracted
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"video": "no/such/video.mp4"}\n')
    result = CliRunner().invoke(
        cli, ["calibrate", str(cache.root), "--annotations", str(bad), "--out", str(tmp_path / "c.yaml")]
    )
    assert result.exit_code == 2 and "bad.jsonl:1" in result.output and not (tmp_path / "c.yaml").exists()
