"""What a video's analysis is written as, shared by the jobs that write and read it.

`vtm describe` writes, per video, the analysis JSON (`analysis_json`, the same format `vtm infer` writes) and
a WebVTT track with a cue over each trigger's moment (`webvtt`, `moment_spans`), and for the run the files
named here; `vtm export` and `vtm report` read them back.
"""

from __future__ import annotations

MANIFEST_FILE = "describe_manifest.json"  # per video: status, error, fingerprint, its files
DESCRIPTIONS_FILE = "descriptions.parquet"  # every description of the run's settings
CONFIG_FILE = "describe_config.yaml"  # the resolved configuration of the last run


def analysis_json(
    video_path: str | None,
    frames_analyzed: int,
    times,
    frame_index,
    scores,
    descriptions: list[str],
    summary: str,
    objects: list | None = None,
) -> dict:
    """The per-video analysis, in the format `vtm infer` and `vtm describe` both write.

    With `objects` (one list per trigger, from the detector), each trigger holds its `objects`:
    [{label, score, box: [x0, y0, x1, y1] in pixels of the source video}].
    """
    triggers = [
        {
            "timestamp": round(float(t), 3),
            "frame_index": int(f),
            "trigger_confidence": round(float(s), 4),
            "analysis": d,
        }
        for t, f, s, d in zip(times, frame_index, scores, descriptions)
    ]
    if objects is not None:
        for trigger, found in zip(triggers, objects):
            trigger["objects"] = found
    return {
        "video_path": video_path,
        "num_frames_analyzed": int(frames_analyzed),
        "num_triggers_detected": len(descriptions),
        "triggers": triggers,
        "video_summary": summary,
    }


def vtt_time(seconds: float) -> str:
    """A WebVTT timestamp, hh:mm:ss.mmm."""
    ms = int(round(max(seconds, 0.0) * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def cue_text(text: str) -> str:
    """Text that is safe as one WebVTT cue: printable, on one line, without the cue arrow."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return text.replace("-->", "->") or "(empty description)"


def moment_spans(
    times: list[float], before_s: float, after_s: float, duration_s: float | None = None
) -> list[tuple[float, float]]:
    """(start, end) seconds of each trigger's moment: from before_s ahead of it to after_s after it.

    Moments of near triggers are cut at the midpoint between them, so they never overlap and each still
    holds its own trigger time. The subtitles, the chapters and every export use these spans.
    """
    spans = []
    for k, t in enumerate(times):
        start, end = t - before_s, t + after_s
        if k > 0:
            start = max(start, (times[k - 1] + t) / 2)
        if k + 1 < len(times):
            end = min(end, (t + times[k + 1]) / 2)
        if duration_s:
            end = min(end, max(duration_s, t + 0.001))
        start = max(start, 0.0)
        spans.append((start, max(end, start + 0.001)))
    return spans


def webvtt(
    times: list[float], descriptions: list[str], before_s: float, after_s: float, duration_s: float | None = None
) -> str:
    """A WebVTT track: one cue per trigger over its moment (see `moment_spans`)."""
    lines = ["WEBVTT", ""]
    for k, ((start, end), d) in enumerate(zip(moment_spans(times, before_s, after_s, duration_s), descriptions)):
        lines += [str(k + 1), f"{vtt_time(start)} --> {vtt_time(end)}", cue_text(d), ""]
    return "\n".join(lines)
