"""What one frame costs on a GPU: the visual encoder (every sampled frame) against DETR and a LLaVA-1.5-7B
(only the triggered frames) — why vtm sends only triggered frames to the big models.

    python bench/bench_models_gpu.py        # needs a CUDA GPU with ~20 GB free; ~3 minutes

Full-size models with random weights (nothing is downloaded; the compute is the same as the trained
models'): `EncodeStage` (efficientnet_lite0, fp16, batch 64), `DetectObjectsStage` (DETR-ResNet-50,
fp16, batch 8, 800 px as DETR's processor resizes) and LLaVA-1.5-7B's architecture (CLIP ViT-L/14-336
+ a 7B Llama, bf16) generating 64 new tokens per frame in batches of 8 (random weights never stop
early, so every description is full length). Prints frames/s of each and the cost per frame
relative to the encoder, measured in the same run.
"""

import json
import sys
import tempfile
import time

import numpy as np
import torch


def rate(fn, n_frames: int, reps: int = 3) -> float:
    fn()  # warm-up: cuDNN autotune, allocator
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return n_frames / float(np.median(times))


def encoder_rate() -> float:
    from vtm.stages.encode import EncodeStage

    stage = EncodeStage(device="cuda")
    stage.setup()
    frames = np.random.default_rng(0).integers(0, 255, (1024, 224, 224, 3), dtype=np.uint8)
    return rate(lambda: stage({"frames": frames}), len(frames))


def detr_rate() -> float:
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor

    from vtm.stages.detect import DetectObjectsStage

    with tempfile.TemporaryDirectory() as d:
        DetrForObjectDetection(DetrConfig(use_pretrained_backbone=False)).save_pretrained(d)  # DETR-ResNet-50, random
        DetrImageProcessor().save_pretrained(d)
        stage = DetectObjectsStage(model=d, device="cuda", threshold=0.0)
        stage.setup()
    frames = np.random.default_rng(0).integers(0, 255, (64, 336, 336, 3), dtype=np.uint8)
    on_gpu = rate(lambda: stage({"frames": frames}), len(frames))
    stage.preprocess_device = "cpu"  # the baseline: DETR's processor resizing and normalising on the CPU
    on_cpu = rate(lambda: stage({"frames": frames}), len(frames))
    return on_gpu, on_cpu


def llava_rate(batch: int = 8, new_tokens: int = 64) -> float:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
    )
    text = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        vocab_size=32064,
        max_position_embeddings=4096,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=32000,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlavaForConditionalGeneration(config).eval()
    torch.set_default_dtype(torch.float32)
    n_image_tokens = (336 // 14) ** 2
    prompt = torch.randint(2, 31999, (batch, 20), device="cuda")
    ids = torch.cat(
        [
            torch.ones(batch, 1, dtype=torch.long, device="cuda"),
            torch.full((batch, n_image_tokens), 32000, device="cuda"),
            prompt,
        ],
        1,
    )
    pixels = torch.randn(batch, 3, 336, 336, device="cuda", dtype=torch.bfloat16)

    def run():
        with torch.inference_mode():
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pixel_values=pixels,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )

    return rate(run, batch, reps=2)


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("bench_models_gpu.py needs a CUDA GPU")
    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    res["encoder_frames_per_s"] = encoder_rate()
    res["detr_frames_per_s"], res["detr_cpu_preprocessing_frames_per_s"] = detr_rate()
    res["detr_gpu_preprocessing_speedup"] = res["detr_frames_per_s"] / res["detr_cpu_preprocessing_frames_per_s"]
    res["llava7b_frames_per_s"] = llava_rate()
    res["detr_cost_per_frame_vs_encoder"] = res["encoder_frames_per_s"] / res["detr_frames_per_s"]
    res["llava7b_cost_per_frame_vs_encoder"] = res["encoder_frames_per_s"] / res["llava7b_frames_per_s"]
    print(json.dumps(res, indent=1))
