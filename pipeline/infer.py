"""`vtm infer`: one video, every phase in this process — no cache, no Ray.

    probe -> decode sampled frames (segments) -> encode -> learned trigger score -> select triggers
    -> decode the triggers' key frames -> describe (with the adapter's soft tokens, if trained) -> summary

`VideoTriggerModel` is a whole trained checkpoint — the visual encoder its features came from, the
trigger model, and the describer — for use from Python; `run_infer` is what the command runs. It
lives in pipeline/ rather than models/ because it composes stages, not only networks.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vtm.cache.atomic import write_json
from vtm.cache.store import CacheSettings
from vtm.models.trigger_model import TriggerModel
from vtm.pipeline.checkpoint import CheckpointError, LoadReport, load_trigger_model, read_json
from vtm.pipeline.config import DescribeConfig, resolve_device
from vtm.pipeline.describe import analysis_json, describe_stage, window_context
from vtm.stages.decode import DecodeStage, frame_statistics, probe
from vtm.stages.describe import DescribeStage, joined_summary
from vtm.stages.encode import EncodeStage
from vtm.stages.select_windows import SelectWindowsStage

log = logging.getLogger(__name__)
SEGMENT_FRAMES = 64  # sampled frames decoded and encoded at a time: memory stays flat on long videos


class VideoTriggerModel:
    """A trained checkpoint, whole: frames in, the triggered moments and their descriptions out."""

    def __init__(self, encoder: EncodeStage, trigger_model: TriggerModel, describer: DescribeStage, sample_fps: float, image_size: int, report: LoadReport | None = None):
        self.encoder, self.trigger_model, self.describer = encoder, trigger_model, describer
        self.sample_fps, self.image_size = sample_fps, image_size
        self.report = report or LoadReport()

    @classmethod
    def from_checkpoint(
        cls,
        path: Path,
        llm: str | None = None,
        device: str = "cpu",
        strict: bool = False,
        encoder_weights: str | None = None,
        describe: DescribeConfig = DescribeConfig(),
    ) -> VideoTriggerModel:
        """Load everything a checkpoint needs: the visual encoder named in its metadata (`encoder_weights`
        for a torchvision encoder whose weights are not on disk by default), the trigger model, and the
        adapter with its language model (`llm` replaces it; a checkpoint without an adapter needs one).

        A different encoder or weights than the checkpoint was trained on is reported in `.report` and
        logged; with `strict` it is an error.
        """
        path = Path(path)
        device = resolve_device(device)
        features = read_json(path, "meta.json").get("features")
        if not features:
            raise CheckpointError(f"{path} does not record the features it was trained on (meta.json has no 'features'); was it written by vtm train-from-cache?")
        encoder = EncodeStage(encoder=features["encoder"], weights=encoder_weights, device=device)  # other weights show in the digest check
        encoder.setup()
        info = encoder.info
        settings = CacheSettings(
            encoder=info.name, weights=info.weights, weights_digest=info.weights_digest, pretrained=info.pretrained,
            feature_dim=info.feature_dim, sample_fps=features["sample_fps"], image_size=features["image_size"], max_frames=None,
        )
        trigger_model, _, report = load_trigger_model(path, settings, strict=strict)
        for line in report.lines():
            log.warning("checkpoint %s", line)
        stage, _ = describe_stage(path, replace(describe, model=llm or describe.model, device=device))
        stage.setup()
        return cls(encoder, trigger_model.to(encoder.device), stage, features["sample_fps"], features["image_size"], report)

    # --- the phases ---------------------------------------------------------------------------------

    def model_inputs(self, frames: np.ndarray) -> np.ndarray:
        """Sampled frames (n, H, W, 3) uint8 -> the trigger model's per-frame inputs, as the cache would hold them."""
        frames = self._at_image_size(np.asarray(frames, np.uint8))
        features = self.encoder({"frames": frames})["features"].astype(np.float32)  # float16 out, as stored
        if not self.trigger_model.config.color_inputs:
            return features
        hist, _ = frame_statistics(frames)
        return np.concatenate([features, hist.astype(np.float16).astype(np.float32)], axis=1)

    def _at_image_size(self, frames: np.ndarray) -> np.ndarray:
        # Extract decodes straight to image_size x image_size; frames of another size are squashed the same way.
        if frames.shape[1:3] == (self.image_size, self.image_size):
            return frames
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False)
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def _analysis(
        self, inputs: np.ndarray, timestamps: np.ndarray, threshold: float, key_frames: Callable[[np.ndarray], np.ndarray], frame_index: np.ndarray, video_path: str | None
    ) -> dict:
        timestamps = np.asarray(timestamps, np.float64)
        score, _ = self.trigger_model.score_video(inputs, timestamps)
        picked = SelectWindowsStage(threshold=threshold)({"timestamps": timestamps, "score": score})
        idx = np.asarray(picked["trigger_index"], np.int64)
        descriptions: list[str] = []
        if len(idx):
            batch = {"frames": key_frames(idx)}
            if self.describer.adapter is not None:
                batch["context"], batch["mask"] = window_context(self.trigger_model, inputs, timestamps, idx)
            descriptions = self.describer(batch)["description"]
        times = [float(t) for t in picked["trigger_time"]]
        if descriptions and self.describer.summary == "llm":
            summary = self.describer.summarize({"times": times, "descriptions": descriptions, "frames_analyzed": len(timestamps)})["summary"]
        else:
            summary = joined_summary(times, descriptions, len(timestamps))
        return analysis_json(video_path, len(timestamps), times, frame_index[idx], picked["trigger_score"], descriptions, summary)

    def infer_triggered_analysis(self, frames: np.ndarray, timestamps: np.ndarray, trigger_threshold: float = 0.5) -> dict:
        """Frames sampled at the checkpoint's rate (`sample_fps`), (n, H, W, 3) uint8, with their times in
        seconds -> the analysis (`frame_index` counts the given frames; `video_path` is None)."""
        frames = np.asarray(frames, np.uint8)
        if len(frames) != len(timestamps):
            raise ValueError(f"{len(frames)} frames for {len(timestamps)} timestamps")
        return self._analysis(self.model_inputs(frames), timestamps, trigger_threshold, lambda idx: frames[idx], np.arange(len(frames)), None)

    def analyze_video(self, video_path: Path, trigger_threshold: float = 0.5, key_frame_size: int = 336) -> dict:
        """One video file: sampled and decoded in segments, so memory stays flat; key frames decoded again at
        `key_frame_size` for the describer. Raises DecodeError for a video that cannot be read."""
        plan = probe(Path(video_path), self.sample_fps)
        decode = DecodeStage(image_size=self.image_size)
        base = {"path": str(video_path), "rotation": plan.rotation, "decoder": plan.decoder}
        inputs = np.concatenate([
            self.model_inputs(decode({**base, "frame_index": plan.frame_index[s : s + SEGMENT_FRAMES]})["frames"])
            for s in range(0, len(plan.frame_index), SEGMENT_FRAMES)
        ])
        key_decode = DecodeStage(image_size=key_frame_size)
        key_frames = lambda idx: key_decode({**base, "frame_index": plan.frame_index[idx]})["frames"]  # noqa: E731
        return self._analysis(inputs, plan.timestamps, trigger_threshold, key_frames, plan.frame_index, str(video_path))


def run_infer(
    video_path: Path, checkpoint: Path, output: Path, threshold: float = 0.5, device: str = "cpu", strict: bool = False, llm: str | None = None
) -> dict:
    """`vtm infer`: analyse one video with a checkpoint and write the analysis JSON to `output`."""
    model = VideoTriggerModel.from_checkpoint(checkpoint, llm=llm, device=device, strict=strict)
    analysis = model.analyze_video(Path(video_path), threshold)
    write_json(Path(output), analysis)
    return analysis
