"""What describes the moments of a video, for `vtm describe` (a whole archive) and `vtm infer` (one video) alike:
the describe stage a checkpoint and the describe settings make, and the context its adapter reads for each window.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from vtm.models.llava_adapter import LanguageModelLoadError, language_model_kind
from vtm.models.trigger_model import TriggerModel
from vtm.pipeline import checkpoint as ckpt
from vtm.pipeline.checkpoint import CheckpointError
from vtm.pipeline.config import ConfigError, DescribeConfig
from vtm.stages.describe import DescribeStage
from vtm.stages.detect import DetectObjectsStage

log = logging.getLogger(__name__)


def describe_stage(checkpoint: Path | None, dc: DescribeConfig) -> tuple[DescribeStage, str]:
    """The describe stage for a checkpoint (its adapter, if it has one) and settings, and a digest of what it runs.

    Checks what can be checked without loading the model: that it exists (locally or in the Hugging Face
    cache), that it can see frames, and that it is the kind of model the adapter was trained with.
    """
    adapter, adapter_weights, kind, trained_with = None, None, "auto", None
    h = hashlib.sha256()
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        found_adapter = ckpt.adapter_files(checkpoint)
        if found_adapter is not None:
            adapter, adapter_weights = found_adapter
            kind = adapter["llm_kind"]
            trained_with = ckpt.adapter_llm_source(checkpoint)  # its own llm/ when the LLM was fine-tuned
        ckpt.update_digest(h, checkpoint)
    model = dc.model or trained_with
    if model is None:
        raise ConfigError(
            "describing needs a vision-language model: pass --model (a LLaVA checkpoint's local path or hub id), "
            "or a --checkpoint trained with an adapter (train-from-cache --llm)"
        )
    found = language_model_kind(model)  # a path that is not there, or not cached offline, fails here
    if adapter is None and found != "llava":
        raise LanguageModelLoadError(
            f"{model!r} is a text-only language model: it cannot see frames. Describe with a LLaVA model, "
            "or with a checkpoint whose adapter was trained on this model."
        )
    if adapter is not None and model != trained_with:
        if found != adapter["llm_kind"]:
            raise CheckpointError(
                f"the checkpoint's adapter was trained with the {adapter['llm_kind']} model {trained_with!r}; "
                f"{model!r} is a {found} model. "
                "Describe with the model it was trained with (leave out --model), or train an adapter for this one."
            )
        log.warning(
            "the adapter was trained with %r; describing with %r, which must be the same model", trained_with, model
        )
    detector = (
        DetectObjectsStage(model=dc.detector, threshold=dc.detector_threshold, max_batch=dc.batch_size)
        if dc.objects
        else None
    )
    h.update(
        json.dumps(
            {
                "model": model,
                "adapter": adapter is not None,
                "detector": [dc.detector, dc.detector_threshold] if dc.objects else None,
            }
        ).encode()
    )
    stage = DescribeStage(
        model=model,
        model_kind=kind,
        adapter=adapter,
        adapter_weights=adapter_weights,
        prompt=dc.prompt,
        max_new_tokens=dc.max_new_tokens,
        max_batch=dc.batch_size,
        summary=dc.summary,
        device=dc.device,
        detector=detector,
    )
    return stage, h.hexdigest()[:16]


@torch.inference_mode()
def window_context(
    model: TriggerModel, features: np.ndarray, timestamps: np.ndarray, centers: np.ndarray, batch: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """The time-aware encoder's output (k, window, d_model) and mask (k, window) around each centre sample.

    Each window is `model.config.window` samples with its centre in the middle (shifted to stay inside
    the video), as the adapter saw events during training.
    """
    model.eval()
    n, w = len(features), model.config.window
    contexts, masks = [], []
    for lo in range(0, len(centers), batch):
        starts = [int(np.clip(int(c) - w // 2, 0, max(0, n - w))) for c in centers[lo : lo + batch]]
        context, _, mask = model.forward_windows(features, timestamps, starts)
        contexts.append(context.float().cpu().numpy())
        masks.append(mask)
    d = model.config.encoder.d_model
    if not contexts:
        return np.zeros((0, w, d), np.float32), np.zeros((0, w), bool)
    return np.concatenate(contexts), np.concatenate(masks)
