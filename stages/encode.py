"""Encode decoded frames into per-frame features with a visual encoder held in memory."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from vtm.models.encoder_weights import DEFAULT_ENCODER
from vtm.stages.base import Resources, Stage, inference_mode


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but no CUDA GPU is visible; use --device cpu")
    return device


@dataclass
class EncodeStage(Stage):
    """Batch with `frames` (n, S, S, 3) uint8 -> the same batch with `features` (n, D) float16, frames dropped;
    the encode's seconds join the batch's `timing` (the decode's, when it has one)."""

    reads = ("frames",)
    optional = ("timing",)
    writes = ("features", "timing")
    drops = ("frames",)

    encoder: str = DEFAULT_ENCODER
    weights: str | None = None
    device: str = "auto"
    allow_random: bool = True  # without pretrained weights on disk, use seeded random ones
    max_batch: int | None = None  # frames per forward pass (a larger batch is split); default 64 on GPU, 16 on CPU
    threads: int | None = None  # torch CPU threads (Ray sets 1 per requested CPU by default)
    resources: Resources = Resources(cpus=1)

    def setup(self) -> None:
        t0 = time.time()  # wall clock: comparable with the driver's on the same machine
        import torch

        from vtm.models.visual_encoder import build_visual_encoder

        t1 = time.time()
        self.device = pick_device(self.device)
        if self.max_batch is None:
            # On CPU, activations of 64 frames spill out of cache: 16 encodes ~1.5x faster (bench/).
            self.max_batch = 64 if self.device.startswith("cuda") else 16
        if self.threads:
            torch.set_num_threads(self.threads)
        model, self.info = build_visual_encoder(self.encoder, self.weights, allow_random=self.allow_random)
        t2 = time.time()
        # Half precision on GPU doubles throughput; features are stored as float16 anyway.
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.model = model.to(self.device, dtype)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
        t3 = time.time()
        self._setup_timing = {"started_at": t0, "import_s": t1 - t0, "build_s": t2 - t1, "to_device_s": t3 - t2}

    def setup_timing(self) -> dict:
        """Where `setup` spent its time: torch and the model code imported, the model built with its weights, moved
        to its device (a GPU's context is made there); `started_at`: when it began (`time.time()`)."""
        return dict(self._setup_timing)

    def encoder_info(self) -> dict:
        return dataclasses.asdict(self.info)

    @inference_mode
    def __call__(self, batch: dict) -> dict:
        import torch

        t0 = time.perf_counter()
        frames = torch.from_numpy(np.array(batch["frames"]))  # a writable copy: Ray hands out read-only arrays
        t1 = time.perf_counter()
        out = [self.model(chunk.to(self.device, non_blocking=True)).cpu() for chunk in frames.split(self.max_batch)]
        features = torch.cat(out).numpy().astype(np.float16)
        timing = {**batch.get("timing", {}), "to_encoder_s": t1 - t0, "encode_s": time.perf_counter() - t1}
        return {**{k: v for k, v in batch.items() if k != "frames"}, "features": features, "timing": timing}
