"""The `vtm` command line: each command turns flags into a config and calls one library function."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

import click
import polars as pl
import yaml

from vtm.cache import schema
from vtm.cache.atomic import write_json
from vtm.cache.lock import LockError
from vtm.cache.output_dir import OutputDirError
from vtm.cache.storage import StorageError, is_url
from vtm.cache.store import CacheError, FeatureCache
from vtm.models.encoder_weights import EncoderLoadError
from vtm.pipeline.checkpoint import CheckpointError
from vtm.pipeline.config import ConfigError, load_config
from vtm.pipeline.disk_errors import explain_os_error

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML config (see pipeline/default_config.yaml); flags override it.",
)


def _local_or_url(directory: bool):
    """A click argument callback: an object-storage URL as given, else an existing local directory (or file), a Path."""

    def check(ctx, param, value):
        if is_url(value):
            return value
        return click.Path(exists=True, file_okay=not directory, dir_okay=directory, path_type=Path).convert(
            value, param, ctx
        )

    return check


def _fail(message: str, code: int = 2):
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool) -> None:
    """vtm — find the moments that matter in video archives."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@main.command()
@click.argument("dataset_dir", callback=_local_or_url(directory=True))
@click.option(
    "--cache",
    "cache_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Feature cache directory (created if missing).",
)
@click.option("--fps", type=float, help="Frames sampled per second of video [3].")
@click.option(
    "--encoder", help="resnet18 | resnet50 | efficientnet_b0 | efficientnet_lite0 | Hugging Face model path or id."
)
@click.option("--weights", help="Local weights file (.pth or .safetensors) for a torchvision/timm encoder.")
@click.option("--max-frames", type=int, help="Cap on sampled frames per video.")
@click.option("--device", help="auto | cpu | cuda.")
@click.option("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray).")
@click.option(
    "--rebuild", is_flag=True, default=None, help="Delete what the cache holds and start over (for other settings)."
)
@click.option(
    "--trigger-checkpoint",
    type=click.Path(exists=True, file_okay=False),
    help="A trained checkpoint: store its learned trigger score too.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@CONFIG_OPTION
def extract(
    dataset_dir,
    cache_dir,
    fps,
    encoder,
    weights,
    max_frames,
    device,
    address,
    rebuild,
    trigger_checkpoint,
    no_progress,
    config_path,
):
    """Decode, encode and score every video under DATASET_DIR into the feature cache.

    DATASET_DIR is a local directory or an object-storage prefix (s3://bucket/prefix, gs://..., az://...,
    any fsspec URL) read with the credentials the store's SDK finds (environment, profile, instance role).
    """
    from vtm.pipeline.extract import run_extract

    cfg = None
    try:
        cfg = load_config(
            config_path,
            {
                "extract": {
                    "fps": fps,
                    "encoder": encoder,
                    "weights": weights,
                    "max_frames": max_frames,
                    "device": device,
                    "rebuild": rebuild,
                    "trigger_checkpoint": trigger_checkpoint,
                },
                "ray": {"address": address},
            },
        )
        summary = run_extract(dataset_dir, cache_dir, cfg, progress=not no_progress)
    except (ConfigError, CacheError, EncoderLoadError, CheckpointError, StorageError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(explain_os_error(e), code=1)
    except KeyboardInterrupt:
        if not (cache_dir / schema.CACHE_JSON).is_file():
            _fail(f"interrupted before any video was finished: nothing kept in {cache_dir}", code=130)
        again = "the same command without --rebuild" if cfg and cfg.extract.rebuild else "the same command"
        _fail(f"interrupted: the videos finished so far are kept in {cache_dir}; {again} goes on from there", code=130)
    click.echo(
        f"{summary.videos} videos: {summary.ok} extracted, {summary.skipped} already in the cache, "
        f"{len(summary.failed)} failed; {summary.frames} frames in {summary.seconds:.1f} s "
        f"({summary.frames / max(summary.seconds, 1e-9):.1f} frames/s) -> {summary.cache_dir}"
    )
    if summary.gone:
        which = "cached video whose source is gone" if summary.gone == 1 else "cached videos whose sources are gone"
        click.echo(
            f"note: {summary.gone} {which} from {dataset_dir}, kept in the cache (their features stay usable; `vtm "
            "cache info` lists them)"
        )
    if not summary.pretrained:
        click.secho(
            "warning: the encoder had no pretrained weights; features come from random weights (pass --weights).",
            fg="yellow",
            err=True,
        )
    for path, warning in summary.warnings:
        click.secho(f"  warning: {path}: {warning}", fg="yellow", err=True)
    for path, reason in summary.failed:
        click.secho(f"  failed: {path}: {reason}", fg="red", err=True)
    sys.exit(0 if summary.all_ok else 1)


@main.command()
@click.argument("cache_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--threshold",
    type=float,
    help="Score a trigger must reach (0..1) [with --checkpoint: its calibrated threshold, else triggers.threshold].",
)
@click.option(
    "--min-gap", "min_gap_s", type=float, help="Seconds between two triggers; nearer peaks merge into the strongest."
)
@click.option("--max-triggers", type=int, help="At most this many triggers per video (the strongest).")
@click.option(
    "--score",
    type=click.Choice(["auto", "change", "learned"]),
    default="auto",
    show_default=True,
    help="Which score to pick from.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write {video_path: [seconds, ...]} here.",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Re-score the cache with this trained trigger model (no decoding).",
)
@click.option("--strict", is_flag=True, help="Refuse a checkpoint trained on other features.")
@CONFIG_OPTION
def triggers(cache_dir, threshold, min_gap_s, max_triggers, score, json_out, checkpoint, strict, config_path):
    """Print the trigger moments found in each video of a cache."""
    from vtm.pipeline.checkpoint import load_trigger_model
    from vtm.pipeline.rescore import ensure_change_scores
    from vtm.pipeline.triggers import find_triggers, learned_scores, trigger_times

    try:
        threshold = _threshold(threshold, checkpoint, config_path)
        cfg = load_config(
            config_path, {"triggers": {"threshold": threshold, "min_gap_s": min_gap_s, "max_triggers": max_triggers}}
        )
        cache = FeatureCache.open(cache_dir)
        ensure_change_scores(cache, cfg.change_score, progress=True)  # an older cache, or other change_score settings
        learned = None
        if checkpoint is not None:
            model, _, report = load_trigger_model(checkpoint, cache.settings, strict=strict)
            _warn_report(report)
            learned = learned_scores(cache, model)
        found = find_triggers(cache, cfg.triggers, score, learned)
    except (ConfigError, CacheError, CheckpointError, ValueError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(explain_os_error(e), code=1)
    width = max([len(p) for p in found] + [5])
    click.echo(f"{'video':<{width}}  triggers (seconds, score)")
    for path, ts in found.items():
        moments = ", ".join(f"{t['time']:.1f}s ({t['score']:.2f})" for t in ts) or "-"
        click.echo(f"{path:<{width}}  {moments}")
    click.echo(f"{sum(map(len, found.values()))} triggers in {len(found)} videos (threshold {cfg.triggers.threshold})")
    if json_out:
        write_json(json_out, trigger_times(found, cache.dataset_root))
        click.echo(f"wrote {json_out}")


def _threshold(flag: float | None, checkpoint: Path | None, config_path: Path | None) -> float | None:
    """The trigger threshold to use: the flag, else the config file's, else the checkpoint's calibrated one (None: the
    default)."""
    if flag is not None or checkpoint is None:
        return flag
    if config_path is not None and "threshold" in (
        (yaml.safe_load(config_path.read_text()) or {}).get("triggers") or {}
    ):
        return None
    from vtm.pipeline.checkpoint import decision_threshold

    return decision_threshold(checkpoint)


def _warn_report(report) -> None:
    for line in report.lines():
        click.secho(f"warning: checkpoint {line}", fg="yellow", err=True)


@main.command()
@click.argument("cache_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--annotations",
    "annotations_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Events of some videos (JSONL, as for training).",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file to write (YAML): pass it to vtm with --config.",
)
@click.option(
    "--max-false-per-hour",
    type=click.FloatRange(min=0),
    default=None,
    help="At most this many false triggers per hour on the annotated videos with no event (lines with only "
    '{"video": PATH}); 6 = one per 10 minutes. Default: no limit.',
)
@CONFIG_OPTION
def calibrate(cache_dir, annotations_path, out_path, max_false_per_hour, config_path):
    """Fit the change score's scales and the trigger threshold to annotated videos of a cache (no decoding)."""
    from vtm.pipeline.annotations import AnnotationError
    from vtm.pipeline.calibrate import calibrate_archive

    try:
        fitted, before, after = calibrate_archive(
            cache_dir, annotations_path, load_config(config_path), progress=True, max_false_per_hour=max_false_per_hour
        )
    except (ConfigError, CacheError, AnnotationError) as e:
        _fail(str(e))
    from vtm.cache.atomic import atomic_path
    from vtm.pipeline.config import dump_config

    with atomic_path(out_path) as tmp:
        tmp.write_text(dump_config(fitted))
    click.echo(
        f"event F1 on the annotated videos: {before['f1']:.3f} before, {after['f1']:.3f} after (P "
        f"{after['precision']:.3f}, R {after['recall']:.3f})"
    )
    quiet_before, quiet_after = before["eventless"], after["eventless"]
    if quiet_after["videos"]:
        click.echo(
            f"false triggers on the {quiet_after['videos']} annotated videos with no event "
            f"({quiet_after['seconds'] / 60:.1f} min): {quiet_before['false_triggers']} before, "
            f"{quiet_after['false_triggers']} after ({quiet_after['per_hour']:.1f} per hour)"
        )
    if max_false_per_hour is not None and quiet_after["per_hour"] > max_false_per_hour + 1e-9:
        click.secho(
            f"warning: no setting tried stays under {max_false_per_hour:g} false triggers per hour on them; the config "
            "has the fewest found. Check that those videos really have no event, or annotate the events they have",
            fg="yellow",
            err=True,
        )
    click.echo(
        f"wrote {out_path}; use it with `vtm triggers {cache_dir} --config {out_path}` (re-scores from the cache), "
        "and check it on videos it was not fitted on"
    )


@main.command()
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--cache", "cache_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Annotation file to write (JSONL).",
)
@click.option(
    "--half-width", default=0.5, show_default=True, help="Seconds before and after each trigger the event spans."
)
@CONFIG_OPTION
def annotate(dataset_dir, cache_dir, out_path, half_width, config_path):
    """Write a starting annotation file from the triggers found, to correct by hand.

    Format: pipeline/annotations.py (one JSON object per line: video, start, end, label, description).
    """
    from vtm.pipeline.annotations import write_annotations
    from vtm.pipeline.rescore import ensure_change_scores
    from vtm.pipeline.triggers import find_triggers

    try:
        cfg = load_config(config_path)
        cache = FeatureCache.open(cache_dir)
        if isinstance(cache.dataset_root, str) or (
            cache.dataset_root and cache.dataset_root.resolve() != dataset_dir.resolve()
        ):
            _fail(f"the cache was extracted from {cache.dataset_root}, not {dataset_dir}")
        ensure_change_scores(cache, cfg.change_score, progress=True)
        found = find_triggers(cache, cfg.triggers, "change")
    except (ConfigError, CacheError) as e:
        _fail(str(e))
    rows = []
    for path, ts in found.items():
        rows += [
            {
                "video": path,
                "start": round(max(0.0, t["time"] - half_width), 3),
                "end": round(t["time"] + half_width, 3),
                "label": "event",
                "description": "",
            }
            for t in ts
        ]
        if not ts:
            rows.append({"video": path})
    write_annotations(out_path, rows)
    click.echo(
        f"wrote {sum(1 for r in rows if 'start' in r)} events in {len(found)} videos to {out_path}; correct the "
        "times, labels and descriptions, then train"
    )


@main.command("train-from-cache")
@click.argument("cache_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory (checkpoints, TensorBoard logs).",
)
@click.option(
    "--resume",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A checkpoint directory of this run to continue from.",
)
@click.option("--epochs", type=int)
@click.option("--device", help="auto | cpu | cuda.")
@click.option("--llm", help="LLaVA (or causal LM) path or hub id: also train the adapter.")
@click.option("--workers", type=int, help="Data-parallel Ray Train workers.")
@click.option("--address", help="Ray cluster address (with --workers).")
@click.option("--no-progress", is_flag=True)
@CONFIG_OPTION
def train_from_cache(
    cache_dir, annotations, out_dir, resume, epochs, device, llm, workers, address, no_progress, config_path
):
    """Train the trigger model (and LLaVA adapter) from cached features; never decodes video."""
    from vtm.pipeline.annotations import AnnotationError
    from vtm.pipeline.train import run_train

    try:
        cfg = load_config(
            config_path,
            {
                "train": {"epochs": epochs, "device": device, "workers": workers},
                "adapter": {"llm": llm},
                "ray": {"address": address},
            },
        )
        result = run_train(cache_dir, annotations, out_dir, cfg, resume=resume, progress=not no_progress)
    except (ConfigError, CacheError, CheckpointError, AnnotationError, LockError, OutputDirError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(explain_os_error(e), code=1)
    shown = ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in result.metrics.items())
    click.echo(f"trained {result.epochs} epochs -> {result.final}\n{shown}")


@main.command()
@click.argument("cache_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--threshold", type=float, help="Decision threshold on the learned score [the checkpoint's calibrated one]."
)
@click.option(
    "--tolerance",
    "tolerance_s",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds a trigger may lie outside an annotated event and still find it.",
)
@click.option("--strict", is_flag=True, help="Refuse a checkpoint trained on other features.")
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the metrics here."
)
def evaluate(cache_dir, checkpoint, annotations, threshold, tolerance_s, strict, json_out):
    """Score a checkpoint against annotations: per label, events found, missed and false, precision, recall and F1,
    beside the change score's; then frame metrics."""
    from vtm.pipeline.annotations import AnnotationError, load_annotations
    from vtm.pipeline.checkpoint import load_trigger_model
    from vtm.pipeline.learned_metrics import label_report, metrics_at, score_videos

    try:
        cache = FeatureCache.open(cache_dir)
        model, _, report = load_trigger_model(checkpoint, cache.settings, strict=strict)
        _warn_report(report)
        ann = load_annotations(annotations, cache, model.config.labels)
        scored = score_videos(model, cache, ann, sorted(ann.events))
    except (CacheError, CheckpointError, AnnotationError) as e:
        _fail(str(e))
    threshold = model.config.detector.threshold if threshold is None else threshold
    metrics = metrics_at(scored, threshold, tolerance_s)
    labels = label_report(scored, threshold, tolerance_s)
    click.echo(f"{len(scored.video_ids)} videos, threshold {threshold:.3f}, tolerance {tolerance_s:g} s")
    width = max(len(name) for name in labels)
    click.echo(
        f"{'label':<{width}}  {'events':>6} {'found':>6} {'missed':>6} {'false':>6}  {'precision':>9} {'recall':>6} "
        f"{'F1':>6}"
    )
    for name, r in labels.items():
        click.echo(
            f"{name:<{width}}  {r['events']:>6} {r['found']:>6} {r['missed']:>6} {r['false']:>6}  "
            f"{r['precision']:>9.3f} {r['recall']:>6.3f} {r['f1']:>6.3f}"
        )
    for k in ("val/frame_precision", "val/frame_recall", "val/frame_f1", "val/frame_ap"):
        click.echo(f"{k.split('/')[-1]:<16} {metrics[k]:.3f}")
    if json_out:
        write_json(json_out, {**metrics, "labels": labels})


@main.group()
def cache() -> None:
    """Inspect a feature cache."""


@cache.command("info")
@click.argument("cache_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def cache_info(cache_dir):
    """What is in a cache, what failed and why."""
    try:
        c = FeatureCache.open(cache_dir)
    except CacheError as e:
        _fail(str(e))
    s = c.settings
    m = c.manifest()
    ok = m.filter(pl.col("status") == schema.STATUS_OK)
    failed = m.filter(pl.col("status") == schema.STATUS_FAILED)
    click.echo(f"cache       {c.root}")
    missing = isinstance(c.dataset_root, Path) and not c.dataset_root.is_dir()
    click.echo(
        f"dataset     {c.dataset_root}" + (" (not there any more: moved or deleted; features kept)" if missing else "")
    )
    click.echo(
        f"encoder     {s.encoder} ({'pretrained' if s.pretrained else 'RANDOM weights'}: {s.weights}), "
        f"{s.feature_dim}-d {s.feature_dtype}"
    )
    click.echo(
        f"sampling    {s.sample_fps} fps, {s.image_size}px"
        + (f", at most {s.max_frames} frames" if s.max_frames else "")
    )
    click.echo(f"fingerprint {s.fingerprint}")
    hours = (ok["duration_s"].sum() or 0) / 3600
    root = c.dataset_root
    # One listing of a local dataset (an object store is listed only by extract itself), unless it is gone (said
    # above): which cached videos lost their source, and which of its videos the cache does not hold as they are.
    local = isinstance(root, Path) and not missing
    if local:
        from vtm.pipeline.discover import discover_videos

        found = discover_videos(root)
    else:
        found = []
    now = {v.relpath: (v.size_bytes, v.mtime_ns) for v in found if v.error is None}
    gone = sorted(p for p in ok["path"] if p not in now) if local else []
    click.echo(
        f"videos      {len(m)}: {len(ok)} ok ({hours:.2f} h, {ok['frames_sampled'].sum() or 0} frames), "
        f"{len(failed)} failed"
        + (f"; {len(gone)} of the ok ones have no source in the dataset any more (kept)" if gone else "")
    )
    if local:
        as_extracted = {r["path"]: (r["size_bytes"], r["mtime_ns"]) for r in ok.iter_rows(named=True)}
        listed = set(m["path"])
        new = sum(v.relpath not in listed for v in found)
        changed = sum(now[path] != then for path, then in as_extracted.items() if path in now)
        if new or changed:
            settings = c.root / schema.EXTRACT_CONFIG  # the last extract's settings, which the cache holds to
            command = ["vtm", "extract", str(root), "--cache", str(c.root)]
            command += ["--config", str(settings)] if settings.is_file() else []
            which = [f"{new} not in the cache (an extract that stopped early, or new files)"] if new else []
            which += [f"{changed} modified since extracted"] if changed else []
            click.secho(
                f"not yet     {new + changed} of the {len(found)} videos in the dataset: {', '.join(which)}; "
                f"`{shlex.join(command)}` brings them in",
                fg="yellow",
            )
    for row in ok.filter(pl.col("warning").is_not_null()).sort("path").iter_rows(named=True):
        click.secho(f"  warning: {row['path']}: {row['warning']}", fg="yellow")
    for path in gone:
        click.echo(f"  source gone: {path} (features kept)")
    for row in failed.sort("path").iter_rows(named=True):
        click.secho(f"  failed: {row['path']}: {row['error']}", fg="red")


@main.command("sample")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-broken", is_flag=True, help="Leave out the deliberately broken files.")
def sample(out_dir, seed, no_broken):
    """Write a small sample archive (with ground truth) to OUT_DIR."""
    from vtm.data.sample_archive import make_sample_dataset

    make_sample_dataset(out_dir, seed=seed, include_broken=not no_broken)
    truth = json.loads((out_dir / "ground_truth.json").read_text())
    click.echo(f"wrote {len(truth['events'])} videos and {len(truth.get('broken', {}))} broken files to {out_dir}")


@main.command()
@click.argument("cache_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory: JSON and WebVTT per video, descriptions.parquet.",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Re-score with this trained trigger model (and describe with its adapter, if it has one).",
)
@click.option("--model", help="LLaVA local path or hub id (default: the language model of the checkpoint's adapter).")
@click.option(
    "--threshold",
    type=float,
    help="Score a trigger must reach (0..1) [with --checkpoint: its calibrated threshold, else triggers.threshold].",
)
@click.option("--max-windows-per-video", type=int, help="At most this many windows per video (the strongest).")
@click.option("--prompt", help="The question asked about each window, or a whole prompt template.")
@click.option("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray).")
@click.option("--dense", is_flag=True, default=None, help="Describe every sampled frame (the baseline; slow).")
@click.option("--objects", is_flag=True, default=None, help="Also detect objects (DETR) in each window's key frame.")
@click.option("--detector", help="DETR local path or hub id [facebook/detr-resnet-50].")
@click.option("--audio", is_flag=True, default=None, help="Also speak each video's summary to <video>.wav.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@CONFIG_OPTION
def describe(
    cache_dir,
    out_dir,
    checkpoint,
    model,
    threshold,
    max_windows_per_video,
    prompt,
    address,
    dense,
    objects,
    detector,
    audio,
    no_progress,
    config_path,
):
    """Describe the triggered windows of every video in a cache with a vision-language model."""
    from vtm.models.llava_adapter import LanguageModelLoadError
    from vtm.pipeline.describe import run_describe
    from vtm.stages.detect import ObjectDetectorLoadError
    from vtm.ui.speech import SpeechError

    try:
        cfg = load_config(
            config_path,
            {
                "triggers": {"threshold": _threshold(threshold, checkpoint, config_path)},
                "describe": {
                    "model": model,
                    "max_windows_per_video": max_windows_per_video,
                    "prompt": prompt,
                    "dense": dense,
                    "objects": objects,
                    "detector": detector,
                    "audio": audio,
                },
                "ray": {"address": address},
            },
        )
        summary = run_describe(cache_dir, out_dir, cfg, checkpoint=checkpoint, progress=not no_progress)
    except (
        ConfigError,
        CacheError,
        CheckpointError,
        LanguageModelLoadError,
        ObjectDetectorLoadError,
        SpeechError,
        LockError,
        OutputDirError,
    ) as e:
        _fail(str(e))
    except OSError as e:
        _fail(explain_os_error(e), code=1)
    click.echo(
        f"{summary.videos} videos: {summary.described} described, {summary.skipped} already described with these "
        "settings, "
        f"{len(summary.failed)} failed; {summary.windows} windows in {summary.seconds:.1f} s -> {summary.out_dir}"
    )
    if summary.frames_sampled:
        click.echo(
            f"frames sampled {summary.frames_sampled}, sent to the VLM {summary.frames_to_vlm} "
            f"({summary.vlm_share:.1%}); "
            f"VLM time {summary.vlm_seconds:.1f} s ({summary.model}{', with the adapter' if summary.adapter else ''})"
        )
    click.echo(f"as a web page: vtm report {summary.out_dir}")
    for path, reason in summary.failed:
        click.secho(f"  failed: {path}: {reason}", fg="red", err=True)
    sys.exit(0 if summary.all_ok else 1)


@main.command()
@click.argument("video", callback=_local_or_url(directory=False))
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Analysis JSON to write."
)
@click.option(
    "--threshold",
    type=float,
    help="Trigger score a moment must reach (0..1) [triggers.threshold if the config sets it, else the checkpoint's "
    "calibrated threshold].",
)
@click.option("--device", help="auto | cpu | cuda [describe.device].")
@click.option(
    "--strict-loading", is_flag=True, help="Refuse a checkpoint that does not match the encoder it is used with."
)
@click.option("--model", help="LLaVA path or hub id: needed for a checkpoint without an adapter [describe.model].")
@click.option("--detector", help="DETR local path or hub id: also detect objects in the triggered frames.")
@click.option(
    "--detector-threshold",
    type=click.FloatRange(0, 1),
    help="Objects below this score are dropped [describe.detector_threshold].",
)
@click.option(
    "--audio", type=click.Path(dir_okay=False, path_type=Path), help="Also speak the video summary to this WAV file."
)
@CONFIG_OPTION
def infer(
    video,
    checkpoint,
    output,
    threshold,
    device,
    strict_loading,
    model,
    detector,
    detector_threshold,
    audio,
    config_path,
):
    """Analyse one video (a file or an object-storage URL) with a checkpoint, every phase in this process (no cache, no
    Ray)."""
    from vtm.models.llava_adapter import LanguageModelLoadError
    from vtm.pipeline.infer import run_infer
    from vtm.stages.decode import DecodeError
    from vtm.stages.detect import ObjectDetectorLoadError
    from vtm.ui.speech import SpeechError

    try:
        cfg = load_config(
            config_path,
            {
                "triggers": {"threshold": _threshold(threshold, checkpoint, config_path)},
                "describe": _describer_flags(model, device, detector, detector_threshold),
            },
        )
        analysis = run_infer(
            video, checkpoint, output, cfg, threshold=cfg.triggers.threshold, strict=strict_loading, audio=audio
        )
    except (
        ConfigError,
        CheckpointError,
        LanguageModelLoadError,
        EncoderLoadError,
        ObjectDetectorLoadError,
        SpeechError,
    ) as e:
        _fail(str(e))
    except (DecodeError, StorageError) as e:
        _fail(f"{video}: {e}", code=1)
    except OSError as e:
        _fail(explain_os_error(e), code=1)
    if analysis.get("warning"):
        click.secho(f"warning: {video}: {analysis['warning']}", fg="yellow", err=True)
    click.echo(f"{analysis['num_triggers_detected']} triggers in {analysis['num_frames_analyzed']} frames -> {output}")


def _describer_flags(model, device, detector, detector_threshold) -> dict:
    """The `describe` settings `vtm infer` and `vtm ui` take as flags: --detector turns object detection on."""
    return {
        "model": model,
        "device": device,
        "objects": True if detector else None,
        "detector": detector,
        "detector_threshold": detector_threshold,
    }


@main.command()
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    required=True,
    type=click.Choice(["clips", "csv", "edl", "otio", "chapters"]),
    help="What to write (listed above).",
)
@click.option(
    "--to",
    "to_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write [OUT_DIR, beside the describe run's files].",
)
@click.option(
    "--exact", is_flag=True, help="clips: re-encode the exact window instead of copying from the keyframe before it."
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def export(out_dir, fmt, to_dir, exact, no_progress):
    """Write the moments of a `vtm describe` run (OUT_DIR) for video editors, players and spreadsheets.

    \b
    clips     <video>.clips/NN.mp4 + NN.json: each moment as its own file (stream copy; --exact re-encodes)
    csv       moments.csv: one row per moment (video, start, end, score, description, objects)
    edl       <video>.edl: CMX 3600 edit decision list, descriptions as comments and markers
    otio      <video>.otio: OpenTimelineIO timeline, one clip and marker per moment
    chapters  <video>.chapters.vtt: WebVTT chapters beside the subtitles
    """
    from vtm.pipeline.export import ExportError, run_export

    try:
        summary = run_export(out_dir, fmt, to_dir, exact=exact, progress=not no_progress)
    except ExportError as e:
        _fail(str(e))
    click.echo(
        f"{summary.moments} moments of {summary.videos} videos -> {len(summary.files)} "
        f"file{'' if len(summary.files) == 1 else 's'} in {summary.out_dir}"
    )
    for video, reason in summary.failed:
        click.secho(f"  failed: {video}: {reason}", fg="red", err=True)
    sys.exit(0 if summary.all_ok else 1)


@main.command()
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report(out_dir):
    """Write OUT_DIR/report.html for a `vtm describe` run: per video its timeline, key frames, descriptions, objects."""
    from vtm.ui.report import ReportError, write_report

    try:
        path = write_report(out_dir)
    except ReportError as e:
        _fail(str(e))
    click.echo(f"report -> {path}")


@main.command()
@click.option(
    "--checkpoints",
    "checkpoints_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to look for trained checkpoints [runs].",
)
@click.option(
    "--videos",
    "videos_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Videos to offer as examples to pick from.",
)
@click.option("--model", help="LLaVA path or hub id, for checkpoints without an adapter [describe.model].")
@click.option("--detector", help="DETR local path or hub id: detect objects in the triggered frames.")
@click.option(
    "--detector-threshold",
    type=click.FloatRange(0, 1),
    help="Objects below this score are not shown [describe.detector_threshold].",
)
@click.option("--device", help="auto | cpu | cuda [describe.device].")
@click.option("--host", help="Interface to listen on (0.0.0.0 opens it to the network) [127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [7860].")
@click.option("--max-upload-mb", type=int, help="Largest upload accepted [500].")
@click.option("--max-minutes", type=float, help="Longest video accepted [30].")
@CONFIG_OPTION
def ui(
    checkpoints_dir,
    videos_dir,
    model,
    detector,
    detector_threshold,
    device,
    host,
    port,
    max_upload_mb,
    max_minutes,
    config_path,
):
    """A web page to analyse one video at a time with a trained checkpoint."""
    from vtm.ui.web import launch

    try:
        settings = ui_settings(
            config_path,
            checkpoints_dir=checkpoints_dir,
            videos_dir=videos_dir,
            model=model,
            detector=detector,
            detector_threshold=detector_threshold,
            device=device,
            host=host,
            port=port,
            max_upload_mb=max_upload_mb,
            max_minutes=max_minutes,
        )
    except ConfigError as e:
        _fail(str(e))
    try:
        launch(settings)
    except OSError as e:  # Gradio's message names its own environment variable, not our flag
        _fail(
            f"cannot listen on {settings.host}:{settings.port} ({str(e).splitlines()[0]}): is another `vtm ui` running "
            "there? Pass another --port."
        )


def ui_settings(config_path: Path | None, max_minutes: float | None = None, **flags):
    """`vtm ui`'s settings: the config file's (`describe`: models, threshold, device; `triggers`), the given flags
    over them; page flags left out (None) keep UiSettings' defaults."""
    from vtm.ui.web import UiSettings

    describer = {k: flags.pop(k, None) for k in ("model", "device", "detector", "detector_threshold")}
    config = load_config(config_path, {"describe": _describer_flags(**describer)})
    page = {k: v for k, v in flags.items() if v is not None}
    if max_minutes is not None:
        page["max_seconds"] = max_minutes * 60
    return UiSettings(config=config, **page)


if __name__ == "__main__":
    main()
