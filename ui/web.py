"""`vtm ui`: a web page to analyse one video with a trained checkpoint (Gradio).

    pick a checkpoint (found under --checkpoints; it loads once, and stays loaded) -> upload or pick a
    video -> Analyse: a progress bar while frames are encoded and moments described -> the timeline,
    the triggered frames with their descriptions and objects, the summary (also spoken), the JSON

It is `VideoTriggerModel.analyze` (what `vtm infer` runs) behind a page. One model is held at a time (a
checkpoint with its LLaVA can take GBs) and analyses take turns on it. Errors a person can act on (no
checkpoint, a file that is not a video, a video that is too long, a model that will not load) show as
messages in the page. It listens on 127.0.0.1 unless told otherwise, and uploads have a size limit.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: many archives sit on closed networks

import gradio as gr  # noqa: E402

from vtm.cache.atomic import write_json  # noqa: E402
from vtm.pipeline.checkpoint import META_FILE, CheckpointError, checkpoints_under, decision_threshold  # noqa: E402
from vtm.pipeline.config import Config, ConfigError  # noqa: E402
from vtm.pipeline.discover import VIDEO_EXTENSIONS, discover_videos  # noqa: E402
from vtm.ui.plots import format_mmss, timeline_png  # noqa: E402
from vtm.ui.thumbnails import jpeg_bytes  # noqa: E402

KEEP_ANALYSES = 20  # results kept on disk for download; older ones are deleted
MAX_EXAMPLES = 24
CSS = """
.vtm-headline {font-size: 1.05rem}
footer {display: none !important}
"""


@dataclass(frozen=True)
class UiSettings:
    checkpoints_dir: Path = Path("runs")
    videos_dir: Path | None = None  # videos offered as examples
    # describe: the LLaVA for checkpoints trained without an adapter (model), objects (objects, detector,
    # detector_threshold), device; triggers: how moments are picked
    config: Config = field(default_factory=Config)
    host: str = "127.0.0.1"  # 0.0.0.0 opens the page to the network
    port: int = 7860
    max_upload_mb: int = 500
    max_seconds: float = 1800.0  # longer videos belong in `vtm extract` + `vtm describe`
    work_dir: Path | None = None  # where each analysis's files go (default: a temporary directory)


log = logging.getLogger(__name__)


class PageError(Exception):
    """A problem the person at the page can act on: shown in the page, in words, never as a traceback."""


# --- checkpoints -----------------------------------------------------------------------------------------


def find_checkpoints(root: Path) -> list[tuple[str, str]]:
    """(label, path) of every checkpoint under `root`, newest first; the label says what it was trained on."""
    return scan_checkpoints(root)[0]


def scan_checkpoints(root: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """The checkpoints under `root` (see find_checkpoints), and a note for each folder skipped because its
    meta.json cannot be read: one damaged run must not hide the others."""
    root = Path(root)
    found, skipped = [], []
    for d in checkpoints_under(root):
        problem = _meta_problem(d / META_FILE)
        if problem is not None:
            skipped.append(f"{d.relative_to(root).as_posix()} ({problem})")
            log.warning("checkpoint list: skipped %s: %s", d, problem)
            continue
        found.append((d.stat().st_mtime, d))
    found.sort(key=lambda item: item[0], reverse=True)
    return [(checkpoint_label(d, root), str(d)) for _, d in found], skipped


def _meta_problem(meta: Path) -> str | None:
    """Why a checkpoint's meta.json cannot be used, in words; None when it is a JSON object."""
    try:
        d = json.loads(meta.read_text())
    except OSError as e:
        return f"its meta.json cannot be read: {e.strerror or e}"
    except ValueError as e:  # bad JSON, or bad UTF-8
        return f"its meta.json is not valid JSON: {getattr(e, 'msg', str(e)[:80])}"
    if isinstance(d, dict):
        return None
    kind = {list: "a list", str: "a string", bool: "true or false", type(None): "null"}.get(type(d), "a number")
    return f"its meta.json holds {kind}, not a JSON object"


def checkpoint_label(directory: Path, root: Path) -> str:
    """ "red/final · 24 training videos · epoch 10 · event F1 0.74": the run and its event F1 on held-out videos."""
    name = directory.relative_to(root).as_posix()
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError):
        return f"{name} (unreadable meta.json)"
    if not isinstance(meta, dict):
        return f"{name} (unreadable meta.json)"
    parts = [name]
    if meta.get("train_videos") is not None:
        parts.append(f"{meta['train_videos']} training videos")
    if meta.get("epoch") is not None:
        parts.append(f"epoch {meta['epoch']}")
    metrics = meta.get("metrics")
    f1 = metrics.get("val/event_f1") if isinstance(metrics, dict) else None
    if isinstance(f1, (int, float)) and f1 == f1:  # not NaN
        parts.append(f"event F1 {f1:.2f}")
    return " · ".join(parts)


def trained_on(directory: Path) -> str:
    """ "efficientnet_lite0 features at 3 fps, describes with tiny-llava" from the checkpoint's meta.json."""
    try:
        meta = json.loads((Path(directory) / META_FILE).read_text())
    except (OSError, ValueError):
        return ""
    features = meta.get("features") if isinstance(meta, dict) else None
    if not isinstance(features, dict):
        return ""
    fps = features.get("sample_fps")
    text = (
        f"{features.get('encoder', '?')} features at {fps:g} fps"
        if isinstance(fps, (int, float))
        else f"{features.get('encoder', '?')} features"
    )
    return text + (f", describes with {Path(str(meta['llm'])).name}" if meta.get("llm") else "")


def threshold_slider(checkpoint: str | None):
    """The threshold slider, set to the checkpoint's calibrated decision threshold when it has one."""
    try:
        return gr.Slider(value=decision_threshold(Path(checkpoint))) if checkpoint else gr.Slider()
    except (CheckpointError, KeyError, OSError, ValueError):
        return gr.Slider()


def example_videos(root: Path) -> list:
    """The videos under `root` that can be read (at most MAX_EXAMPLES): examples that fail would only confuse."""
    from vtm.stages.decode import DecodeError, probe

    readable = []
    for video in discover_videos(root):
        try:
            probe(video.path, 1.0)
        except (DecodeError, OSError):
            continue
        readable.append(video)
        if len(readable) == MAX_EXAMPLES:
            break
    return readable


# --- the analysis behind the page ------------------------------------------------------------------------


class Analyser:
    """Holds the loaded checkpoint (one at a time) and runs analyses on it, one at a time."""

    def __init__(self, settings: UiSettings):
        self.settings = settings
        self.work_dir = Path(settings.work_dir or tempfile.mkdtemp(prefix="vtm-ui-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._loaded: tuple[str, object] | None = None  # (checkpoint path, VideoTriggerModel)

    def model(self, checkpoint: str | None, progress=None):
        """The VideoTriggerModel of `checkpoint`, loading it (and dropping the last one) if needed."""
        if not checkpoint:
            raise PageError(
                "No checkpoint chosen. Train one with `vtm train-from-cache` (checkpoints are looked for under "
                f"{self.settings.checkpoints_dir}), then pick it above."
            )
        if self._loaded and self._loaded[0] == checkpoint:
            return self._loaded[1]
        from vtm.models.encoder_weights import EncoderLoadError
        from vtm.models.llava_adapter import LanguageModelLoadError
        from vtm.pipeline.infer import VideoTriggerModel
        from vtm.stages.detect import ObjectDetectorLoadError

        if progress is not None:
            progress(0.0, desc=f"loading {Path(checkpoint).name}")
        self._loaded = None  # let the old model go before the new one takes memory
        s = self.settings
        try:
            model = VideoTriggerModel.from_checkpoint(Path(checkpoint), config=s.config)
        except (
            CheckpointError,
            LanguageModelLoadError,
            EncoderLoadError,
            ObjectDetectorLoadError,
            ConfigError,
            OSError,
        ) as e:
            raise PageError(f"Could not load {checkpoint}: {e}") from None
        self._loaded = (checkpoint, model)
        return model

    def load_status(self, checkpoint: str | None, progress=gr.Progress()) -> str:
        found, skipped = scan_checkpoints(self.settings.checkpoints_dir)
        note = f"\n\n_Skipped: {'; '.join(skipped)}._" if skipped else ""
        if not checkpoint:
            if found:
                return "Pick a checkpoint." + note
            if skipped:
                return f"No usable checkpoints under `{self.settings.checkpoints_dir}`." + note
            return f"No checkpoints under `{self.settings.checkpoints_dir}` yet: train one with `vtm train-from-cache`."
        return self._load_status(checkpoint, progress) + note

    def _load_status(self, checkpoint: str, progress) -> str:
        started = time.perf_counter()
        with self._lock:
            was_loaded = self._loaded is not None and self._loaded[0] == checkpoint
            try:
                model = self.model(checkpoint, progress)
            except PageError as e:
                return f"**Not loaded.** {e}"
        describer = model.describer
        detector = f" · objects: {Path(describer.detector.model).name}" if describer.detector is not None else ""
        how = "ready" if was_loaded else f"loaded in {time.perf_counter() - started:.1f} s"
        warnings = "".join(f"\n\n**Warning:** checkpoint {line}" for line in model.report.lines())
        return (
            f"**Ready:** {Path(checkpoint).parent.name}/{Path(checkpoint).name} {how} on `{model.encoder.device}` · "
            f"trained on {trained_on(checkpoint)} · "
            f"describer {Path(describer.model).name}{' + trained adapter' if describer.adapter else ''}"
            f"{detector}{warnings}"
        )

    def analyse(
        self, checkpoint: str | None, video: str | None, threshold: float, max_moments: int, progress=gr.Progress()
    ):
        """The page's outputs for one video; a problem the person can act on comes back as the headline."""
        try:
            return self._analyse(checkpoint, video, threshold, max_moments, progress)
        except PageError as e:
            gr.Warning(str(e))  # the toast catches the eye; the headline keeps the message
            return (
                f"**Could not analyse.** {e}",
                None,
                gr.Gallery(value=[], visible=False),
                gr.Dataframe(value=None, visible=False),
                "",
                None,
                None,
            )

    def _analyse(self, checkpoint: str | None, video: str | None, threshold: float, max_moments: int, progress):
        from vtm.stages.decode import DecodeError, probe

        if not video:
            raise PageError("No video yet: upload one (or pick an example), then press Analyse.")
        path = Path(video)
        try:
            plan = probe(path, 1.0)
        except DecodeError as e:
            raise PageError(
                f"“{path.name}” could not be read as a video: {e}. Upload a video file (MP4, MOV, MKV, AVI, WebM…)."
            ) from None
        if plan.duration_s > self.settings.max_seconds:
            raise PageError(
                f"“{path.name}” is {format_mmss(plan.duration_s)} long; this page analyses videos up to "
                f"{format_mmss(self.settings.max_seconds)}. "
                "For longer footage use `vtm extract` and `vtm describe`, which work through whole archives."
            )
        with self._lock:
            model = self.model(checkpoint, progress)
            started = time.perf_counter()
            try:
                analysis = model.analyze(
                    path, float(threshold), int(max_moments), progress=lambda f, message: progress(f, desc=message)
                )
            except DecodeError as e:
                raise PageError(f"“{path.name}” could not be decoded: {e}") from None
        progress(0.97, desc="drawing the timeline and speaking the summary")
        return self._outputs(path, analysis, time.perf_counter() - started)

    def _outputs(self, video: Path, analysis, seconds: float):
        from vtm.ui.speech import SpeechError, speak_to_wav

        result = analysis.result
        out = self.work_dir / uuid.uuid4().hex[:12]
        (out / "frames").mkdir(parents=True)
        self._prune()
        result = {
            **result,
            "video_path": video.name,
        }  # the upload's temporary path means nothing to whoever downloads this
        json_path = out / f"{video.stem}.vtm.json"
        write_json(json_path, result)
        triggers = result["triggers"]
        timeline = out / "timeline.png"
        timeline_png(
            timeline,
            analysis.timestamps,
            analysis.scores,
            analysis.threshold,
            [t["timestamp"] for t in triggers],
            [t["trigger_confidence"] for t in triggers],
            title=video.name,
        )
        gallery = []
        for k, (trigger, picture) in enumerate(zip(triggers, analysis.pictures), start=1):
            frame = out / "frames" / f"{k:02d}.jpg"
            frame.write_bytes(jpeg_bytes(picture))
            gallery.append((str(frame), moment_caption(k, trigger)))
        audio = None
        try:
            audio = str(speak_to_wav(result["video_summary"], out / "summary.wav"))
        except SpeechError as e:
            gr.Warning(f"The summary could not be spoken: {e}")
        n, k = result["num_frames_analyzed"], result["num_triggers_detected"]
        duration = float(analysis.timestamps[-1]) if len(analysis.timestamps) else 0.0
        if k:
            headline = (
                f"**{k} moment{'s' if k != 1 else ''}** found in {format_mmss(duration)} of video · {n} frames "
                "scored · "
                f"{k} sent to the describer ({k / max(n, 1):.1%}) · {seconds:.1f} s"
            )
        else:
            headline = (
                f"**No moments** in {format_mmss(duration)} of video ({n} frames scored): nothing reached the "
                "threshold "
                f"({analysis.threshold:.2f}). Lower it to see weaker moments."
            )
        if analysis.warning:
            headline += f"\n\n**Part of this video could not be read:** {analysis.warning}."
        table = [
            [
                i,
                clock(t["timestamp"]),
                f"{t['trigger_confidence']:.2f}",
                t["analysis"],
                objects_text(t.get("objects") or []),
            ]
            for i, t in enumerate(triggers, start=1)
        ]
        # With no moments the gallery and table would be empty boxes: hide them; the headline says why.
        return (
            headline,
            str(timeline),
            gr.Gallery(value=gallery, visible=bool(k)),
            gr.Dataframe(value=table, visible=bool(k)),
            result["video_summary"],
            audio,
            str(json_path),
        )

    def _prune(self) -> None:
        """Keep the files of the last KEEP_ANALYSES analyses: a page left running for weeks must not fill the disk."""
        ours = re.compile(r"^[0-9a-f]{12}$")  # the names _outputs gives: nothing else in work_dir is touched
        runs = sorted(
            (d for d in self.work_dir.iterdir() if d.is_dir() and ours.match(d.name)), key=lambda d: d.stat().st_mtime
        )
        for old in runs[:-KEEP_ANALYSES]:
            shutil.rmtree(old, ignore_errors=True)


def clock(seconds: float) -> str:
    """72.4 -> '1:12.4': a moment's time to the tenth of a second (frames are sampled a few times a second)."""
    minutes, rest = divmod(max(0.0, float(seconds)), 60)
    return f"{int(minutes)}:{rest:04.1f}"


def moment_caption(k: int, trigger: dict) -> str:
    """ "#2 · 0:12.4 · 0.87": short enough to read under a thumbnail; the table beside it has the description."""
    return f"#{k} · {clock(trigger['timestamp'])} · {trigger['trigger_confidence']:.2f}"


def objects_text(objects: list[dict]) -> str:
    """ "person 0.96 ×2, car 0.81": each label once, with its best score and how many were found."""
    best: dict[str, tuple[float, int]] = {}
    for o in objects:
        score, n = best.get(o["label"], (0.0, 0))
        best[o["label"]] = (max(score, o["score"]), n + 1)
    ranked = sorted(best.items(), key=lambda item: -item[1][0])
    return ", ".join(f"{label} {score:.2f}" + (f" ×{n}" if n > 1 else "") for label, (score, n) in ranked)


# --- the page ----------------------------------------------------------------------------------------------


def build_app(settings: UiSettings) -> tuple[gr.Blocks, Analyser]:
    analyser = Analyser(settings)
    # delete_cache: Gradio's copies of uploads and results older than a day go, checked hourly.
    with gr.Blocks(title="vtm — find the moments that matter", delete_cache=(3600, 86400)) as app:
        gr.Markdown(
            "# vtm — find the moments that matter\n"
            "Upload a video: the trigger model scores every sampled frame, picks the moments that stand out, "
            "and only those go to the vision-language model for a description."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                checkpoint = gr.Dropdown(
                    label="Checkpoint",
                    info=f"trained models under {settings.checkpoints_dir}: run · training videos · epoch · "
                    "event F1 on held-out videos",
                    elem_id="checkpoint",
                    interactive=True,
                )
                status = gr.Markdown("Looking for checkpoints…", elem_id="model-status")
                # A file box rather than a player: archives hold formats browsers cannot play (AVI, TS, most MKV),
                # and a player would flag those as errors although vtm reads them.
                video = gr.File(
                    label="Video",
                    file_types=list(VIDEO_EXTENSIONS),
                    file_count="single",
                    type="filepath",
                    elem_id="video",
                )
                examples = example_videos(settings.videos_dir) if settings.videos_dir else []
                if examples:
                    gr.Examples(
                        [[str(v.path)] for v in examples],
                        inputs=[video],
                        label=f"or pick one from {settings.videos_dir}",
                        example_labels=[v.relpath for v in examples],
                        examples_per_page=MAX_EXAMPLES,
                    )
                threshold = gr.Slider(
                    0.0,
                    1.0,
                    value=settings.config.triggers.threshold,
                    step=0.01,
                    label="Trigger threshold",
                    info="a moment's score must reach this (set to the checkpoint's calibrated one)",
                    elem_id="threshold",
                )
                max_moments = gr.Slider(
                    1, 50, value=10, step=1, label="Most moments to describe", info="the strongest are kept"
                )
                analyse = gr.Button("Analyse", variant="primary", elem_id="analyse")
            with gr.Column(scale=3, min_width=420):
                headline = gr.Markdown("Results appear here.", elem_id="headline", elem_classes="vtm-headline")
                # No label or corner buttons on the plot: they would sit on its title and legend.
                timeline = gr.Image(
                    label="Trigger score over time",
                    show_label=False,
                    buttons=[],
                    type="filepath",
                    interactive=False,
                    elem_id="timeline",
                )
                gallery = gr.Gallery(
                    label="Triggered moments",
                    columns=3,
                    object_fit="contain",
                    buttons=["download", "fullscreen"],
                    elem_id="moments",
                )
                moments = gr.Dataframe(
                    headers=["#", "time", "confidence", "description", "objects"],
                    datatype=["number", "str", "str", "str", "str"],
                    label="Moments",
                    interactive=False,
                    wrap=True,
                    elem_id="moments-table",
                    column_widths=["5%", "11%", "14%", "45%", "25%"],
                )
                summary = gr.Textbox(label="Video summary", lines=3, interactive=False, elem_id="summary")
                audio = gr.Audio(
                    label="Spoken summary",
                    type="filepath",
                    interactive=False,
                    buttons=["download"],
                    elem_id="spoken-summary",
                )
                download = gr.File(label="Analysis (JSON)", interactive=False, elem_id="analysis-json")

        def refresh():
            choices = find_checkpoints(settings.checkpoints_dir)
            return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)

        app.load(refresh, outputs=checkpoint).then(threshold_slider, inputs=checkpoint, outputs=threshold).then(
            analyser.load_status, inputs=checkpoint, outputs=status
        )
        checkpoint.input(threshold_slider, inputs=checkpoint, outputs=threshold).then(
            analyser.load_status, inputs=checkpoint, outputs=status
        )
        analyse.click(
            analyser.analyse,
            inputs=[checkpoint, video, threshold, max_moments],
            outputs=[headline, timeline, gallery, moments, summary, audio, download],
            concurrency_id="model",
        )
    return app, analyser


def launch(settings: UiSettings, block: bool = True) -> gr.Blocks:
    """Serve the page; with block=False return once it listens (tests, notebooks)."""
    app, analyser = build_app(settings)
    # no web fonts: works offline
    theme = gr.themes.Soft(
        primary_hue="indigo", font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    app.queue(default_concurrency_limit=1).launch(
        server_name=settings.host,
        server_port=settings.port,
        max_file_size=f"{settings.max_upload_mb}mb",
        allowed_paths=[str(analyser.work_dir)],
        theme=theme,
        css=CSS,
        prevent_thread_lock=True,
        show_error=False,
        quiet=True,  # quiet: Gradio's hints are about sharing links
    )
    if block:
        print(f"vtm ui: open {app.local_url} in a browser (Ctrl-C stops it)", flush=True)
        app.block_thread()
    return app
