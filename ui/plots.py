"""A video's trigger-score timeline as a PNG, for the describe output, the report and the web gallery.

Drawn with matplotlib's object API on the Agg canvas: no pyplot, so no global figure state, and it is
safe to call from several web-server threads at once.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from vtm.cache.atomic import atomic_path

DPI = 100
HEIGHT_PX = 260
MMSS_FROM_S = 120.0  # videos longer than this get mm:ss ticks; shorter ones read better in seconds

SCORE_COLOR = "#2563eb"
THRESHOLD_COLOR = "#6b7280"
TRIGGER_COLOR = "#dc2626"


def format_mmss(seconds: float) -> str:
    """12.0 -> '0:12', 754 -> '12:34', 3725 -> '1:02:05'."""
    total = int(round(max(0.0, float(seconds))))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fit_title(title: str, width_px: int) -> str:
    """Keep the title clear of the legend beside it: long paths lose their start, not their file name."""
    room = max(12, (width_px - 440) // 8)  # the legend takes ~400 px; ~8 px per character at 10 pt
    return title if len(title) <= room else "…" + title[-(room - 1) :]


def timeline_png(
    path: Path | None,
    timestamps,
    scores,
    threshold: float,
    trigger_times,
    trigger_scores,
    title: str = "",
    width_px: int = 1000,
) -> bytes:
    """The PNG of one video's trigger score over time, with the threshold and the picked triggers.

    Triggers are numbered 1..k in time order, the numbering of the report's and gallery's thumbnails.
    When `path` is given the PNG is also written there (atomically). Returns the PNG bytes.
    """
    t = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(t) != len(s):
        raise ValueError(f"{len(t)} timestamps but {len(s)} scores")
    tt = np.asarray(trigger_times, dtype=np.float64).reshape(-1)
    ts = np.asarray(trigger_scores, dtype=np.float64).reshape(-1)
    if len(tt) != len(ts):
        raise ValueError(f"{len(tt)} trigger times but {len(ts)} trigger scores")
    order = np.argsort(tt, kind="stable")
    tt, ts = tt[order], ts[order]

    fig = Figure(figsize=(width_px / DPI, HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()

    end = float(max(t.max() if len(t) else 0.0, tt.max() if len(tt) else 0.0))
    x_max = end if end > 0 else 1.0
    if len(t):
        ax.plot(t, s, color=SCORE_COLOR, linewidth=1.3, label="trigger score")
        ax.fill_between(t, 0.0, s, color=SCORE_COLOR, alpha=0.12, linewidth=0)
    else:
        ax.text(
            0.5, 0.72, "no frames", transform=ax.transAxes, ha="center", va="center", color=THRESHOLD_COLOR, fontsize=11
        )
    ax.axhline(threshold, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.0, label=f"threshold {threshold:.2f}")
    for k, (x, y) in enumerate(zip(tt, ts), start=1):
        ax.axvline(x, color=TRIGGER_COLOR, linewidth=0.6, alpha=0.35, zorder=1)
        ax.annotate(
            str(k),
            (x, y),
            xytext=(0, 5),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            color=TRIGGER_COLOR,
        )
    if len(tt):
        ax.scatter(
            tt,
            ts,
            s=26,
            color=TRIGGER_COLOR,
            edgecolors="white",
            linewidths=0.6,
            zorder=3,
            label=f"triggers ({len(tt)})",
        )

    ax.set_xlim(0.0, x_max)
    ax.set_ylim(-0.03, 1.12)  # a score of 0 stays visible above the axis; headroom for the numbers over triggers near 1
    ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel("score")
    if x_max > MMSS_FROM_S:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_mmss(v)))
        ax.set_xlabel("time (m:ss)")
    else:
        ax.set_xlabel("time (s)")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=max(4, width_px // 90), steps=[1, 2, 2.5, 5, 6, 10]))
    ax.grid(axis="y", color="#e5e7eb", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)
    if title:
        ax.set_title(_fit_title(title, width_px), fontsize=10, loc="left")
    # Above the axes, beside the title: inside it would hide the score peaks.
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.1, fontsize=8, frameon=False, ncols=3)
    fig.tight_layout(pad=0.4)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    data = buffer.getvalue()
    if path is not None:
        with atomic_path(Path(path)) as tmp:
            tmp.write_bytes(data)
    return data
