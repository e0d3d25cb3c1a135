"""`vtm report`: the HTML page of a describe output dir, built here by hand in the describe format."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from vtm.ui.plots import timeline_png
from vtm.ui.report import ReportError, write_report


class _Page(HTMLParser):
    """The media sources and the visible text of a page."""

    def __init__(self):
        super().__init__()
        self.sources: list[tuple[str, str]] = []
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag in ("img", "audio", "source") and attrs.get("src"):
            self.sources.append((tag, attrs["src"]))

    def handle_data(self, data):
        self.text.append(data)


def _analysis(video_path: str, triggers: list[dict], summary: str) -> dict:
    return {
        "video_path": video_path,
        "num_frames_analyzed": 40,
        "num_triggers_detected": len(triggers),
        "triggers": triggers,
        "video_summary": summary,
    }


def _describe_output(out: Path) -> Path:
    """Two ok videos in `clips/` (one with audio and objects) and one failed video."""
    (out / "clips").mkdir(parents=True)
    t = np.arange(40) * 0.5
    a_triggers = [
        {
            "timestamp": 12.3,
            "frame_index": 24,
            "trigger_confidence": 0.87,
            "analysis": "A red ball rolls in.",
            "objects": [
                {"label": "ball", "score": 0.91, "box": [1, 2, 3, 4]},
                {"label": "person", "score": 0.55, "box": [0, 0, 5, 5]},
            ],
        },
        {
            "timestamp": 3.0,
            "frame_index": 6,
            "trigger_confidence": 0.62,
            "analysis": "Evil <script>alert(1)</script> text.",
        },
    ]
    (out / "clips/a.mp4.json").write_text(json.dumps(_analysis("/data/clips/a.mp4", a_triggers, "Two things happen.")))
    (out / "clips/b video.mp4.json").write_text(
        json.dumps(_analysis("/data/clips/b video.mp4", [], "Nothing happens."))
    )
    timeline_png(
        out / "clips/a.mp4.timeline.png", t, 0.3 + 0.2 * np.sin(t), 0.5, [12.3, 3.0], [0.87, 0.62], title="clips/a.mp4"
    )
    timeline_png(out / "clips/b video.mp4.timeline.png", t, np.zeros(len(t)), 0.5, [], [])
    (out / "clips/a.mp4.frames").mkdir()
    for k, color in ((1, "red"), (2, "blue")):
        Image.new("RGB", (32, 18), color).save(out / f"clips/a.mp4.frames/{k:02d}.jpg", quality=80)
    (out / "clips/a.mp4.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVE")
    manifest = {
        "videos": {
            "id-a": {
                "path": "clips/a.mp4",
                "status": "ok",
                "error": None,
                "fingerprint": "f1",
                "json": "clips/a.mp4.json",
                "vtt": "clips/a.mp4.vtt",
                "triggers": 2,
                "timeline": "clips/a.mp4.timeline.png",
                "frames": ["clips/a.mp4.frames/01.jpg", "clips/a.mp4.frames/02.jpg"],
                "audio": "clips/a.mp4.wav",
            },
            "id-b": {
                "path": "clips/b video.mp4",
                "status": "ok",
                "error": None,
                "fingerprint": "f2",
                "json": "clips/b video.mp4.json",
                "vtt": "clips/b video.mp4.vtt",
                "triggers": 0,
                "timeline": "clips/b video.mp4.timeline.png",
                "audio": "clips/b video.mp4.wav",
            },  # listed but not on disk: left out of the page
            "id-c": {
                "path": "clips/broken.mp4",
                "status": "failed",
                "error": "decode failed: moov atom not found",
                "fingerprint": "f3",
                "vtt": None,
                "triggers": 0,
            },
        },
        "last_run": {
            "complete": True,
            "videos": 3,
            "described": 2,
            "skipped": 0,
            "failed": 1,
            "frames_sampled": 2000,
            "frames_to_vlm": 36,
            "vlm_share": 0.018,
            "windows": 36,
            "vlm_seconds": 12.5,
            "seconds": 40.0,
            "windows_per_s": 0.9,
            "model": "llava-hf/llava-1.5-7b-hf",
            "adapter": True,
        },
    }
    (out / "describe_manifest.json").write_text(json.dumps(manifest))
    return out


def test_report_page(tmp_path):
    out = _describe_output(tmp_path / "described")
    report = write_report(out)
    assert report == out / "report.html"
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    html = report.read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    text = " ".join(" ".join(page.text).split())

    assert "script" not in page.tags  # the description's <script> is text, not markup
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Evil <script>alert(1)</script> text." in text

    for _tag, src in page.sources:
        assert not src.startswith(("/", "data:", "http")), src
        assert (out / unquote(src)).is_file(), src
    sources = {unquote(src) for _tag, src in page.sources}
    assert {
        "clips/a.mp4.timeline.png",
        "clips/b video.mp4.timeline.png",
        "clips/a.mp4.frames/01.jpg",
        "clips/a.mp4.frames/02.jpg",
        "clips/a.mp4.wav",
    } == sources
    assert ("audio", "clips/a.mp4.wav") in page.sources

    assert "A red ball rolls in." in text and "Two things happen." in text and "Nothing happens." in text
    assert "ball 0.91" in text and "person 0.55" in text
    assert "decode failed: moov atom not found" in text and "clips/broken.mp4" in text
    # Over the described videos on disk (2 triggers in 2 x 40 frames), not last_run's own counts (a re-run
    # that skipped videos counts only what it described).
    assert "2.5 % of sampled frames went to the vision-language model" in text and "1.8 %" not in text
    assert "llava-hf/llava-1.5-7b-hf" in text
    assert "2 triggers" in text and "no moment reached the threshold" in text and "vtm cache info" in text
    # cards are numbered in time order, like the timeline, and get the frames (listed in time order) in turn
    assert "#1 · 3.0 s · confidence 0.62" in text and "#2 · 12.3 s · confidence 0.87" in text
    assert (
        html.index("a.mp4.frames/01.jpg")
        < html.index("#1 · 3.0 s")
        < html.index("a.mp4.frames/02.jpg")
        < html.index("#2 · 12.3 s")
    )
    # videos sorted by path: a before b
    assert html.index("A red ball rolls in.") < html.index("Nothing happens.")


def test_missing_optional_files_are_left_out(tmp_path):
    out = _describe_output(tmp_path / "described")
    (out / "clips/a.mp4.timeline.png").unlink()
    (out / "clips/a.mp4.frames/02.jpg").unlink()
    (out / "clips/b video.mp4.json").unlink()
    page = _Page()
    page.feed(write_report(out).read_text(encoding="utf-8"))
    for _tag, src in page.sources:
        assert (out / unquote(src)).is_file(), src
    assert "A red ball rolls in." in " ".join(page.text)


def test_missing_or_broken_manifest_raises(tmp_path):
    with pytest.raises(ReportError, match="vtm describe"):
        write_report(tmp_path)
    (tmp_path / "describe_manifest.json").write_text("{not json")
    with pytest.raises(ReportError, match="vtm describe"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()
