"""`vtm export` over a real describe run: every format opened by the library that reads it (PyAV for clips
and WebVTT, opentimelineio for OTIO and, through its CMX 3600 adapter, for EDL), times within one frame."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import opentimelineio as otio
import pytest
from click.testing import CliRunner

from vtm.pipeline.cli import main as cli
from vtm.pipeline.config import load_config
from vtm.pipeline.describe import run_describe
from vtm.pipeline.export import ExportError, run_export

FPS = 25  # the red-object archive's frame rate
FRAME = 1 / FPS


@pytest.fixture(scope="module")
def described(red_cache, tiny_llava, tmp_path_factory) -> Path:
    _, cache = red_cache
    out = tmp_path_factory.mktemp("export") / "out"
    cfg = load_config(
        None, {"describe": {"image_size": 64, "max_new_tokens": 12, "summary": "join", "model": str(tiny_llava)}}
    )
    assert run_describe(cache, out, cfg, progress=False).all_ok
    return out


def _vtt_cues(path: Path) -> list[tuple[float, float, str]]:
    """(start, end, text) of each cue, read by FFmpeg's WebVTT demuxer through PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[0]
        return [
            (float(p.pts * stream.time_base), float((p.pts + p.duration) * stream.time_base), bytes(p).decode())
            for p in container.demux(stream)
            if p.size
        ]


def _moments(out: Path) -> dict[str, list[dict]]:
    """What describe wrote, read independently of the exporter: the subtitles' cues and the JSON's triggers."""
    found = {}
    for entry in json.loads((out / "describe_manifest.json").read_text())["videos"].values():
        analysis = json.loads((out / entry["json"]).read_text())
        cues = _vtt_cues(out / entry["vtt"])
        found[entry["path"]] = [
            {
                "start": s,
                "end": e,
                "trigger": t["timestamp"],
                "description": t["analysis"],
                "source": analysis["video_path"],
            }
            for (s, e, _), t in zip(cues, analysis["triggers"], strict=True)
        ]
    assert sum(map(len, found.values())) >= 5
    return found


def test_csv_has_one_row_per_moment(described):
    res = CliRunner().invoke(cli, ["export", str(described), "--format", "csv", "--no-progress"])
    assert res.exit_code == 0, res.output
    with open(described / "moments.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    expected = [(v, m) for v, ms in sorted(_moments(described).items()) for m in ms]
    assert len(rows) == len(expected)
    assert list(rows[0]) == ["video", "start", "end", "trigger", "score", "description", "objects", "source"]
    for row, (video, m) in zip(rows, expected):
        assert row["video"] == video and row["description"] == m["description"]
        assert float(row["start"]) == pytest.approx(m["start"], abs=0.002) and float(row["end"]) == pytest.approx(
            m["end"], abs=0.002
        )
        assert float(row["start"]) <= float(row["trigger"]) < float(row["end"]) and 0 <= float(row["score"]) <= 1


def test_chapters_open_as_webvtt_beside_the_subtitles(described):
    summary = run_export(described, "chapters", progress=False)
    assert summary.all_ok
    for video, ms in _moments(described).items():
        cues = _vtt_cues(described / f"{video}.chapters.vtt")
        assert [t for s, e, _ in cues for t in (s, e)] == pytest.approx(
            [t for m in ms for t in (m["start"], m["end"])], abs=0.002
        )
        assert all(text.startswith(f"{k + 1}. ") for k, (_, _, text) in enumerate(cues))


def _check_timeline(timeline, ms: list[dict], rate: float) -> None:
    clips = list(timeline.find_clips())
    assert len(clips) == len(ms)
    for clip, m in zip(clips, ms):
        r = clip.source_range
        assert r.start_time.to_seconds() == pytest.approx(m["start"], abs=1 / rate)
        assert r.end_time_exclusive().to_seconds() == pytest.approx(m["end"], abs=1 / rate)
        markers = list(clip.markers)
        assert len(markers) == 1
        assert " ".join(m["description"].split()) in (markers[0].comment or markers[0].name)


def test_otio_timeline_opens_in_opentimelineio(described):
    assert run_export(described, "otio", progress=False).all_ok
    for video, ms in _moments(described).items():
        timeline = otio.adapters.read_from_file(str(described / f"{video}.otio"))
        _check_timeline(timeline, ms, FPS)
        clips = list(timeline.find_clips())
        assert clips[0].media_reference.target_url == Path(ms[0]["source"]).as_uri()
        for clip, m in zip(clips, ms):  # the marker sits at the trigger, in the source's time
            assert clip.markers[0].marked_range.start_time.to_seconds() == pytest.approx(m["trigger"], abs=FRAME)
            assert clip.metadata["vtm"]["description"] == m["description"]


def test_edl_round_trips_through_a_cmx_3600_reader(described):
    assert run_export(described, "edl", progress=False).all_ok
    for video, ms in _moments(described).items():
        text = (described / f"{video}.edl").read_text()
        assert text.startswith("TITLE: ") and "FCM: NON-DROP FRAME" in text
        timeline = otio.adapters.read_from_file(str(described / f"{video}.edl"), adapter_name="cmx_3600", rate=FPS)
        _check_timeline(timeline, ms, FPS)
        record = 0.0  # events sit one after another on the record side
        for clip in timeline.find_clips():
            assert timeline.tracks[0].range_of_child(clip).start_time.to_seconds() == pytest.approx(record, abs=FRAME)
            record += clip.source_range.duration.to_seconds()


def _frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(float(f.pts * stream.time_base) for f in container.decode(stream))


@pytest.mark.parametrize("exact", [False, True], ids=["stream-copy", "exact"])
def test_clips_open_in_pyav_and_cover_their_moment(described, tmp_path, exact):
    args = ["export", str(described), "--format", "clips", "--to", str(tmp_path), "--no-progress"] + (
        ["--exact"] if exact else []
    )
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    for video, ms in _moments(described).items():
        for k, m in enumerate(ms, start=1):
            sidecar = json.loads((tmp_path / f"{video}.clips" / f"{k:02d}.json").read_text())
            assert sidecar["description"] == m["description"] and sidecar["start"] == pytest.approx(
                m["start"], abs=0.002
            )
            times = _frame_times(tmp_path / f"{video}.clips" / sidecar["clip"])
            first, last = sidecar["clip_start"] + times[0], sidecar["clip_start"] + times[-1]
            assert times[0] == pytest.approx(0, abs=FRAME / 2)  # every clip starts at 0
            if exact:  # the exact window: from the frame on screen at the start to the last one before the end
                assert first == pytest.approx(m["start"], abs=FRAME) and last == pytest.approx(
                    m["end"] - FRAME, abs=FRAME
                )
                assert len(times) == pytest.approx((m["end"] - m["start"]) * FPS, abs=1)
            else:  # from the keyframe at or before the start, through the end
                assert first <= m["start"] + FRAME and last >= m["end"] - 2 * FRAME
                assert sidecar["moment_offset_in_clip"] == pytest.approx(m["start"] - sidecar["clip_start"], abs=0.002)


def test_bad_requests_say_what_to_do(described, tmp_path):
    with pytest.raises(ExportError, match="not the output of a describe run"):
        run_export(tmp_path, "csv")
    with pytest.raises(ExportError, match="--exact applies to --format clips"):
        run_export(described, "edl", exact=True)
    res = CliRunner().invoke(cli, ["export", str(described), "--format", "pdf"])
    assert res.exit_code == 2 and "pdf" in res.output
