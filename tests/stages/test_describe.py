import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vtm.models.configs import AdapterConfig
from vtm.models.llava_adapter import LanguageModelLoadError, VideoLanguageAdapter
from vtm.models.tiny import make_tiny_causal_lm, make_tiny_llava
from vtm.stages.describe import DescribeStage, adapter_prompt, clean_text, joined_summary, plain_prompt

D_MODEL = 16


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # ops this small are dominated by thread start-up on a busy 2-core machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return str(make_tiny_llava(tmp_path_factory.mktemp("lm") / "llava"))


@pytest.fixture(scope="module")
def plain(llava):
    stage = DescribeStage(model=llava, max_new_tokens=8, max_batch=2, device="cpu")
    stage.setup()
    return stage


@pytest.fixture(scope="module")
def with_adapter(llava, tmp_path_factory):
    """A describe stage with an adapter, from the files a checkpoint holds (config fields + adapter.safetensors)."""
    config = AdapterConfig(input_dim=D_MODEL, num_soft_tokens=2, hidden_dim=32, max_new_tokens=8)
    torch.manual_seed(0)
    adapter = VideoLanguageAdapter.load(config, llava)
    weights = tmp_path_factory.mktemp("ckpt") / "adapter.safetensors"
    save_file({k: v.contiguous() for k, v in adapter.trainable_state_dict().items()}, str(weights))
    fields = dataclasses.asdict(dataclasses.replace(config, llm=llava, llm_kind="llava"))
    stage = DescribeStage(
        model=llava,
        model_kind="llava",
        adapter=fields,
        adapter_weights=str(weights),
        max_new_tokens=8,
        max_batch=2,
        device="cpu",
    )
    stage.setup()
    return stage, adapter


def _frames(n=3, size=48):
    return np.stack([np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8) for i in range(n)])


def _context(n=3, t=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    mask = np.ones((n, t), bool)
    mask[0, 4:] = False
    return torch.randn(n, t, D_MODEL, generator=g).numpy(), mask


def test_plain_llava_describes_each_key_frame_and_batching_agrees_with_one_at_a_time(plain):
    frames = _frames(5)
    out = plain({"frames": frames, "key": ["a", "b", "c", "d", "e"]})
    assert len(out["description"]) == 5 and all(isinstance(d, str) for d in out["description"])
    assert out["key"] == ["a", "b", "c", "d", "e"] and "frames" not in out and out["vlm_seconds"] > 0
    one_by_one = [plain({"frames": frames[i : i + 1]})["description"][0] for i in range(5)]
    assert out["description"] == one_by_one  # batches of 2 (plus a rest of 1) give the same text as batches of 1
    assert plain({"frames": frames[::-1]})["description"] == out["description"][::-1]  # each frame reaches its own row


def test_the_adapter_path_uses_the_windows_context_beside_the_key_frame(with_adapter):
    stage, adapter = with_adapter
    frames = _frames(3)
    context, mask = _context()
    out = stage({"frames": frames, "context": context, "mask": mask})["description"]
    expected = [
        clean_text(t)
        for t in adapter.generate(
            torch.from_numpy(context), torch.from_numpy(mask), images=list(frames), prompt=stage.full_prompt
        )
    ]
    assert out == expected
    other, _ = _context(seed=7)
    assert stage({"frames": frames, "context": other, "mask": mask})["description"] != out
    with pytest.raises(ValueError, match="context"):
        stage({"frames": frames})


def test_adapter_weights_for_another_model_are_refused(llava, tmp_path):
    weights = tmp_path / "adapter.safetensors"
    save_file({"projector.bogus": torch.zeros(2)}, str(weights))
    fields = dataclasses.asdict(AdapterConfig(input_dim=D_MODEL, hidden_dim=32))
    stage = DescribeStage(model=llava, adapter=fields, adapter_weights=str(weights), device="cpu")
    with pytest.raises(LanguageModelLoadError, match="does not fit"):
        stage.setup()


def test_a_text_only_model_cannot_describe_frames_without_an_adapter(tmp_path):
    stage = DescribeStage(model=str(make_tiny_causal_lm(tmp_path / "causal")), device="cpu")
    with pytest.raises(LanguageModelLoadError, match="cannot see frames"):
        stage.setup()


def test_summary_fits_the_models_context_and_falls_back_to_a_join(plain):
    times = [float(t) for t in range(60)]
    long = [f"a long description of moment {i} " * 3 for i in range(60)]  # byte-level tokens: far past 512 positions
    out = plain.summarize({"times": times, "descriptions": long, "frames_analyzed": 200})
    assert isinstance(out["summary"], str) and out["vlm_seconds"] > 0
    assert (
        plain.summarize({"times": [], "descriptions": [], "frames_analyzed": 9})["summary"]
        == "No triggers detected in 9 sampled frames."
    )
    joined = dataclasses.replace(plain, summary="join")
    assert joined.summarize({"times": [1.0, 2.5], "descriptions": ["a", "b"]})["summary"] == "1.0 s: a | 2.5 s: b"
    assert joined_summary([1.0], ["x"], 3) == "1.0 s: x"


def test_generated_text_loses_control_characters_but_keeps_lines():
    assert (
        clean_text(" a red\x00 car\x1b[31m enters\nthen \ufffdleaves\t ") == "a red car[31m enters\nthen \ufffdleaves"
    )


def test_prompts():
    assert plain_prompt(None) == "USER: <image>\nDescribe what happens in this picture. ASSISTANT:"
    assert plain_prompt("What changed?") == "USER: <image>\nWhat changed? ASSISTANT:"
    assert plain_prompt("USER: <video>\nWhat changed? ASSISTANT:") == "USER: <image>\nWhat changed? ASSISTANT:"
    assert adapter_prompt(None, "TRAINED <video>") == "TRAINED <video>"
    assert adapter_prompt("What changed?", "TRAINED <video>") == "USER: <video>\nWhat changed? ASSISTANT:"
    with pytest.raises(ValueError, match="summary"):
        DescribeStage(model="x", summary="poem")


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
def test_gpu_plain_llava_describes_in_half_precision_and_batching_agrees(plain):
    stage = dataclasses.replace(plain, device="cuda")  # the same settings (batches of 2), on the GPU
    stage.setup()
    expected_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert stage.dtype == expected_dtype and stage.model_info()["device"] == "cuda"
    assert all(p.is_cuda and p.dtype == expected_dtype for p in stage.language_model.parameters())
    frames = _frames(5)
    out = stage({"frames": frames, "key": list("abcde")})
    assert len(out["description"]) == 5 and all(isinstance(d, str) and d for d in out["description"])
    assert out["key"] == list("abcde") and out["vlm_seconds"] > 0
    one_by_one = [stage({"frames": frames[i : i + 1]})["description"][0] for i in range(5)]
    assert out["description"] == one_by_one
    assert stage({"frames": frames[::-1]})["description"] == out["description"][::-1]
    summary = stage.summarize({"times": [1.0, 2.0], "descriptions": out["description"][:2], "frames_analyzed": 9})
    assert isinstance(summary["summary"], str)


@pytest.mark.gpu
@gpu
def test_gpu_adapter_path_uses_the_context_on_the_gpu(with_adapter):
    cpu_stage, _ = with_adapter
    stage = dataclasses.replace(cpu_stage, device="cuda")
    stage.setup()
    assert stage.vlm.projector.queries.is_cuda and stage.vlm.projector.queries.dtype == stage.dtype
    frames = _frames(3)
    context, mask = _context()
    out = stage({"frames": frames, "context": context, "mask": mask})["description"]
    assert len(out) == 3 and all(isinstance(d, str) for d in out)
    other, _ = _context(seed=7)
    assert stage({"frames": frames, "context": other, "mask": mask})["description"] != out
    one_by_one = [
        stage({"frames": frames[i : i + 1], "context": context[i : i + 1], "mask": mask[i : i + 1]})["description"][0]
        for i in range(3)
    ]
    assert one_by_one == out
