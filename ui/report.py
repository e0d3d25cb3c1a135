"""`vtm report OUT_DIR`: one static HTML page of a `vtm describe` run.

The page reads the describe output directory (`describe_manifest.json` and each video's `<path>.json`)
and shows the run's efficiency, then per video its summary, trigger timeline, audio and a card per
trigger (thumbnail, time, confidence, description, detected objects). Images and audio are referenced
by relative path, not inlined, so the page stays small next to a large archive and works offline
(no external resources). Optional files that are missing are left out of the page.
"""

from __future__ import annotations

import json
import logging
from html import escape
from pathlib import Path
from urllib.parse import quote

from vtm.cache.atomic import atomic_path
from vtm.pipeline.describe_output import MANIFEST_FILE

log = logging.getLogger(__name__)

REPORT = "report.html"


# "0 failed" would otherwise read as "every video worked" when extract already set some aside.
EXTRACT_NOTE = (
    '<p class="muted">Videos that failed in <code>vtm extract</code> never reach describe: <code>vtm cache info '
    "CACHE</code> lists them and why.</p>"
)


class ReportError(ValueError):
    """The directory is not the output of a `vtm describe` run."""


def write_report(out_dir: Path) -> Path:
    """Write `out_dir/report.html` (atomically) for the describe output in `out_dir`; returns its path."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    page = render_report(out_dir, manifest)
    final = out_dir / REPORT
    with atomic_path(final) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return final


def read_manifest(out_dir: Path) -> dict:
    path = Path(out_dir) / MANIFEST_FILE
    hint = f"run `vtm describe ... {out_dir}` first, then `vtm report {out_dir}`"
    if not path.is_file():
        raise ReportError(f"{path} not found: {out_dir} is not the output of a describe run; {hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"cannot read {path} ({e}); {hint}") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("videos"), dict):
        raise ReportError(f"{path} has no 'videos' table; {hint}")
    return manifest


# --- rendering ----------------------------------------------------------------------------------------


def render_report(out_dir: Path, manifest: dict) -> str:
    out_dir = Path(out_dir)
    entries = [(vid, e) for vid, e in manifest["videos"].items() if isinstance(e, dict)]
    entries.sort(key=lambda item: str(item[1].get("path", item[0])))
    ok = [(vid, e) for vid, e in entries if e.get("status") == "ok"]
    failed = [(vid, e) for vid, e in entries if e.get("status") != "ok"]
    last_run = manifest.get("last_run") if isinstance(manifest.get("last_run"), dict) else {}

    analyses = {vid: _read_analysis(out_dir, e) for vid, e in ok}
    sections = "\n".join(_video_section(out_dir, vid, e, analyses[vid]) for vid, e in ok)
    # Counted over every described video on disk: a re-run's last_run covers only what it (re)described.
    read = [a for a in analyses.values() if a is not None]
    totals = (
        (sum(_int(a.get("num_frames_analyzed")) for a in read), sum(_int(a.get("num_triggers_detected")) for a in read))
        if read
        else None
    )
    body = [
        "<header>",
        f"<h1>vtm · {escape(out_dir.resolve().name)}</h1>",
        _efficiency(len(ok), len(failed), last_run, totals),
        "</header>",
        _index(ok),
        sections,
        _failed_section(failed),
    ]
    return PAGE.format(
        title=escape(f"vtm report · {out_dir.resolve().name}"), css=CSS, body="\n".join(b for b in body if b)
    )


def _efficiency(n_ok: int, n_failed: int, last_run: dict, totals: tuple[int, int] | None) -> str:
    """The run's numbers; `totals` (sampled frames, frames sent to the VLM) over every described video."""
    stats = [("videos described", f"{n_ok}"), ("failed to describe", f"{n_failed}")]
    lines = []
    if totals is None and last_run:
        totals = (_int(last_run.get("frames_sampled")), _int(last_run.get("frames_to_vlm")))
    if totals is not None:
        sampled, to_vlm = totals
        share = to_vlm / sampled if sampled else 0.0
        stats += [
            ("sampled frames", f"{sampled:,}"),
            ("frames to the VLM", f"{to_vlm:,}"),
            ("VLM share", f"{_percent(share)} %"),
        ]
        lines.append(f"{_percent(share)} % of sampled frames went to the vision-language model")
    if last_run:
        stats.append(("VLM seconds (last run)", f"{_float(last_run.get('vlm_seconds')):.1f}"))
        model = str(last_run.get("model") or "")
        if model:
            adapter = " with the trained adapter" if last_run.get("adapter") else ""
            lines.append(f"model {model}{adapter}")
        extra = []
        if "seconds" in last_run:
            extra.append(f"{_float(last_run['seconds']):.1f} s wall time")
        if "windows" in last_run:
            extra.append(f"{_int(last_run['windows'])} windows")
        if "skipped" in last_run:
            extra.append(f"{_int(last_run['skipped'])} videos skipped (already described)")
        if extra:
            lines.append(" · ".join(extra))
        if not last_run.get("complete", True):
            lines.append("the last run did not complete: some videos may be missing")
    boxes = "".join(f'<div class="stat"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for k, v in stats)
    notes = "".join(f"<p>{escape(line)}</p>" for line in lines) + EXTRACT_NOTE
    heading = "Describe run" if last_run else "Describe run (no summary in the manifest)"
    return f'<section class="run"><h2>{heading}</h2><div class="stats">{boxes}</div>{notes}</section>'


def _index(ok: list[tuple[str, dict]]) -> str:
    if len(ok) < 2:
        return ""
    items = "".join(
        f'<li><a href="#{escape(_anchor(vid), quote=True)}">{escape(str(e.get("path", vid)))}</a> '
        f'<span class="muted">({_int(e.get("triggers"))})</span></li>'
        for vid, e in ok
    )
    return f"<nav><h2>Videos</h2><ul>{items}</ul></nav>"


def _video_section(out_dir: Path, video_id: str, entry: dict, analysis: dict | None) -> str:
    path = str(entry.get("path", video_id))
    parts = [f'<section class="video" id="{escape(_anchor(video_id), quote=True)}">', f"<h2>{escape(path)}</h2>"]
    if analysis is None:
        parts.append('<p class="muted">The analysis file is missing or unreadable.</p>')
        triggers, summary, frames_analyzed = [], "", None
    else:
        triggers = sorted(
            (t for t in analysis.get("triggers") or [] if isinstance(t, dict)), key=lambda t: _float(t.get("timestamp"))
        )
        summary = str(analysis.get("video_summary") or "")
        frames_analyzed = analysis.get("num_frames_analyzed")
    n = len(triggers) if analysis is not None else _int(entry.get("triggers"))
    meta = [f"{n} trigger{'' if n == 1 else 's'}" if n else "no moment reached the threshold"]
    if isinstance(frames_analyzed, int):
        meta.append(f"{frames_analyzed:,} frames analysed")
    parts.append(f'<p class="muted">{escape(" · ".join(meta))}</p>')
    if summary:
        parts.append(f'<p class="summary">{escape(summary)}</p>')

    timeline = _existing(out_dir, entry.get("timeline"))
    if timeline:
        parts.append(
            f'<img class="timeline" src="{timeline}" alt="{escape(f"trigger score over time of {path}", quote=True)}">'
        )
    audio = _existing(out_dir, entry.get("audio"))
    if audio:
        parts.append(f'<audio controls preload="none" src="{audio}"></audio>')

    frames = entry.get("frames") if isinstance(entry.get("frames"), list) else []
    cards = [
        _card(out_dir, k, t, frames[k - 1] if k - 1 < len(frames) else None) for k, t in enumerate(triggers, start=1)
    ]
    if cards:
        parts.append(f'<div class="cards">{"".join(cards)}</div>')
    parts.append("</section>")
    return "\n".join(parts)


def _card(out_dir: Path, k: int, trigger: dict, frame: str | None) -> str:
    when = _float(trigger.get("timestamp"))
    confidence = _float(trigger.get("trigger_confidence"))
    src = _existing(out_dir, frame)
    image = (
        f'<img src="{src}" alt="trigger {k} at {when:.1f} s" loading="lazy">' if src else '<div class="noimg"></div>'
    )
    tags = "".join(
        f'<span class="tag">{escape(str(o.get("label", "?")))} {_float(o.get("score")):.2f}</span>'
        for o in trigger.get("objects") or []
        if isinstance(o, dict)
    )
    return (
        f'<article class="card">{image}<div class="body">'
        f'<div class="when">#{k} · {when:.1f} s · confidence {confidence:.2f}</div>'
        f"<p>{escape(str(trigger.get('analysis') or ''))}</p>"
        + (f'<div class="tags">{tags}</div>' if tags else "")
        + "</div></article>"
    )


def _failed_section(failed: list[tuple[str, dict]]) -> str:
    if not failed:
        return ""
    items = "".join(
        f"<li><b>{escape(str(e.get('path', vid)))}</b>"
        f"<code>{escape(str(e.get('error') or 'no reason recorded'))}</code></li>"
        for vid, e in failed
    )
    return f'<section class="failed"><h2>Failed ({len(failed)})</h2><ul>{items}</ul></section>'


# --- helpers ------------------------------------------------------------------------------------------


def _read_analysis(out_dir: Path, entry: dict) -> dict | None:
    rel = entry.get("json")
    if not isinstance(rel, str) or not rel:
        return None
    try:
        analysis = json.loads((out_dir / rel).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("report: cannot read %s: %s", out_dir / rel, e)
        return None
    return analysis if isinstance(analysis, dict) else None


def _existing(out_dir: Path, rel) -> str | None:
    """The escaped URL of `rel` (relative to the report) when that file exists, else None."""
    if not isinstance(rel, str) or not rel or not (out_dir / rel).is_file():
        return None
    return escape(quote(Path(rel).as_posix()), quote=True)


def _anchor(video_id: str) -> str:
    return "v-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in str(video_id))


def _percent(share: float) -> str:
    """1.8 for 0.018; small shares keep two significant digits instead of rounding to 0.0."""
    pct = 100.0 * share
    return f"{pct:.1f}" if pct == 0 or pct >= 0.1 else f"{pct:.2g}"


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"""

CSS = """
:root { color-scheme: light; --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --bg: #f9fafb; --accent: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 16px 48px; }
h1 { font-size: 1.5rem; margin: 0 0 12px; }
h2 { font-size: 1.1rem; margin: 0 0 6px; word-break: break-all; }
section, nav { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 16px; margin: 16px 0; }
.stats { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0; }
.stat { border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; min-width: 120px; }
.stat b { display: block; font-size: 1.2rem; }
.stat span, .muted { color: var(--muted); font-size: .85rem; }
.run p { margin: 4px 0; }
nav ul { margin: 0; padding-left: 18px; columns: 2; }
@media (max-width: 640px) { nav ul { columns: 1; } }
a { color: var(--accent); text-decoration: none; }
.summary { white-space: pre-line; overflow-wrap: anywhere; }
img.timeline { width: 100%; height: auto; display: block; margin: 8px 0; }
audio { width: 100%; margin: 4px 0 8px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 12px; margin-top: 8px; }
.card { border: 1px solid var(--line); border-radius: 8px; overflow: hidden; background: #fff; }
.card img, .card .noimg { width: 100%; aspect-ratio: 16 / 9; object-fit: contain; display: block; background: #111827; }
.card .body { padding: 8px 10px; }
.card .when { font-size: .8rem; color: var(--muted); font-variant-numeric: tabular-nums; }
.card p { margin: 4px 0; white-space: pre-line; overflow-wrap: anywhere; }
.tags { display: flex; flex-wrap: wrap; gap: 4px; }
.tag { font-size: .75rem; background: #eef2ff; color: #3730a3; border-radius: 999px; padding: 1px 8px; }
.failed li { margin: 6px 0; }
.failed code { display: block; color: #b91c1c; white-space: pre-wrap; word-break: break-word; font-size: .85rem; }
"""
