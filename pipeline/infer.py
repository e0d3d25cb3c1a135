"""`vtm infer`: one video, every phase in this process — no cache, no Ray.

    probe -> decode sampled frames (segments) -> encode -> learned trigger score -> select triggers
    -> decode the triggers' key frames -> describe (with the adapter's soft tokens, if trained) -> summary

`VideoTriggerModel` is a whole trained checkpoint — the visual encoder its features came from, the
trigger model, and the describer — for use from Python; `run_infer` is what the command runs. It
lives in pipeline/ rather than models/ because it composes stages, not only networks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vtm.cache.atomic import write_json
from vtm.cache.storage import is_url
from vtm.cache.store import CacheSettings
from vtm.cache.windows import frame_inputs
from vtm.models.trigger_model import TriggerModel
from vtm.pipeline.checkpoint import LoadReport, load_trigger_model, trained_features
from vtm.pipeline.config import Config, resolve_device
from vtm.pipeline.describe_output import analysis_json
from vtm.pipeline.describer import describe_stage, window_context
from vtm.stages.decode import DecodeStage, decode_batch, frame_statistics, partial_decode_warning, probe
from vtm.stages.describe import DescribeStage, joined_summary
from vtm.stages.encode import EncodeStage
from vtm.ui.thumbnails import display_frame, draw_source_objects, rescale_boxes

log = logging.getLogger(__name__)


Progress = Callable[[float, str], None]  # (fraction done 0..1, what is happening)
ENCODED, DESCRIBED = 0.5, 0.95  # rough shares of the work done after encoding and after describing, for progress bars


@dataclass
class VideoAnalysis:
    """One video's analysis: the JSON (`result`, as `vtm infer` writes it) and what a page shows beside it."""

    result: dict
    timestamps: np.ndarray  # every sampled frame's time (s)
    scores: np.ndarray  # the trigger score of each
    threshold: float
    pictures: list[np.ndarray]  # each trigger's key frame at the video's aspect ratio, objects drawn
    warning: str | None = None  # what a partly decodable video lost (also in `result["warning"]`)


class VideoTriggerModel:
    """A trained checkpoint, whole: frames in, the triggered moments and their descriptions out."""

    def __init__(
        self,
        encoder: EncodeStage,
        trigger_model: TriggerModel,
        describer: DescribeStage,
        sample_fps: float,
        image_size: int,
        report: LoadReport | None = None,
        config: Config | None = None,
    ):
        self.encoder, self.trigger_model, self.describer = encoder, trigger_model, describer
        self.sample_fps, self.image_size = sample_fps, image_size
        self.report = report or LoadReport()
        self.config = config or Config()  # triggers: picking moments; extract.segment_frames; describe.image_size

    @classmethod
    def from_checkpoint(
        cls,
        path: Path,
        llm: str | None = None,
        device: str | None = None,
        strict: bool = False,
        encoder_weights: str | None = None,
        config: Config | None = None,
    ) -> VideoTriggerModel:
        """Load everything a checkpoint needs: the visual encoder named in its metadata (`encoder_weights`
        for a torchvision encoder whose weights are not on disk by default), the trigger model, and the
        adapter with its language model (`llm` replaces it; a checkpoint without an adapter needs one).
        `config` gives the settings (default: the defaults): `describe` the describer (model, prompt, objects
        with `detector` and `detector_threshold`, device), `triggers` how moments are picked; `llm` and
        `device` override `describe.model` and `describe.device`.

        A different encoder or weights than the checkpoint was trained on is reported in `.report` and
        logged; with `strict` it is an error.
        """
        path = Path(path)
        config = config or Config()
        describe = replace(config.describe, model=llm or config.describe.model)
        device = resolve_device(device or describe.device)
        features = trained_features(path)
        # other weights show in the digest check
        encoder = EncodeStage(encoder=features["encoder"], weights=encoder_weights, device=device)
        encoder.setup()
        info = encoder.info
        settings = CacheSettings(
            encoder=info.name,
            weights=info.weights,
            weights_digest=info.weights_digest,
            pretrained=info.pretrained,
            feature_dim=info.feature_dim,
            sample_fps=features["sample_fps"],
            image_size=features["image_size"],
            max_frames=None,
        )
        trigger_model, _, report = load_trigger_model(path, settings, strict=strict)
        for line in report.lines():
            log.warning("checkpoint %s", line)
        stage, _ = describe_stage(path, replace(describe, device=device))
        stage.setup()
        return cls(
            encoder,
            trigger_model.to(encoder.device),
            stage,
            features["sample_fps"],
            features["image_size"],
            report,
            config,
        )

    # --- the phases ---------------------------------------------------------------------------------

    def model_inputs(self, frames: np.ndarray) -> np.ndarray:
        """Sampled frames (n, H, W, 3) uint8 -> the trigger model's per-frame inputs, as the cache would hold them."""
        frames = self._at_image_size(np.asarray(frames, np.uint8))
        features = self.encoder({"frames": frames})["features"]
        hist, grid = frame_statistics(frames)
        return frame_inputs(self.trigger_model.config, features, hist, grid)

    def _at_image_size(self, frames: np.ndarray) -> np.ndarray:
        # Extract decodes straight to image_size x image_size; frames of another size are squashed the same way.
        if frames.shape[1:3] == (self.image_size, self.image_size):
            return frames
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        x = F.interpolate(
            x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False
        )
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def _analysis(
        self,
        inputs: np.ndarray,
        timestamps: np.ndarray,
        threshold: float | None,
        key_frames: Callable[[np.ndarray], np.ndarray],
        frame_index: np.ndarray,
        video_path: str | None,
        size: tuple[int, int],
        max_triggers: int | None = None,
        progress: Progress | None = None,
    ) -> VideoAnalysis:
        progress = progress or (lambda fraction, message: None)
        threshold = self.threshold if threshold is None else threshold
        timestamps = np.asarray(timestamps, np.float64)
        score, _ = self.trigger_model.score_video(inputs, timestamps)
        select = replace(self.config.triggers, threshold=threshold)
        if max_triggers is not None:
            select = replace(select, max_triggers=max_triggers)
        picked = select({"timestamps": timestamps, "score": score})
        idx = np.asarray(picked["trigger_index"], np.int64)
        times = [float(t) for t in picked["trigger_time"]]
        descriptions: list[str] = []
        objects: list[list[dict]] | None = [] if self.describer.detector is not None else None
        pictures: list[np.ndarray] = []
        if len(idx):
            progress(ENCODED, f"decoding the {len(idx)} triggered frames")
            frames = key_frames(idx)
            context = (
                window_context(self.trigger_model, inputs, timestamps, idx)
                if self.describer.adapter is not None
                else None
            )
            step = self.describer.max_batch
            for lo in range(0, len(idx), step):  # a batch at a time, so the page can show progress
                progress(
                    ENCODED + (DESCRIBED - ENCODED) * lo / len(idx),
                    f"describing moments {lo + 1}-{min(lo + step, len(idx))} of {len(idx)}",
                )
                batch = {"frames": frames[lo : lo + step]}
                if context is not None:
                    batch["context"], batch["mask"] = context[0][lo : lo + step], context[1][lo : lo + step]
                out = self.describer(batch)
                descriptions += out["description"]
                if objects is not None:
                    objects += [
                        rescale_boxes(found, (frames.shape[2], frames.shape[1]), size) for found in out["objects"]
                    ]
            pictures = [
                draw_source_objects(display_frame(f, *size), objects[k] if objects else [], *size)
                for k, f in enumerate(frames)
            ]
        progress(DESCRIBED, "summarising the video")
        if descriptions and self.describer.summary == "llm":
            summary = self.describer.summarize(
                {"times": times, "descriptions": descriptions, "frames_analyzed": len(timestamps)}
            )["summary"]
        else:
            summary = joined_summary(times, descriptions, len(timestamps))
        result = analysis_json(
            video_path,
            len(timestamps),
            times,
            frame_index[idx],
            picked["trigger_score"],
            descriptions,
            summary,
            objects,
        )
        return VideoAnalysis(result, timestamps, np.asarray(score, np.float64), threshold, pictures)

    @property
    def threshold(self) -> float:
        """The checkpoint's decision threshold (calibrated on validation videos), used where none is given."""
        return self.trigger_model.config.detector.threshold

    def infer_triggered_analysis(
        self, frames: np.ndarray, timestamps: np.ndarray, trigger_threshold: float | None = None
    ) -> dict:
        """Frames sampled at the checkpoint's rate (`sample_fps`), (n, H, W, 3) uint8, with their times in
        seconds -> the analysis (`frame_index` counts the given frames; `video_path` is None)."""
        frames = np.asarray(frames, np.uint8)
        if len(frames) != len(timestamps):
            raise ValueError(f"{len(frames)} frames for {len(timestamps)} timestamps")
        size = (frames.shape[2], frames.shape[1])
        return self._analysis(
            self.model_inputs(frames),
            timestamps,
            trigger_threshold,
            lambda idx: frames[idx],
            np.arange(len(frames)),
            None,
            size,
        ).result

    def analyze_video(
        self, video_path: Path | str, trigger_threshold: float | None = None, key_frame_size: int | None = None
    ) -> dict:
        """One video file -> its analysis (see `analyze`)."""
        return self.analyze(video_path, trigger_threshold, key_frame_size=key_frame_size).result

    def analyze(
        self,
        video_path: Path | str,
        threshold: float | None = None,
        max_triggers: int | None = None,
        key_frame_size: int | None = None,
        progress: Progress | None = None,
    ) -> VideoAnalysis:
        """One video file (or object-storage URL): sampled and decoded in segments, so memory stays flat; key frames
        decoded again at
        `key_frame_size` (default: `describe.image_size`) for the describer; at most `max_triggers` moments (the
        strongest; default: `triggers.max_triggers`). `progress(fraction,
        message)` is told how far it got. Raises DecodeError for a video that cannot be read."""
        progress = progress or (lambda fraction, message: None)
        plan = probe(video_path if is_url(video_path) else Path(video_path), self.sample_fps)
        decode = DecodeStage(image_size=self.image_size, nearest_frames=True)  # the frames `vtm extract` samples
        segments, sampled, decoded = [], [], []
        segment = self.config.extract.segment_frames  # sampled frames at a time: memory stays flat on long videos
        for s in range(0, len(plan.frame_index), segment):
            progress(
                ENCODED * s / max(len(plan.frame_index), 1),
                f"sampling and encoding frames {s + 1}-{min(s + segment, len(plan.frame_index))} of "
                f"{len(plan.frame_index)}",
            )
            idx = plan.frame_index[s : s + segment]
            out = decode(decode_batch(video_path, idx, plan.rotation, plan.decoder, plan.pts_around(idx)))
            segments.append(self.model_inputs(out["frames"]))
            sampled.append(out["frame_index"])
            decoded.append(out["decoded"])
        inputs, frame_index, decoded = np.concatenate(segments), np.concatenate(sampled), np.concatenate(decoded)
        timestamps, warning = plan.pts[frame_index], None
        if not decoded.all():  # a partly corrupt video: analyse what decoded, and say what was lost
            warning = partial_decode_warning(timestamps, decoded, self.sample_fps)
            log.info("%s: %s", video_path, warning)  # the caller shows it (vtm infer, the page): once, not twice
            inputs, frame_index, timestamps = inputs[decoded], frame_index[decoded], timestamps[decoded]
        key_decode = DecodeStage(image_size=key_frame_size or self.config.describe.image_size)

        def key_frames(idx: np.ndarray) -> np.ndarray:
            return key_decode(decode_batch(video_path, frame_index[idx], plan.rotation, plan.decoder))["frames"]

        analysis = self._analysis(
            inputs,
            timestamps,
            threshold,
            key_frames,
            frame_index,
            str(video_path),
            (plan.width, plan.height),
            max_triggers,
            progress,
        )
        if warning is not None:
            analysis.result["warning"] = warning
            analysis.warning = warning
        return analysis


def run_infer(
    video_path: Path,
    checkpoint: Path,
    output: Path,
    config: Config | None = None,
    threshold: float | None = None,
    strict: bool = False,
    audio: Path | None = None,
) -> dict:
    """`vtm infer`: analyse one video with a checkpoint and write the analysis JSON to `output`. `config` gives
    the describer (`describe`: with `objects`, each trigger gets its objects) and how moments are picked
    (`triggers`); `threshold` None is the checkpoint's calibrated one. With `audio` the summary is spoken to that
    WAV file."""
    model = VideoTriggerModel.from_checkpoint(checkpoint, strict=strict, config=config)
    analysis = model.analyze_video(video_path if is_url(video_path) else Path(video_path), threshold)
    write_json(Path(output), analysis)
    if audio is not None:
        from vtm.ui.speech import speak_to_wav

        speak_to_wav(analysis["video_summary"], Path(audio))
    return analysis
