"""Describe windows with a vision-language model: one description per window, windows batched together.

Two paths, picked by what the checkpoint holds:

- **plain LLaVA** (no trained adapter): each window's key frame and the prompt go through LLaVA's own
  processor and `generate`, the way LLaVA was trained. (Not `VideoLanguageAdapter` with no soft
  tokens: its projector needs at least one, and an untrained projector would only feed the model noise.)
- **with a trained adapter**: the time-aware encoder's output for the window becomes soft tokens beside
  the key frame (`VideoLanguageAdapter.generate`), as in training. An adapter trained on a text-only
  causal LM sees the soft tokens only.

With a `detector`, each key frame also goes through DETR (`objects` per window), on the same worker:
the frames are already there, and the GPU holding the VLM has room for it.

Every window of a batch has the same prompt and a key frame of the same size, so no row needs padding
and one `generate` call serves the whole batch. fp32 on CPU; bf16 (or fp16 where bf16 is missing) on GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vtm.models.configs import VIDEO_PLACEHOLDER, AdapterConfig
from vtm.stages.base import Resources, Stage, inference_mode
from vtm.stages.detect import DetectObjectsStage
from vtm.stages.encode import pick_device

if TYPE_CHECKING:
    import torch

IMAGE_TOKEN = "<image>"
DEFAULT_QUESTION = "Describe what happens in this picture."
SUMMARY_QUESTION = "Summarize what happens in the video in one or two sentences."
SUMMARY_MODES = ("llm", "join")


def plain_prompt(prompt: str | None) -> str:
    """The LLaVA prompt for a question, or the prompt itself when it is already a full template."""
    prompt = prompt or DEFAULT_QUESTION
    if IMAGE_TOKEN in prompt:
        return prompt
    if VIDEO_PLACEHOLDER in prompt:  # a prompt written for the adapter: the key frame takes the soft tokens' place
        return prompt.replace(VIDEO_PLACEHOLDER, IMAGE_TOKEN)
    return f"USER: {IMAGE_TOKEN}\n{prompt} ASSISTANT:"


def adapter_prompt(prompt: str | None, trained: str) -> str:
    """The adapter's prompt: the one it was trained with, a question put in the same template, or a full template."""
    if not prompt:
        return trained
    if VIDEO_PLACEHOLDER in prompt:
        return prompt
    return f"USER: {VIDEO_PLACEHOLDER}\n{prompt} ASSISTANT:"


def clean_text(text: str) -> str:
    """Generated text without control characters (a NUL or escape code in a description breaks JSON
    readers, subtitles and terminals downstream); line breaks and tabs stay."""
    return "".join(ch for ch in text if ch.isprintable() or ch in "\n\t").strip()


def joined_summary(times: list[float], descriptions: list[str], frames_analyzed: int) -> str:
    """A deterministic summary: the descriptions in time order (what the LLM summary falls back to)."""
    if not descriptions:
        return f"No triggers detected in {frames_analyzed} sampled frames."
    return " | ".join(f"{t:.1f} s: {d}" for t, d in zip(times, descriptions))


def _gpu_dtype() -> torch.dtype:
    import torch

    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass
class DescribeStage(Stage):
    """Batch {frames (n, H, W, 3) uint8 key frames [, context (n, T, D), mask (n, T)]} -> + description (n strings)
    [+ objects (n lists, with a detector)].

    `context`/`mask` (the time-aware encoder's output for each window) are needed when the stage has
    an adapter and ignored otherwise. Other keys pass through; `vlm_seconds` is the generation time.
    """

    reads = ("frames",)
    optional = ("context", "mask", "objects")  # context and mask with an adapter; objects written with a detector
    writes = ("description", "vlm_seconds")
    drops = ("frames", "context", "mask")

    model: str  # LLaVA path or hub id (with an adapter: the language model it was trained with)
    model_kind: str = "auto"  # auto | llava | causal_lm
    adapter: dict | None = None  # AdapterConfig fields, from the checkpoint's config.json
    adapter_weights: str | None = None  # the checkpoint's adapter.safetensors
    prompt: str | None = None  # a question, or a full template; None: the adapter's trained prompt / DEFAULT_QUESTION
    max_new_tokens: int = AdapterConfig.max_new_tokens
    max_batch: int = 8  # windows per generate call; a larger batch is split
    summary: str = "llm"  # llm: one more generate call over the descriptions | join: the descriptions joined
    device: str = "auto"
    detector: DetectObjectsStage | None = None  # also find objects in each key frame (DETR), on the same device
    threads: int | None = None  # torch CPU threads (Ray gives an actor one per CPU it asked for)
    resources: Resources = Resources(cpus=1)

    def __post_init__(self):
        if self.summary not in SUMMARY_MODES:
            raise ValueError(f"summary must be one of {SUMMARY_MODES}, got {self.summary!r}")
        if (self.adapter is None) != (self.adapter_weights is None):
            raise ValueError("adapter and adapter_weights go together (both from a checkpoint with an adapter)")

    def setup(self) -> None:
        import torch
        from transformers.utils import logging as hf_logging

        from vtm.models.llava_adapter import LanguageModelLoadError, VideoLanguageAdapter, load_language_model

        hf_logging.disable_progress_bar()  # a worker's weight-loading bar would cut through the job's own
        if self.threads:
            torch.set_num_threads(self.threads)
        self.device = pick_device(self.device)
        dtype = _gpu_dtype() if self.device.startswith("cuda") else torch.float32
        if self.adapter is not None:
            from safetensors.torch import load_file

            fields = {k: v for k, v in self.adapter.items() if k in AdapterConfig.__dataclass_fields__}
            config = AdapterConfig(**{**fields, "max_new_tokens": self.max_new_tokens})
            self.vlm = VideoLanguageAdapter.load(
                config, self.model, kind=self.model_kind, dtype=dtype, device=self.device
            )
            try:
                self.vlm.load_trainable_state_dict(load_file(self.adapter_weights))
            except ValueError as e:
                raise LanguageModelLoadError(
                    f"the checkpoint's adapter does not fit {self.model!r}: {e}. Describe with the language model "
                    "it was trained with."
                ) from e
            self.vlm.projector.to(dtype)
            self.language_model, self.tokenizer = self.vlm.language_model, self.vlm.tokenizer
            self.full_prompt = adapter_prompt(self.prompt, config.prompt)
        else:
            self.language_model, self.processor = load_language_model(
                self.model, kind=self.model_kind, dtype=dtype, device=self.device
            )
            if getattr(self.language_model.config, "model_type", None) != "llava":
                raise LanguageModelLoadError(
                    f"{self.model!r} is a text-only language model: it cannot see frames. Describe with a LLaVA "
                    "model (--model), "
                    "or with a checkpoint whose adapter was trained on this model (--checkpoint)."
                )
            self.tokenizer = self.processor.tokenizer
            self.full_prompt = plain_prompt(self.prompt)
        self.tokenizer.padding_side = "left"  # generation continues each row from its right end
        self.dtype = dtype
        if self.detector is not None:
            self.detector.device = self.device
            self.detector.setup()

    def model_info(self) -> dict:
        """What the describe workers run; the driver calls this first, so a model that cannot load fails early."""
        return {
            "model": self.model,
            "adapter": self.adapter is not None,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "prompt": self.full_prompt,
            "detector": self.detector.model if self.detector is not None else None,
        }

    @inference_mode
    def __call__(self, batch: dict) -> dict:
        import torch

        # A writable copy: arrays from Ray's object store are read-only, and torch warns about those on every run.
        frames = np.array(batch["frames"])
        started = time.perf_counter()
        descriptions: list[str] = []
        for lo in range(0, len(frames), self.max_batch):
            hi = min(lo + self.max_batch, len(frames))
            images = [frames[i] for i in range(lo, hi)]
            if self.adapter is None:
                descriptions += self._generate_plain(images)
            else:
                if "context" not in batch:
                    raise ValueError(
                        "this describe stage has an adapter: each window needs its context (the time-aware "
                        "encoder's output)"
                    )
                context = torch.tensor(np.asarray(batch["context"][lo:hi], np.float32))
                mask = torch.tensor(np.asarray(batch["mask"][lo:hi], bool))
                descriptions += [
                    clean_text(t)
                    for t in self.vlm.generate(
                        context, mask, images=images if self.vlm.is_llava else None, prompt=self.full_prompt
                    )
                ]
        out = {k: v for k, v in batch.items() if k not in ("frames", "context", "mask")}
        out = {**out, "description": descriptions, "vlm_seconds": time.perf_counter() - started}
        if self.detector is not None:
            out["objects"] = self.detector({"frames": frames})["objects"]
        return out

    def _generate_plain(self, images: list[np.ndarray]) -> list[str]:
        inputs = self.processor(images=images, text=[self.full_prompt] * len(images), return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        out = self.language_model.generate(
            **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, **self._special_ids()
        )
        return [
            clean_text(t)
            for t in self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        ]

    def _special_ids(self) -> dict:
        pad = self.tokenizer.pad_token_id
        return {
            "pad_token_id": self.tokenizer.eos_token_id if pad is None else pad,
            "eos_token_id": self.tokenizer.eos_token_id,
        }

    # --- the video summary ------------------------------------------------------------------------

    @inference_mode
    def summarize(self, batch: dict) -> dict:
        """Batch {times, descriptions, frames_analyzed} of one video -> {summary, vlm_seconds}.

        With summary "llm", one text-only call of the same language model over the timed descriptions
        (as many as fit its context, evenly spread); with none to summarize, or "join", the joined text.
        """
        import torch

        times, descriptions = list(batch["times"]), list(batch["descriptions"])
        if self.summary == "join" or not descriptions:
            return {"summary": joined_summary(times, descriptions, batch.get("frames_analyzed", 0)), "vlm_seconds": 0.0}
        started = time.perf_counter()
        ids = self._summary_ids(times, descriptions)
        input_ids = torch.tensor([ids], device=self.device)
        out = self.language_model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            **self._special_ids(),
        )
        text = clean_text(self.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))
        # An empty summary (the model stopped at once) would leave the video without one: fall back to the joined
        # descriptions.
        return {
            "summary": text or joined_summary(times, descriptions, batch.get("frames_analyzed", 0)),
            "vlm_seconds": time.perf_counter() - started,
        }

    def _summary_ids(self, times: list[float], descriptions: list[str]) -> list[int]:
        config = self.language_model.config
        context = getattr(getattr(config, "text_config", config), "max_position_embeddings", None) or 4096
        budget = context - self.max_new_tokens
        lines = [f"{t:.1f} s: {' '.join(d.split())}" for t, d in zip(times, descriptions)]
        # Fewer lines, evenly spread over the video, until the prompt fits the model's context.
        for keep in range(len(lines), 0, -1):
            picked = (
                [lines[i] for i in np.linspace(0, len(lines) - 1, keep).round().astype(int)]
                if keep < len(lines)
                else lines
            )
            text = (
                "USER: These are descriptions of moments in one video, with their times:\n"
                + "\n".join(picked)
                + f"\n{SUMMARY_QUESTION} ASSISTANT:"
            )
            ids = self.tokenizer(text)["input_ids"]
            if len(ids) <= budget:
                return ids
        return ids[-budget:]  # one description alone is too long: keep its end, which holds the question
