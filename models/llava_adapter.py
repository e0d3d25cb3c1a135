"""The LLaVA adapter: the time-aware encoder's window vectors -> a few soft tokens a language model reads.

Training never decodes video, so the language model sees the soft tokens inside a text prompt and learns
(through the projector, and LoRA if asked) to write the annotated description; the base model stays frozen.
At describe time a LLaVA model also gets the key frame through its own image path, beside the soft tokens.

The prompt holds one `<video>` placeholder. The prompt is tokenized in two pieces around it and the soft
tokens are spliced between the pieces' embeddings, so no token is added to the vocabulary and the frozen
embedding table stays as it was. The same code serves a LLaVA checkpoint and a plain causal LM (the
text-only fallback): both read `inputs_embeds`.
"""

from __future__ import annotations

import torch
from torch import nn

from vtm.models.configs import LLM_KINDS, VIDEO_PLACEHOLDER, AdapterConfig, check_prompt

IGNORE_INDEX = -100  # positions the LM loss skips (Hugging Face's convention)


class LanguageModelLoadError(RuntimeError):
    """The language model cannot be loaded as asked; the message says what to do."""


class SoftTokenProjector(nn.Module):
    """(B, T, input_dim) window vectors [+ mask (B, T), True where a frame is real] -> (B, k, llm_hidden).

    k learned queries each attend over the window's frames, so each soft token can pick a different
    moment of it; an MLP then maps the pooled vectors into the LLM's embedding space.
    """

    def __init__(self, input_dim: int, llm_hidden: int, num_tokens: int = 4, hidden_dim: int = 512):
        super().__init__()
        self.norm = nn.LayerNorm(input_dim)
        self.keys = nn.Linear(input_dim, hidden_dim)
        self.values = nn.Linear(input_dim, hidden_dim)
        self.queries = nn.Parameter(torch.randn(num_tokens, hidden_dim) / hidden_dim**0.5)
        self.out = nn.Sequential(
            nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, llm_hidden)
        )

    def forward(self, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(context.to(self.queries.dtype))
        scores = torch.einsum("kd,btd->bkt", self.queries, self.keys(x)) / self.queries.shape[-1] ** 0.5
        if mask is not None:
            mask = mask.bool() | ~mask.bool().any(dim=1, keepdim=True)  # an all-padding window would give NaN
            scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        return self.out(scores.softmax(dim=-1) @ self.values(x))


def language_model_kind(name_or_path: str, kind: str = "auto") -> str:
    """ "llava" or "causal_lm" for a checkpoint, read from its config alone (cheap: no weights are loaded)."""
    from transformers import AutoConfig

    if kind not in LLM_KINDS:
        raise ValueError(f"language model kind must be one of {LLM_KINDS}, got {kind!r}")
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise LanguageModelLoadError(
            f"cannot load language model {name_or_path!r}: it is neither a local directory saved with save_pretrained "
            f"nor a model in the Hugging Face cache ({str(e).splitlines()[0][:200]}). Give a local path, or "
            "download it "
            f"once on a machine with network access (`hf download {name_or_path}`) and set HF_HOME to that cache."
        ) from e
    if kind == "auto":
        kind = "llava" if config.model_type == "llava" else "causal_lm"
    if kind == "llava" and config.model_type != "llava":
        raise LanguageModelLoadError(
            f"{name_or_path!r} is a {config.model_type!r} model, not LLaVA; use kind='causal_lm' for a text-only model"
        )
    return kind


def load_language_model(
    name_or_path: str, kind: str = "auto", dtype: torch.dtype | str | None = None, device: str | torch.device = "cpu"
):
    """A LLaVA checkpoint (-> model, LlavaProcessor) or any causal LM (-> model, tokenizer), by local path or hub id.

    kind "auto" picks "llava" when the checkpoint's model_type is llava. Nothing is downloaded unless the
    Hugging Face hub is reachable and HF_HUB_OFFLINE is unset; dtype None keeps the library's default.
    """
    from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer, LlavaForConditionalGeneration

    kind = language_model_kind(name_or_path, kind)
    kwargs = {} if dtype is None else {"dtype": dtype}
    try:
        if kind == "llava":
            model = LlavaForConditionalGeneration.from_pretrained(name_or_path, **kwargs)
            processor = AutoProcessor.from_pretrained(name_or_path)
        else:
            model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
            processor = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise LanguageModelLoadError(
            f"cannot load {kind} model {name_or_path!r}: {str(e).splitlines()[0][:300]}"
        ) from e
    return model.to(device).eval(), processor


def _lora_targets(model: nn.Module, names: tuple[str, ...]) -> list[str]:
    # Full module names inside the language model only: LLaVA's CLIP tower has q_proj/v_proj too,
    # and LoRA there would change the image path the checkpoint was trained with.
    skip = ("vision_tower", "multi_modal_projector")
    return [n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] in names and not any(s in n for s in skip)]


class VideoLanguageAdapter(nn.Module):
    """Projector + frozen language model (+ LoRA) + its tokenizer or processor.

    `context` is the time-aware encoder's output (B, T, input_dim) with its mask (B, T), True where real.
    """

    def __init__(self, config: AdapterConfig, language_model: nn.Module, processor):
        super().__init__()
        if config.input_dim is None:
            raise ValueError("AdapterConfig.input_dim is not set (the time-aware encoder's d_model)")
        self.config = config
        self.is_llava = getattr(language_model.config, "model_type", None) == "llava"
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        language_model.requires_grad_(False)
        if config.lora_rank > 0:
            from peft import LoraConfig, inject_adapter_in_model

            targets = _lora_targets(language_model, config.lora_target_modules)
            if not targets:
                raise ValueError(f"no module named {config.lora_target_modules} in the language model for LoRA")
            lora = LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=targets,
            )
            # In place, so the model keeps its own class (and generate); only the LoRA weights train.
            language_model = inject_adapter_in_model(lora, language_model)
            for name, p in language_model.named_parameters():
                p.requires_grad_(".lora_" in name)
                if ".lora_" in name:
                    p.data = p.data.float()  # in a bf16/fp16 model, AdamW's small updates would round away
        self.language_model = language_model
        embeddings = language_model.get_input_embeddings()
        self.projector = SoftTokenProjector(
            config.input_dim, embeddings.embedding_dim, config.num_soft_tokens, config.hidden_dim
        )
        self.projector.to(embeddings.weight.device)
        self._gradient_checkpointing = False
        self.eval()  # as from_pretrained: new LoRA layers would otherwise stay in train mode (dropout)

    @classmethod
    def load(
        cls, config: AdapterConfig, name_or_path: str, kind: str = "auto", dtype=None, device="cpu"
    ) -> VideoLanguageAdapter:
        model, processor = load_language_model(name_or_path, kind=kind, dtype=dtype, device=device)
        return cls(config, model, processor)

    @property
    def kind(self) -> str:
        return "llava" if self.is_llava else "causal_lm"

    @property
    def gradient_checkpointing(self) -> bool:
        return self._gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, enabled: bool) -> None:
        # Same switch as the time-aware encoder's; the LM recomputes its layers in backward (train mode only).
        if enabled:
            self.language_model.activation_checkpointing_enable({"use_reentrant": False})
        elif self._gradient_checkpointing:
            self.language_model.activation_checkpointing_disable()
        self._gradient_checkpointing = bool(enabled)

    # --- building the LM's input ------------------------------------------------------------------

    def _ids(self, text: str | list[str], bos: bool) -> list:
        return self.tokenizer(text, add_special_tokens=bos)["input_ids"]

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    def _prefix(self, before: str, after: str, batch: int, images) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token ids of the prompt before the soft tokens (B, L), and LLaVA's pixel values when images are given."""
        image_token = getattr(self.processor, "image_token", None)
        if image_token and (image_token in after or (images is None and image_token in before)):
            raise ValueError(f"{image_token} in the prompt needs images, and must come before {VIDEO_PLACEHOLDER}")
        if images is None:
            return torch.tensor([self._ids(before, bos=True)] * batch), None
        if not self.is_llava:
            raise ValueError(
                "images need a LLaVA checkpoint; this language model is text-only "
                f"({type(self.language_model).__name__})"
            )
        if len(images) != batch:
            raise ValueError(f"{len(images)} images for {batch} windows")
        # The key frame sits just before the soft tokens, unless the prompt places <image> itself.
        text = before if image_token in before else before + image_token + "\n"
        # The processor expands <image> to as many tokens as the vision tower gives patches.
        inputs = self.processor(images=list(images), text=[text] * batch, return_tensors="pt")
        return inputs["input_ids"], inputs["pixel_values"]

    def _inputs(self, context, mask, prompt, images=None, texts=None) -> dict:
        """inputs_embeds, attention_mask (and labels when texts are given, pixel_values when images are)."""
        check_prompt(prompt)
        batch = context.shape[0]
        embed = self.language_model.get_input_embeddings()
        device = embed.weight.device
        before, after = prompt.split(VIDEO_PLACEHOLDER)
        prefix_ids, pixel_values = self._prefix(before, after, batch, images)
        soft = self.projector(context.to(device), None if mask is None else mask.to(device)).to(embed.weight.dtype)
        after_ids = self._ids(after, bos=False)
        if texts is None:
            rest = [after_ids] * batch
        else:
            if len(texts) != batch:
                raise ValueError(f"{len(texts)} descriptions for {batch} windows")
            # Prompt end and description tokenized together, as the model will see them in generate.
            sep = "" if after[-1:].isspace() else " "
            rest = [
                ids + [self.tokenizer.eos_token_id]
                for ids in self._ids([after + sep + t.strip() for t in texts], bos=False)
            ]
        width = max(len(ids) for ids in rest)
        rest_ids = torch.full((batch, width), self._pad_id())
        rest_mask = torch.zeros(batch, width, dtype=torch.long)
        for i, ids in enumerate(rest):
            rest_ids[i, : len(ids)] = torch.tensor(ids)
            rest_mask[i, : len(ids)] = 1
        head = prefix_ids.shape[1] + soft.shape[1]
        out = {
            "inputs_embeds": torch.cat([embed(prefix_ids.to(device)), soft, embed(rest_ids.to(device))], dim=1),
            "attention_mask": torch.cat([torch.ones(batch, head, dtype=torch.long), rest_mask], dim=1).to(device),
        }
        if texts is not None:
            labels = rest_ids.masked_fill(rest_mask == 0, IGNORE_INDEX)
            labels[:, : len(after_ids)] = IGNORE_INDEX  # the loss is on the description (and its EOS) only
            out["labels"] = torch.cat([torch.full((batch, head), IGNORE_INDEX), labels], dim=1).to(device)
        if pixel_values is not None:
            # LLaVA finds its image slots in inputs_embeds by the <image> embedding and fills them itself.
            out["pixel_values"] = pixel_values.to(device, embed.weight.dtype)
        return out

    # --- training and describing ------------------------------------------------------------------

    def loss(self, context: torch.Tensor, texts: list[str], mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean LM loss over the description tokens; prompt and soft tokens are not scored."""
        inputs = self._inputs(context, mask, self.config.prompt, texts=texts)
        return self.language_model(**inputs, use_cache=False).loss

    @torch.no_grad()
    def generate(
        self, context: torch.Tensor, mask: torch.Tensor | None = None, images=None, prompt: str | None = None
    ) -> list[str]:
        """One greedy description per window. `images`: one key frame per window (PIL / HWC uint8), LLaVA only."""
        inputs = self._inputs(context, mask, prompt or self.config.prompt, images=images)
        # Every row has the same prompt and as many soft tokens, so no row needs padding. With only
        # inputs_embeds, generate returns just the new tokens.
        new_tokens = self.language_model.generate(
            **inputs,
            max_new_tokens=self.config.max_new_tokens,
            do_sample=False,
            pad_token_id=self._pad_id(),
            eos_token_id=self.tokenizer.eos_token_id,
        )
        return [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    # --- checkpoints: only what trains -------------------------------------------------------------

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Projector and LoRA weights, never the frozen base model."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("projector.") or ".lora_" in k}

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        expected = set(self.trainable_state_dict())
        missing, unexpected = expected - set(state_dict), set(state_dict) - expected
        if missing or unexpected:
            raise ValueError(
                f"adapter weights do not fit this adapter (different num_soft_tokens, lora_rank or language model?): "
                f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
            )
        self.load_state_dict(state_dict, strict=False)
