"""`vtm ui` in a real headless Chromium (Playwright): upload a generated video, analyse it with tiny offline
models (LLaVA with a trained adapter, DETR), and check what a person sees. The analysed page's screenshot
is saved to test-artifacts/ at the repository root."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from vtm.models.tiny import TINY_DETR_LABELS, make_tiny_detr
from vtm.pipeline.config import Config, load_config
from vtm.ui.web import (
    Analyser,
    UiSettings,
    checkpoint_label,
    example_videos,
    find_checkpoints,
    launch,
    moment_caption,
    objects_text,
    trained_on,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ANALYSIS_TIMEOUT_MS = 240_000  # a tiny model on 2 CPU cores; the first analysis also loads it


@pytest.fixture(scope="module")
def tiny_detr(tmp_path_factory) -> str:
    return str(make_tiny_detr(tmp_path_factory.mktemp("detr") / "detr"))


@pytest.fixture(scope="module")
def settings(adapter_checkpoint, tiny_detr, tmp_path_factory) -> UiSettings:
    # threshold 0: a random DETR's scores are low, and the page should show boxes.
    config = load_config(
        None, {"describe": {"objects": True, "detector": tiny_detr, "detector_threshold": 0.0, "device": "cpu"}}
    )
    return UiSettings(
        checkpoints_dir=adapter_checkpoint.parents[1],
        config=config,
        max_upload_mb=2,
        work_dir=tmp_path_factory.mktemp("ui"),
    )


@pytest.fixture(scope="module")
def server(settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = launch(dataclasses.replace(settings, port=port), block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail("the web UI tests need Chromium: `make browser` (or `apt-get install -y chromium`) installs it")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-extensions",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.goto(server)
    yield page
    context.close()


def _ready(page) -> None:
    """Wait until the page found the checkpoint and loaded it."""
    page.locator("#model-status").get_by_text("Ready:").wait_for(timeout=ANALYSIS_TIMEOUT_MS)


def test_analysing_an_uploaded_video_shows_every_result(page, red_cache):
    videos, _ = red_cache
    video = sorted(videos.rglob("*.mp4"))[0]
    _ready(page)
    assert "training videos" in page.locator("#checkpoint input").input_value()
    assert "trained on efficientnet_lite0" in page.locator("#model-status").inner_text()
    page.locator("#video input[type=file]").set_input_files(str(video))
    page.locator("#video").get_by_text(video.name).wait_for(timeout=30_000)  # the upload is in
    # The slider starts at the checkpoint's calibrated threshold; this few-epoch test checkpoint scores
    # low, and the page's mechanics, not the model, are under test here.
    threshold = page.locator("#threshold input[type=number]")
    threshold.fill("0.05")
    threshold.press("Enter")
    page.locator("#analyse").click()
    page.locator(".progress-level, .progress-bar, .progress-text").first.wait_for(
        state="attached", timeout=20_000
    )  # it shows it is working

    gallery = page.locator("#moments img")
    gallery.first.wait_for(timeout=ANALYSIS_TIMEOUT_MS)
    assert "moment" in page.locator("#headline").inner_text()
    assert page.locator("#timeline img").get_attribute("src")
    summary = page.locator("#summary textarea").input_value()
    assert summary.strip()
    page.locator("#spoken-summary audio, #spoken-summary [data-testid='waveform-Spoken summary']").first.wait_for(
        state="attached", timeout=30_000
    )

    link = page.locator("#analysis-json a").first
    with page.expect_download() as download:
        link.click()
    result = json.loads(Path(download.value.path()).read_text())
    assert result["num_triggers_detected"] == gallery.count() >= 1
    assert result["video_summary"] == summary
    for trigger in result["triggers"]:
        assert trigger["objects"], "threshold 0 keeps every DETR query"
        assert {o["label"] for o in trigger["objects"]} <= set(TINY_DETR_LABELS.values())
        x0, y0, x1, y1 = trigger["objects"][0]["box"]
        assert 0 <= x0 <= x1 <= 640 and 0 <= y0 <= y1 <= 640  # in the source video's pixels

    table = page.locator("#moments-table").inner_text()
    assert "confidence" in table and result["triggers"][0]["objects"][0]["label"] in table
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-analysed.png"), full_page=True)
    gallery.first.click()  # a moment enlarged, with its caption: number, time, confidence
    first = result["triggers"][0]
    assert moment_caption(1, first) in page.locator("#moments").inner_text()


def test_a_file_that_is_not_a_video_gets_a_clear_message(page, tmp_path):
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is a shopping list, not a video\n" * 50)
    _ready(page)
    page.locator("#video input[type=file]").set_input_files(str(fake))
    page.locator("#video").get_by_text("holiday.mp4").wait_for(timeout=30_000)
    page.locator("#analyse").click()
    headline = page.locator("#headline").get_by_text("could not be read as a video")
    headline.wait_for(timeout=60_000)
    assert "Could not analyse" in headline.inner_text() and "holiday.mp4" in headline.inner_text()
    assert "Traceback" not in page.content()
    assert page.locator("#moments img").count() == 0


def test_uploads_over_the_size_limit_are_refused(server):
    import httpx

    small = httpx.post(f"{server}gradio_api/upload", files={"files": ("small.mp4", b"x" * 1000)})
    assert small.status_code == 200
    big = httpx.post(f"{server}gradio_api/upload", files={"files": ("big.mp4", b"x" * 3_000_000)})
    assert big.status_code == 413 and "File size exceeded" in big.text


# --- without a browser: the pieces the page is made of --------------------------------------------------


def test_checkpoints_are_found_and_labelled_with_what_they_were_trained_on(adapter_checkpoint, tmp_path):
    found = find_checkpoints(adapter_checkpoint.parents[1])
    assert str(adapter_checkpoint) in [path for _, path in found]
    label = {path: text for text, path in found}[str(adapter_checkpoint)]
    best_epoch = json.loads((adapter_checkpoint / "meta.json").read_text())["epoch"]
    assert label.startswith("exp/final · ") and "training videos" in label and f"epoch {best_epoch} " in label
    assert trained_on(adapter_checkpoint) == "efficientnet_lite0 features at 3 fps, describes with tiny-llava"
    assert find_checkpoints(tmp_path / "nothing-here") == []
    broken = tmp_path / "runs" / "broken"
    broken.mkdir(parents=True)
    (broken / "meta.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"")
    assert "unreadable" in checkpoint_label(broken, tmp_path / "runs")


def test_the_page_says_what_to_do_without_a_checkpoint_or_with_a_too_long_video(
    red_cache, adapter_checkpoint, tmp_path
):
    videos, _ = red_cache
    video = str(sorted(videos.rglob("*.mp4"))[0])
    empty = Analyser(UiSettings(checkpoints_dir=tmp_path / "runs", work_dir=tmp_path / "ui"))
    assert "train one with `vtm train-from-cache`" in empty.load_status(None)
    assert "No checkpoint chosen" in empty.analyse(None, video, 0.5, 5)[0]
    short = Analyser(
        UiSettings(checkpoints_dir=adapter_checkpoint.parents[1], max_seconds=5.0, work_dir=tmp_path / "ui")
    )
    headline, timeline, gallery, *_ = short.analyse(str(adapter_checkpoint), video, 0.5, 5)
    assert headline.startswith("**Could not analyse.**") and "up to 0:05" in headline and "vtm extract" in headline
    assert timeline is None and gallery.visible is False
    assert "No video yet" in short.analyse(str(adapter_checkpoint), None, 0.5, 5)[0]
    assert "Not loaded" in short.load_status(str(tmp_path / "no-such-checkpoint"))

    nothing = Analyser(
        UiSettings(
            checkpoints_dir=adapter_checkpoint.parents[1],
            config=load_config(None, {"describe": {"device": "cpu"}}),
            work_dir=tmp_path / "ui",
        )
    )
    headline, timeline, gallery, table, summary, audio, download = nothing.analyse(
        str(adapter_checkpoint), video, 1.0, 5
    )
    assert headline.startswith("**No moments**") and "Lower it" in headline
    assert gallery.visible is False and table.visible is False  # no empty boxes
    assert Path(timeline).is_file() and Path(download).is_file() and summary.startswith("No triggers detected")


def test_examples_are_the_readable_videos_only(tmp_path):
    from vtm.data.sample_archive import make_sample_dataset

    root = make_sample_dataset(tmp_path / "videos")
    examples = example_videos(root)
    assert examples and all(v.path.is_file() for v in examples)
    assert not any("broken" in v.relpath for v in examples)  # the sample's deliberately broken files
    assert [v.relpath for v in examples] == sorted(v.relpath for v in examples)


def test_only_the_last_analyses_are_kept_on_disk(tmp_path, monkeypatch):
    import vtm.ui.web as ui

    monkeypatch.setattr(ui, "KEEP_ANALYSES", 3)
    analyser = Analyser(UiSettings(work_dir=tmp_path))
    (tmp_path / "my-notes").mkdir()  # not one of the page's result folders: never deleted
    os.utime(tmp_path / "my-notes", (0, 0))
    for k in range(5):
        (tmp_path / f"{k:012x}").mkdir()
        os.utime(tmp_path / f"{k:012x}", (k + 1, k + 1))
    analyser._prune()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000000002", "000000000003", "000000000004", "my-notes"]


def test_captions_and_object_lists_are_short():
    trigger = {
        "timestamp": 72.4,
        "trigger_confidence": 0.8712,
        "analysis": "a red car enters",
        "objects": [{"label": "car", "score": 0.93, "box": [0, 0, 1, 1]}],
    }
    assert moment_caption(2, trigger) == "#2 · 1:12.4 · 0.87"
    many = [{"label": "dog", "score": 0.5}, {"label": "person", "score": 0.9}, {"label": "dog", "score": 0.7}]
    assert objects_text(many) == "person 0.90, dog 0.70 ×2"


def test_a_port_in_use_gets_a_clear_message(tmp_path):
    from click.testing import CliRunner

    from vtm.pipeline.cli import main as cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = CliRunner().invoke(cli, ["ui", "--checkpoints", str(tmp_path), "--port", str(port)])
    assert res.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in res.output and "--port" in res.output


def test_ui_listens_on_localhost_by_default():
    import click

    from vtm.pipeline.cli import ui, ui_settings

    # No flag given: UiSettings decides, and it listens on this machine only.
    assert next(p for p in ui.params if p.name == "host").default in (None, click.core.UNSET)
    assert ui_settings(None, checkpoints_dir=Path("runs"), host=None).host == "127.0.0.1"
    assert os.environ.get("GRADIO_ANALYTICS_ENABLED") == "False"


def test_ui_settings_come_from_the_config_and_the_flags_override_them(tmp_path):
    from vtm.pipeline.cli import ui_settings

    config = tmp_path / "ui.yaml"
    config.write_text(
        "describe: {model: my/llava, objects: true, detector: my/detr, detector_threshold: 0.4, device: cpu}\n"
        "triggers: {threshold: 0.6}\n"
    )
    settings = ui_settings(config, detector_threshold=0.9, port=8000, max_minutes=2.0)
    d = settings.config.describe
    assert (d.model, d.objects, d.detector, d.device) == ("my/llava", True, "my/detr", "cpu")
    assert d.detector_threshold == 0.9 and settings.config.triggers.threshold == 0.6
    assert settings.port == 8000 and settings.max_seconds == 120.0
    assert (settings.host, settings.checkpoints_dir, settings.max_upload_mb) == (
        UiSettings.host,
        UiSettings.checkpoints_dir,
        UiSettings.max_upload_mb,
    )
    plain = ui_settings(None, detector="other/detr")  # --detector alone turns objects on, at the default threshold
    assert plain.config.describe.objects and plain.config.describe.detector == "other/detr"
    assert plain.config.describe.detector_threshold == Config().describe.detector_threshold
