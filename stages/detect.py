"""Detect objects in frames with DETR, and draw what was found.

`DetectObjectsStage` runs a `DetrForObjectDetection` checkpoint (a local directory or a hub id) over
the frames of a batch; `draw_objects` paints its boxes onto a frame for the web UI, the HTML report
and the describe job. fp32 on CPU; fp16 on GPU.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from vtm.stages.base import Resources, Stage, inference_mode
from vtm.stages.encode import pick_device

DEFAULT_DETECTOR = "facebook/detr-resnet-50"
# Distinct, saturated colours that read on both dark and bright video.
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
)


class ObjectDetectorLoadError(ValueError):
    """The object detector cannot be loaded as asked; the message says what to do."""


@dataclass
class DetectObjectsStage(Stage):
    """Batch {frames (n, H, W, 3) uint8} -> + objects: per frame, a list of {label, score, box [x0, y0, x1, y1] px}.

    Each frame's objects are sorted by score, highest first, and hold at most `max_objects` with a
    score of at least `threshold`. Other keys, frames included, pass through.
    """

    reads = ("frames",)
    writes = ("objects",)

    model: str = DEFAULT_DETECTOR  # DETR checkpoint: local directory or hub id
    threshold: float = 0.7  # lowest score kept
    max_objects: int = 20  # per frame
    max_batch: int = 8  # frames per forward pass; a larger batch is split
    device: str = "auto"
    resources: Resources = Resources(cpus=1)

    def setup(self) -> None:
        import torch
        from transformers import AutoConfig, DetrForObjectDetection, DetrImageProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a worker's weight-loading bar would cut through the job's own
        self.device = pick_device(self.device)
        try:
            config = AutoConfig.from_pretrained(self.model)
            if config.model_type != "detr":
                # Checked first: DETR built from another model's config would be a random resnet50 DETR.
                raise ValueError(f"it holds a {config.model_type!r} model, not DETR")
            model = DetrForObjectDetection.from_pretrained(self.model, config=config)
            self.processor = DetrImageProcessor.from_pretrained(self.model)
        except (OSError, ValueError) as e:
            raise ObjectDetectorLoadError(
                f"cannot load object detector {self.model!r}: {str(e).splitlines()[0][:200].rstrip('.')}. Pass a "
                "local directory saved with "
                "save_pretrained (DetrForObjectDetection and DetrImageProcessor), or a hub id reachable from this "
                "machine "
                "(or downloaded once elsewhere with `hf download <id>`, with HF_HOME set to that cache)."
            ) from e
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.detector = model.to(self.device, self.dtype).eval()
        self.labels = model.config.id2label
        # resize and normalise where the model runs: on a GPU, 2.7x the frames/s (bench/)
        self.preprocess_device = self.device

    @inference_mode
    def __call__(self, batch: dict) -> dict:
        frames = np.asarray(batch["frames"])
        objects: list[list[dict]] = []
        for lo in range(0, len(frames), self.max_batch):
            objects += self._detect(list(frames[lo : lo + self.max_batch]))
        return {**batch, "objects": objects}

    def _detect(self, images: list[np.ndarray]) -> list[list[dict]]:
        inputs = self.processor(images=images, return_tensors="pt", device=self.preprocess_device)
        outputs = self.detector(
            pixel_values=inputs["pixel_values"].to(self.device, self.dtype),
            pixel_mask=inputs["pixel_mask"].to(self.device),
        )
        # Post-process in fp32: fp16 softmax scores would round to steps of ~5e-4 near 1.
        outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
        sizes = [image.shape[:2] for image in images]
        found = self.processor.post_process_object_detection(outputs, threshold=self.threshold, target_sizes=sizes)
        return [self._objects(result, height, width) for result, (height, width) in zip(found, sizes)]

    def _objects(self, result: dict, height: int, width: int) -> list[dict]:
        scores, order = result["scores"].cpu().sort(descending=True)
        keep = order[: self.max_objects]
        # DETR's boxes are centre and size, so a corner can fall outside the frame: clip it back in.
        boxes = result["boxes"].cpu()[keep].clamp(min=0)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(max=width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(max=height)
        labels = result["labels"].cpu()[keep]
        return [
            {
                "label": self.labels[int(label)],
                "score": round(float(score), 4),
                "box": [round(float(v), 1) for v in box],
            }
            for label, score, box in zip(labels, scores[: self.max_objects], boxes)
        ]


def label_colour(label: str) -> tuple[int, int, int]:
    """The label's palette colour; crc32 (not hash(), which changes per process) keeps it the same in every frame and
    run."""
    return PALETTE[zlib.crc32(label.encode()) % len(PALETTE)]


def draw_objects(frame: np.ndarray, objects: list[dict]) -> np.ndarray:
    """A copy of `frame` (H, W, 3) uint8 with each object's box outlined and a "label 0.93" tag above it."""
    from PIL import Image, ImageDraw, ImageFont

    if not objects:
        return frame.copy()
    image = Image.fromarray(np.array(frame, np.uint8))  # always a copy: the caller's frame stays as it was
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    height, width = frame.shape[:2]
    for obj in objects:
        colour = label_colour(obj["label"])
        x0, y0, x1, y1 = (int(round(v)) for v in obj["box"])
        x0, x1 = sorted((min(max(x0, 0), width - 1), min(max(x1, 0), width - 1)))
        y0, y1 = sorted((min(max(y0, 0), height - 1), min(max(y1, 0), height - 1)))
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=2)
        text = f"{obj['label']} {obj['score']:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tag_w, tag_h = right - left + 4, bottom - top + 2
        # Above the box where there is room, else just inside its top; never past the right edge.
        tx = max(0, min(x0, width - tag_w))
        ty = y0 - tag_h if y0 >= tag_h else y0
        draw.rectangle((tx, ty, tx + tag_w - 1, ty + tag_h - 1), fill=colour)
        text_colour = (0, 0, 0) if sum(colour) > 400 else (255, 255, 255)  # dark text on light colours
        draw.text((tx + 2 - left, ty + 1 - top), text, fill=text_colour, font=font)
    return np.asarray(image).copy()
