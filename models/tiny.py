"""Tiny random language models saved like real checkpoints, built fully offline, for tests and the demo.

They are saved with `save_pretrained` and read back through `load_language_model`, the same code a
user's llava-hf checkpoint goes through. The tokenizer is byte-level with no merges (one token per
byte), so any text encodes without a trained vocabulary and nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIAL_TOKENS = ("<s>", "</s>", "<unk>", "<pad>", "<image>")
TEXT_HIDDEN = 64
VISION_HIDDEN = 32
LAYERS = 2
IMAGE_SIZE = 32
PATCH_SIZE = 8
# Ten times Llama's usual init: with 0.02 a random model's logits are nearly uniform whatever its input,
# so no soft token could steer it; with 0.2 a projector trained for ~100 steps visibly can.
TEXT_INIT_STD = 0.2


def make_tiny_tokenizer():
    """A byte-level tokenizer with Llama's special tokens plus LLaVA's "<image>"; BOS is added like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},  # LlavaProcessor reads tokenizer.image_token
    )


def _text_config(tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=2 * TEXT_HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=TEXT_INIT_STD,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _save_generation_config(model, tokenizer) -> None:
    # Without these, generate() warns and guesses a pad token on every call.
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id


def make_tiny_llava(path: str | Path, seed: int = 0) -> Path:
    """A LlavaForConditionalGeneration (tiny CLIP tower + tiny Llama) with its LlavaProcessor, saved to `path`."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    path = Path(path)
    tokenizer = make_tiny_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=VISION_HIDDEN,
    )
    num_patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=_text_config(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=num_patches,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    _save_generation_config(model, tokenizer)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    # "default" drops CLIP's CLS token, and num_additional_image_tokens=1 counts it: 16 image tokens.
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def make_tiny_causal_lm(path: str | Path, seed: int = 0) -> Path:
    """A LlamaForCausalLM with the same byte-level tokenizer, saved to `path` (the text-only fallback)."""
    from transformers import LlamaForCausalLM

    path = Path(path)
    tokenizer = make_tiny_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_text_config(tokenizer))
    _save_generation_config(model, tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


TINY_DETR_LABELS = {0: "person", 1: "car", 2: "dog"}


def make_tiny_detr(path: str | Path, seed: int = 0) -> Path:
    """A DetrForObjectDetection (tiny ResNet backbone, one encoder and one decoder layer) with its DetrImageProcessor,
    saved to `path`."""
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    path = Path(path)
    # DETR's default backbone is timm's resnet50 with pretrained weights: a download. A transformers
    # ResNet built from a config needs nothing.
    backbone = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", out_features=["stage2"]
    )
    config = DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=backbone,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=10,
        id2label=dict(TINY_DETR_LABELS),
        # With DETR's 0.02 every query of a random model predicts the same box and score; 0.5 spreads them.
        init_std=0.5,
    )
    torch.manual_seed(seed)
    model = DetrForObjectDetection(config)
    model.save_pretrained(path)
    DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(path)
    return path
