"""Key frames as people see them: the video's own shape, object boxes drawn, small JPEGs.

Key frames are decoded square (what the VLM and DETR take). Boxes are reported in pixels of the source
video, so they mean the same thing whatever size the frames were decoded at; these helpers do the mapping.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from vtm.stages.detect import draw_objects

THUMBNAIL_LONG_SIDE = 480


def rescale_boxes(objects: list[dict], from_size: tuple[int, int], to_size: tuple[int, int]) -> list[dict]:
    """Objects with boxes in pixels of a (width, height) `from_size` picture -> in pixels of `to_size`."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return [
        {
            **o,
            "box": [
                round(o["box"][0] * sx, 1),
                round(o["box"][1] * sy, 1),
                round(o["box"][2] * sx, 1),
                round(o["box"][3] * sy, 1),
            ],
        }
        for o in objects
    ]


def display_frame(frame: np.ndarray, width: int, height: int, long_side: int = THUMBNAIL_LONG_SIDE) -> np.ndarray:
    """A (square-decoded) key frame of a width x height video, at its aspect ratio with long side `long_side`."""
    scale = long_side / max(width, height, 1)
    size = max(1, round(width * scale)), max(1, round(height * scale))
    return np.asarray(Image.fromarray(np.asarray(frame, np.uint8)).resize(size, Image.Resampling.BILINEAR))


def draw_source_objects(picture: np.ndarray, objects: list[dict], width: int, height: int) -> np.ndarray:
    """`picture` (any size) of a width x height video with `objects` (boxes in source pixels) drawn on it."""
    if not objects:
        return picture
    return draw_objects(picture, rescale_boxes(objects, (width, height), (picture.shape[1], picture.shape[0])))


def jpeg_bytes(image: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
