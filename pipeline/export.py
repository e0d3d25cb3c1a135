"""`vtm export`: the moments of a `vtm describe` run, in the formats people work in.

    clips     <video>.clips/NN.mp4 (or .mkv) + NN.json: each moment cut from its source. By default the
              packets are copied from the keyframe at or before the moment's start (fast, no quality loss;
              the clip may start a little early, the sidecar says by how much); `exact` re-encodes the
              exact window.
    csv       moments.csv: one row per moment (video, start, end, score, description, objects)
    edl       <video>.edl: a CMX 3600 edit decision list, one event per moment, its description as the
              event's comment and as a locator (marker) at the trigger
    otio      <video>.otio: an OpenTimelineIO timeline, one clip per moment with a marker at the trigger
              whose comment is the description
    chapters  <video>.chapters.vtt: WebVTT chapters beside the describe run's subtitles

A moment spans the trigger's window (triggers.before_s / after_s of the run, cut at the midpoint between
near triggers: the same spans as the subtitles, see `vtm.pipeline.describe_output.moment_spans`). Timelines
count frames at the source's frame rate, rounded to the nearest frame. Sources are read where describe
read them (local files or object-storage URLs). Every file is written atomically; a video whose source
cannot be read fails alone, with its reason.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from tqdm import tqdm

from vtm.cache.atomic import atomic_path, write_json
from vtm.cache.storage import StorageError, is_url, open_video
from vtm.pipeline.config import load_config
from vtm.pipeline.describe_output import CONFIG_FILE, MANIFEST_FILE, cue_text, moment_spans, vtt_time

log = logging.getLogger(__name__)

FORMATS = ("clips", "csv", "edl", "otio", "chapters")
CSV_FILE = "moments.csv"
CSV_COLUMNS = ("video", "start", "end", "trigger", "score", "description", "objects", "source")
# Codecs an .mp4 holds; anything else is copied into Matroska, which holds them all.
MP4_VIDEO = {"h264", "hevc", "mpeg4", "av1", "vp9", "mpeg2video", "mpeg1video", "mjpeg"}
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"}


class ExportError(ValueError):
    """The folder is not a describe output, or the request cannot be met; the message says what to do."""


@dataclass
class Moment:
    video: str  # path relative to the dataset root, as in the describe output
    source: str  # where the video is read from: a local path or an object-storage URL
    number: int  # 1.. within the video, in time order
    start: float  # seconds
    end: float
    trigger: float  # the trigger's time, inside [start, end)
    score: float
    description: str
    objects: list = field(default_factory=list)

    @property
    def title(self) -> str:
        """A short one-line name for a chapter or a clip: the description's first sentence."""
        text = " ".join(self.description.split()) or f"moment {self.number}"
        first = text.split(". ")[0]
        return first if len(first) <= 80 else first[:77] + "..."


@dataclass
class ExportSummary:
    out_dir: Path
    videos: int = 0
    moments: int = 0
    files: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (video, reason)

    @property
    def all_ok(self) -> bool:
        return not self.failed


def read_moments(describe_dir: Path) -> dict[str, list[Moment]]:
    """{video path: its moments} for every video the describe run in `describe_dir` described."""
    describe_dir = Path(describe_dir)
    manifest_path = describe_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ExportError(
            f"{manifest_path} not found: {describe_dir} is not the output of a describe run; run `vtm describe "
            f"CACHE --out {describe_dir}` first"
        )
    manifest = json.loads(manifest_path.read_text())
    triggers = (
        load_config(describe_dir / CONFIG_FILE).triggers
        if (describe_dir / CONFIG_FILE).is_file()
        else load_config().triggers
    )
    found: dict[str, list[Moment]] = {}
    for entry in sorted(
        (e for e in manifest.get("videos", {}).values() if e.get("status") == "ok"), key=lambda e: e["path"]
    ):
        analysis_path = describe_dir / entry["json"]
        if not analysis_path.is_file():
            raise ExportError(
                f"{analysis_path} is listed in {manifest_path} but missing: re-run `vtm describe` into {describe_dir}"
            )
        analysis = json.loads(analysis_path.read_text())
        items = analysis["triggers"]
        times = [float(t["timestamp"]) for t in items]
        spans = moment_spans(times, triggers.before_s, triggers.after_s, _vtt_end(describe_dir / entry["vtt"]))
        found[entry["path"]] = [
            Moment(
                entry["path"],
                analysis["video_path"],
                k + 1,
                start,
                end,
                float(t["timestamp"]),
                float(t["trigger_confidence"]),
                t["analysis"],
                t.get("objects", []),
            )
            for k, (t, (start, end)) in enumerate(zip(items, spans))
        ]
    return found


def _vtt_end(vtt: Path) -> float | None:
    """The video's duration as the subtitles were cut to it (describe knew it from the cache); None if unknown."""
    if not vtt.is_file():
        return None
    ends = [
        _seconds(line.split(" --> ")[1].strip())
        for line in vtt.read_text(encoding="utf-8").splitlines()
        if " --> " in line
    ]
    return max(ends) if ends else None


def _seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def run_export(
    describe_dir: Path, fmt: str, out_dir: Path | None = None, exact: bool = False, progress: bool = True
) -> ExportSummary:
    """Write the moments of the describe run in `describe_dir` as `fmt` into `out_dir` (default: beside the run's own
    files)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if exact and fmt != "clips":
        raise ExportError("--exact applies to --format clips only")
    moments = read_moments(describe_dir)
    out_dir = Path(out_dir or describe_dir)
    summary = ExportSummary(out_dir, videos=len(moments), moments=sum(map(len, moments.values())))
    if fmt == "csv":
        summary.files.append(write_csv(out_dir / CSV_FILE, [m for ms in moments.values() for m in ms]))
        return summary
    for video, ms in tqdm(moments.items(), unit="video", disable=not progress, desc=f"export {fmt}"):
        try:
            if fmt == "chapters":
                summary.files.append(write_chapters(out_dir / f"{video}.chapters.vtt", ms))
            elif not ms:
                continue  # a video without moments has no timeline or clips
            elif fmt == "edl":
                summary.files.append(write_edl(out_dir / f"{video}.edl", ms, media_info(ms[0].source)[0]))
            elif fmt == "otio":
                summary.files.append(write_otio(out_dir / f"{video}.otio", ms, *media_info(ms[0].source)))
            else:
                for m in ms:
                    summary.files += write_clip(out_dir / f"{video}.clips", m, exact)
        except (StorageError, ExportError, OSError) as e:
            summary.failed.append((video, str(e)))
        except Exception as e:  # noqa: BLE001 - a decoder error about one source is that video's failure
            summary.failed.append((video, f"cannot read {ms[0].source if ms else video}: {type(e).__name__}: {e}"))
    return summary


# --- reading the sources ------------------------------------------------------------------------------


def _open_source(source: str):
    import av

    return av.open(open_video(source) if is_url(source) else source)


def media_info(source: str) -> tuple[Fraction, float | None]:
    """The video's frame rate (exact, e.g. 30000/1001) and duration in seconds, from its header only."""
    container = _open_source(source)
    with container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        duration = (
            float(stream.duration * stream.time_base)
            if stream.duration
            else (container.duration / 1e6 if container.duration else None)
        )
    return Fraction(rate), duration


# --- csv and chapters ----------------------------------------------------------------------------------


def write_csv(path: Path, moments: list[Moment]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for m in moments:
        objects = "; ".join(f"{o['label']} {o['score']:.2f}" for o in m.objects)
        writer.writerow(
            [
                m.video,
                f"{m.start:.3f}",
                f"{m.end:.3f}",
                f"{m.trigger:.3f}",
                f"{m.score:.4f}",
                m.description,
                objects,
                m.source,
            ]
        )
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def write_chapters(path: Path, moments: list[Moment]) -> Path:
    lines = [
        "WEBVTT",
        "",
        "NOTE chapters: one per moment vtm found; the subtitles beside them hold the full descriptions",
        "",
    ]
    for m in moments:
        lines += [
            f"chapter-{m.number}",
            f"{vtt_time(m.start)} --> {vtt_time(m.end)}",
            cue_text(f"{m.number}. {m.title}"),
            "",
        ]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return path


# --- timelines -----------------------------------------------------------------------------------------


def _frames(seconds: float, rate: Fraction) -> int:
    return int(round(seconds * rate))


def _timecode(frames: int, fps: int) -> str:
    return f"{frames // (3600 * fps):02d}:{frames // (60 * fps) % 60:02d}:{frames // fps % 60:02d}:{frames % fps:02d}"


def write_edl(path: Path, moments: list[Moment], rate: Fraction) -> Path:
    """CMX 3600: one cut event per moment (source in/out at the moment, record side one after another),
    the source named by a FROM CLIP NAME note, the description as a COMMENT and as a LOC marker.

    Timecodes are non-drop-frame at the source's rate rounded to whole frames per second (29.97 counts
    as 30), the convention editors use for NDF timecode."""
    fps = max(1, round(float(rate)))
    lines = [f"TITLE: {Path(moments[0].video).name} moments (vtm)", "FCM: NON-DROP FRAME", ""]
    record = 0
    for m in moments:
        src_in, src_out = (
            _frames(m.start, Fraction(fps)),
            max(_frames(m.end, Fraction(fps)), _frames(m.start, Fraction(fps)) + 1),
        )
        rec_in, rec_out = record, record + (src_out - src_in)
        # one line of text
        note = (
            "".join(ch if ch.isprintable() else " " for ch in " ".join(m.description.split())) or f"moment {m.number}"
        )
        lines += [
            f"{m.number:03d}  AX       V     C        {_timecode(src_in, fps)} {_timecode(src_out, fps)} "
            f"{_timecode(rec_in, fps)} {_timecode(rec_out, fps)}",
            f"* FROM CLIP NAME: {Path(m.video).name}",
            f"* LOC: {_timecode(rec_in + _frames(m.trigger, Fraction(fps)) - src_in, fps)} RED     {note}",
            f"* COMMENT: {note}",
            f"* SOURCE FILE: {m.source}",
            "",
        ]
        record = rec_out
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_otio(path: Path, moments: list[Moment], rate: Fraction, duration_s: float | None) -> Path:
    """One track, one clip per moment (the source's window, back to back), a marker at each trigger."""
    import opentimelineio as otio

    r = float(rate)
    timeline = otio.schema.Timeline(name=f"{moments[0].video} moments (vtm)")
    track = otio.schema.Track(name="moments", kind=otio.schema.TrackKind.Video)
    timeline.tracks.append(track)
    available = (
        otio.opentime.TimeRange(
            otio.opentime.RationalTime(0, r), otio.opentime.RationalTime(_frames(duration_s, rate), r)
        )
        if duration_s
        else None
    )
    for m in moments:
        start, end = _frames(m.start, rate), max(_frames(m.end, rate), _frames(m.start, rate) + 1)
        reference = otio.schema.ExternalReference(
            target_url=m.source if is_url(m.source) else Path(m.source).resolve().as_uri(), available_range=available
        )
        clip = otio.schema.Clip(
            name=f"{Path(m.video).name} #{m.number}: {m.title}",
            media_reference=reference,
            source_range=otio.opentime.TimeRange(
                otio.opentime.RationalTime(start, r), otio.opentime.RationalTime(end - start, r)
            ),
            metadata={
                "vtm": {
                    "video": m.video,
                    "trigger_s": m.trigger,
                    "score": m.score,
                    "description": m.description,
                    "objects": m.objects,
                }
            },
        )
        marker = otio.schema.Marker(
            name=m.title,
            marked_range=otio.opentime.TimeRange(
                otio.opentime.RationalTime(_frames(m.trigger, rate), r), otio.opentime.RationalTime(0, r)
            ),
            color=otio.schema.MarkerColor.RED,
        )
        marker.comment = m.description
        clip.markers.append(marker)
        track.append(clip)
    with atomic_path(path) as tmp:
        otio.adapters.write_to_file(timeline, str(tmp), adapter_name="otio_json")
    return path


# --- clips ---------------------------------------------------------------------------------------------


def write_clip(folder: Path, m: Moment, exact: bool) -> list[Path]:
    """The moment's video as its own file beside a JSON sidecar; returns both paths."""
    source = _open_source(m.source)
    with source:
        video = source.streams.video[0]
        audio = [s for s in source.streams.audio][:1]
        if exact:
            ext, clip_start, clip_end = "mp4", *_reencode(source, video, m, folder / f"{m.number:02d}.mp4")
        else:
            ext = (
                "mp4"
                if video.codec_context.name in MP4_VIDEO and all(a.codec_context.name in MP4_AUDIO for a in audio)
                else "mkv"
            )
            clip_start, clip_end = _stream_copy(source, video, audio, m, folder / f"{m.number:02d}.{ext}")
    clip = folder / f"{m.number:02d}.{ext}"
    sidecar = folder / f"{m.number:02d}.json"
    write_json(
        sidecar,
        {
            "clip": clip.name,
            "video": m.video,
            "source": m.source,
            "moment": m.number,
            "start": round(m.start, 3),
            "end": round(m.end, 3),
            "trigger": round(m.trigger, 3),
            # where the clip's first frame sits in the source, and where the moment starts inside the clip
            "clip_start": round(clip_start, 3),
            "clip_end": round(clip_end, 3),
            "moment_offset_in_clip": round(m.start - clip_start, 3),
            "method": "reencode" if exact else "stream copy from the keyframe at or before the start",
            "score": m.score,
            "description": m.description,
            "objects": m.objects,
        },
    )
    return [clip, sidecar]


_MUXERS = {"mp4": "mp4", "mkv": "matroska"}


def _stream_copy(source, video, audio: list, m: Moment, dest: Path) -> tuple[float, float]:
    """Copy packets from the keyframe at or before m.start up to m.end; timestamps start again at 0."""
    import av

    tb = video.time_base
    source.seek(int(m.start / tb), stream=video, backward=True, any_frame=False)
    with atomic_path(dest) as tmp:
        out = av.open(str(tmp), "w", format=_MUXERS[dest.suffix[1:]])
        with out:
            mapped = {video.index: out.add_stream_from_template(video)}
            for a in audio:
                mapped[a.index] = out.add_stream_from_template(a)
            clip_start = clip_end = None
            for packet in source.demux([video, *audio]):
                if packet.pts is None or packet.dts is None:
                    continue
                t = float(packet.pts * packet.time_base)
                if packet.stream.index == video.index:
                    if clip_start is None:
                        if not packet.is_keyframe:
                            continue  # the seek landed before a keyframe's packets: wait for it
                        clip_start = t
                    elif t >= m.end and float(packet.dts * packet.time_base) >= m.end:
                        break
                    frame_end = t + float((packet.duration or 0) * packet.time_base)
                    clip_end = frame_end if clip_end is None else max(clip_end, frame_end)
                elif clip_start is None or not clip_start <= t < m.end:
                    continue
                offset = int(round(clip_start / packet.time_base))
                packet.pts -= offset
                packet.dts -= offset
                packet.stream = mapped[packet.stream.index]
                out.mux(packet)
        if clip_start is None:
            raise ExportError(f"no video keyframe at or before {m.start:.2f} s in {m.source}")
    return clip_start, clip_end or m.end


def _reencode(source, video, m: Moment, dest: Path) -> tuple[float, float]:
    """Decode the frames shown in [m.start, m.end) and encode them (H.264) with times from 0."""
    import av

    tb = video.time_base
    rate = video.average_rate or Fraction(25)
    source.seek(int(m.start / tb), stream=video, backward=True)
    first = last = None
    with atomic_path(dest) as tmp:
        out = av.open(str(tmp), "w", format="mp4")
        with out:
            stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=rate)
            stream.width, stream.height, stream.pix_fmt = (
                video.codec_context.width,
                video.codec_context.height,
                "yuv420p",
            )
            stream.time_base = Fraction(1, 90000)
            for frame in source.decode(video):
                t = float(frame.pts * tb) if frame.pts is not None else None
                if t is None or t + 1e-6 < m.start - 0.5 / float(rate):
                    continue
                if t >= m.end - 1e-6:
                    break
                first = t if first is None else first
                last = t
                new = frame.reformat(format="yuv420p")
                new.pts = int(round((t - first) / stream.time_base))
                new.time_base = stream.time_base
                out.mux(stream.encode(new))
            out.mux(stream.encode(None))
        if first is None:
            raise ExportError(f"no frames between {m.start:.2f} s and {m.end:.2f} s in {m.source}")
    return first, last + 1 / float(rate)
