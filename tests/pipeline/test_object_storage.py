"""End to end against a real S3-compatible server on 127.0.0.1 (tests/s3_server.py): `vtm extract s3://...`,
re-runs that skip unchanged objects and pick up changed and new ones, a killed run that resumes, describe
reading key frames from the same URLs, and denied, missing and misspelt locations reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import numpy as np
import opentimelineio as otio
import polars as pl
import pytest
from click.testing import CliRunner

from vtm.cache.store import FeatureCache
from vtm.data.sample_archive import make_archive, make_red_object_archive
from vtm.pipeline.cli import main as cli
from vtm.pipeline.config import load_config
from vtm.pipeline.describe import run_describe
from vtm.pipeline.discover import content_digest
from vtm.pipeline.export import run_export
from vtm.pipeline.extract import run_extract
from vtm.stages.decode import DecodeStage, probe

SMALL = {"describe": {"image_size": 64, "max_new_tokens": 12, "summary": "join"}}


@pytest.fixture(scope="module")
def s3_extracted(s3_server, ray_local, tmp_path_factory):
    """(local copy of the archive, its URL, cache): 3 red-object videos uploaded to s3://vtm-archive/cams, extracted
    from there."""
    root = tmp_path_factory.mktemp("s3")
    videos = make_red_object_archive(root / "videos", 3, seconds=6.0, seed=7)
    s3_server.upload(videos, "vtm-archive", "cams")
    summary = run_extract("s3://vtm-archive/cams", root / "cache", progress=False)
    assert summary.all_ok and summary.ok == 3, summary.failed
    return videos, "s3://vtm-archive/cams", FeatureCache.open(root / "cache")


def test_extract_from_s3_records_where_each_video_is_and_no_credentials(s3_extracted, s3_server):
    videos, url, cache = s3_extracted
    manifest = cache.manifest().sort("path")
    assert manifest["path"].to_list() == [f"red/clip_{i:04d}.mp4" for i in range(3)]
    for row in manifest.iter_rows(named=True):
        local = videos / row["path"]
        assert row["status"] == "ok" and row["url"] == f"{url}/{row['path']}" and row["etag"]
        assert row["size_bytes"] == local.stat().st_size and row["digest"] == content_digest(local)
        plan = probe(local, cache.settings.sample_fps)  # streamed from the store, sampled as from disk
        pts, pts_start = plan.pts_around(plan.frame_index)
        from_disk = DecodeStage(image_size=cache.settings.image_size, nearest_frames=True)(
            {
                "path": str(local),
                "frame_index": plan.frame_index,
                "pts": pts,
                "pts_start": pts_start,
                "rotation": plan.rotation,
                "decoder": "pyav",
            }
        )
        scores = cache.read_scores([row["video_id"]]).sort("sample_index")
        np.testing.assert_allclose(scores["timestamp_s"].to_numpy(), plan.pts[from_disk["frame_index"]])
        assert row["frames_sampled"] == len(plan.frame_index) and row["decoder"] == "pyav"
    found = CliRunner().invoke(cli, ["triggers", str(cache.root), "--json", str(cache.root.parent / "triggers.json")])
    assert found.exit_code == 0, found.output
    assert sorted(json.loads((cache.root.parent / "triggers.json").read_text())) == [
        f"{url}/red/clip_{i:04d}.mp4" for i in range(3)
    ]
    for path in cache.root.rglob("*"):  # the secret is nowhere in the cache, in any file
        if path.is_file():
            data = path.read_bytes()
            assert (
                s3_server.env["AWS_SECRET_ACCESS_KEY"].encode() not in data
                and s3_server.env["AWS_ACCESS_KEY_ID"].encode() not in data
            )


def test_a_rerun_skips_unchanged_objects_and_picks_up_changed_and_new_ones(s3_server, ray_local, tmp_path):
    videos = make_archive(tmp_path / "videos", 2, seconds=2.0, seed=11)
    s3_server.upload(videos, "vtm-changes", "a")
    args = ["extract", "s3://vtm-changes/a/", "--cache", str(tmp_path / "cache"), "--no-progress"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0 and "2 extracted" in first.output, first.output
    before = FeatureCache.open(tmp_path / "cache").manifest().sort("path")

    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "0 extracted, 2 already in the cache" in again.output, again.output

    names = before["path"].to_list()
    other = make_archive(tmp_path / "other", 1, seconds=2.5, seed=12)
    new_video = next(
        p for p in sorted(other.rglob("*")) if p.suffix in (".mp4", ".mkv", ".webm", ".avi", ".mov") and p.is_file()
    )
    client = s3_server.client()
    client.upload_file(str(new_video), "vtm-changes", f"a/{names[0]}")  # replaced under the same key
    client.upload_file(str(new_video), "vtm-changes", "a/new/added.mp4")
    third = CliRunner().invoke(cli, args)
    assert third.exit_code == 0 and "3 videos: 2 extracted, 1 already in the cache" in third.output, third.output
    after = FeatureCache.open(tmp_path / "cache").manifest().sort("path")
    changed = after.filter(pl.col("path") == names[0]).row(0, named=True)
    assert changed["digest"] == content_digest(new_video) != before.filter(pl.col("path") == names[0])["digest"][0]
    assert changed["etag"] != before.filter(pl.col("path") == names[0])["etag"][0]
    assert after.filter(pl.col("path") == "new/added.mp4")["status"].to_list() == ["ok"]


def test_a_denied_object_fails_alone_and_a_bad_bucket_fails_the_run(s3_server, ray_local, tmp_path):
    videos = make_archive(tmp_path / "videos", 2, seconds=2.0, seed=13)
    keys = s3_server.upload(videos, "vtm-denied", "cams")
    denied = next(k for k in keys if not k.endswith(".json"))
    policy = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::vtm-denied/{denied}",
    }
    s3_server.client().put_bucket_policy(
        Bucket="vtm-denied", Policy=json.dumps({"Version": "2012-10-17", "Statement": [policy]})
    )
    res = CliRunner().invoke(
        cli, ["extract", "s3://vtm-denied/cams", "--cache", str(tmp_path / "cache"), "--no-progress"]
    )
    assert res.exit_code == 1, res.output
    assert "2 videos: 1 extracted" in res.output and f"s3://vtm-denied/{denied}: access denied" in res.output
    manifest = FeatureCache.open(tmp_path / "cache").manifest()
    assert sorted(manifest["status"].to_list()) == ["failed", "ok"]

    bad = CliRunner().invoke(
        cli, ["extract", "s3://vtm-no-such-bucket/cams", "--cache", str(tmp_path / "cache2"), "--no-progress"]
    )
    assert bad.exit_code == 2 and "bucket does not exist" in bad.output and not (tmp_path / "cache2").exists(), (
        bad.output
    )


def test_describe_reads_key_frames_from_the_store_and_reports_a_missing_object(
    s3_extracted, s3_server, tiny_llava, tmp_path
):
    videos, url, cache = s3_extracted
    cfg = load_config(None, {"describe": {**SMALL["describe"], "model": str(tiny_llava)}})
    summary = run_describe(cache.root, tmp_path / "out", cfg, progress=False)
    assert summary.all_ok and summary.described == 3 and summary.windows > 0
    for row in cache.manifest().iter_rows(named=True):
        analysis = json.loads((tmp_path / "out" / f"{row['path']}.json").read_text())
        assert analysis["video_path"] == row["url"]
        frames = sorted((tmp_path / "out" / f"{row['path']}.frames").glob("*.jpg"))
        assert len(frames) == len(analysis["triggers"])

    # Results where people use them, cut from the same URLs: a clip opens in PyAV, the timeline points at the object.
    assert run_export(tmp_path / "out", "clips", tmp_path / "clips", progress=False).all_ok
    assert run_export(tmp_path / "out", "otio", progress=False).all_ok
    clip = tmp_path / "clips/red/clip_0000.mp4.clips/01.mp4"
    with av.open(str(clip)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 10
    timeline = otio.adapters.read_from_file(str(tmp_path / "out/red/clip_0000.mp4.otio"))
    assert list(timeline.find_clips())[0].media_reference.target_url == f"{url}/red/clip_0000.mp4"

    s3_server.client().delete_object(Bucket="vtm-archive", Key="cams/red/clip_0001.mp4")
    try:
        again = run_describe(cache.root, tmp_path / "again", cfg, progress=False)
        assert again.described == 2 and [p for p, _ in again.failed] == ["red/clip_0001.mp4"]
        assert "s3://vtm-archive/cams/red/clip_0001.mp4: object not found" in again.failed[0][1]
    finally:
        s3_server.client().upload_file(str(videos / "red/clip_0001.mp4"), "vtm-archive", "cams/red/clip_0001.mp4")


def test_a_killed_extract_from_s3_resumes_and_leaves_no_scratch_files(s3_server, ray_local, tmp_path, power_cut):
    videos = make_archive(tmp_path / "videos", 8, seconds=4.0, seed=14)
    s3_server.upload(videos, "vtm-resume", "x")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    cache = tmp_path / "cache"
    # TMPDIR is where a scratch copy would go; Ray keeps its session files in its usual place.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "TMPDIR": str(scratch), "RAY_TMPDIR": "/tmp"}
    cmd = [
        sys.executable,
        "-m",
        "vtm.pipeline.cli",
        "extract",
        "s3://vtm-resume/x",
        "--cache",
        str(cache),
        "--no-progress",
    ]

    def run() -> subprocess.Popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def recorded() -> int:  # videos the manifest (flushed every few seconds) holds as done
        path = cache / "manifest.parquet"
        return pl.read_parquet(path).filter(pl.col("status") == "ok").height if path.is_file() else 0

    power_cut(run(), lambda: len(list((cache / "scores").glob("*.parquet"))) >= 2)
    assert 2 <= len(list((cache / "scores").glob("*.parquet"))) < 8
    done = recorded()  # what the next run may skip: the manifest is flushed every few seconds
    finish = run()
    out, _ = finish.communicate(timeout=300)
    assert finish.returncode == 0, out
    extracted, skipped = (
        int(out.split(" extracted")[0].split()[-1]),
        int(out.split(" already in the cache")[0].split()[-1]),
    )
    assert skipped == done and extracted + skipped == 8, out
    manifest = FeatureCache.open(cache).manifest()
    assert len(manifest) == 8 and set(manifest["status"]) == {"ok"}
    assert not [p for p in cache.rglob("*") if ".tmp-" in p.name]
    assert [
        p for p in scratch.iterdir() if not p.name.startswith("torchinductor_")
    ] == []  # torch's own compile cache is not ours


def test_infer_analyses_a_video_by_its_url(s3_extracted, adapter_checkpoint, tmp_path):
    videos, url, _ = s3_extracted
    res = CliRunner().invoke(
        cli,
        [
            "infer",
            f"{url}/red/clip_0002.mp4",
            "--checkpoint",
            str(adapter_checkpoint),
            "--output",
            str(tmp_path / "a.json"),
            "--threshold",
            "0.1",
        ],
    )
    assert res.exit_code == 0, res.output
    analysis = json.loads((tmp_path / "a.json").read_text())
    assert analysis["video_path"] == f"{url}/red/clip_0002.mp4"
    assert analysis["num_frames_analyzed"] == len(probe(videos / "red/clip_0002.mp4", 3.0).frame_index)
    missing = CliRunner().invoke(
        cli,
        ["infer", f"{url}/red/nope.mp4", "--checkpoint", str(adapter_checkpoint), "--output", str(tmp_path / "b.json")],
    )
    assert missing.exit_code == 1 and "object not found" in missing.output, missing.output
