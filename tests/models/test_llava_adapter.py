import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vtm.models.llava_adapter import (
    AdapterConfig,
    LanguageModelLoadError,
    SoftTokenProjector,
    VideoLanguageAdapter,
    load_language_model,
)
from vtm.models.tiny import make_tiny_causal_lm, make_tiny_llava

TEXTS = ["a red car stops", "two people wave", "a dog runs left", "the door opens"]
D_MODEL = 16


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Ops this small are dominated by thread start-up: one thread is ~100x faster on a busy 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    return {"llava": str(make_tiny_llava(root / "llava")), "causal_lm": str(make_tiny_causal_lm(root / "causal"))}


def _windows(n=None, t=6, seed=1):
    n = len(TEXTS) if n is None else n
    g = torch.Generator().manual_seed(seed)
    context = torch.randn(n, t, D_MODEL, generator=g)
    mask = torch.ones(n, t, dtype=torch.bool)
    mask[1, 4:] = False  # a shorter window, padded
    return context, mask


def _adapter(path, seed=0, **kw) -> VideoLanguageAdapter:
    torch.manual_seed(seed)
    return VideoLanguageAdapter.load(AdapterConfig(input_dim=D_MODEL, hidden_dim=64, max_new_tokens=8, **kw), path)


def _train(adapter, steps=100, lr=2e-2) -> list[float]:
    context, mask = _windows()
    opt = torch.optim.AdamW([p for p in adapter.parameters() if p.requires_grad], lr=lr)
    adapter.train()
    losses = []
    for _ in range(steps):
        loss = adapter.loss(context, TEXTS, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    adapter.eval()
    return losses


def test_tiny_models_load_back_through_the_user_path(model_dirs):
    model, processor = load_language_model(model_dirs["llava"])
    assert type(model).__name__ == "LlavaForConditionalGeneration" and processor.image_token == "<image>"
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>")
    model, tokenizer = load_language_model(model_dirs["causal_lm"])
    assert type(model).__name__ == "LlamaForCausalLM" and tokenizer.eos_token == "</s>"
    with pytest.raises(LanguageModelLoadError, match="not LLaVA"):
        load_language_model(model_dirs["causal_lm"], kind="llava")


def test_a_model_that_is_not_there_says_what_to_do(tmp_path):
    with pytest.raises(LanguageModelLoadError, match="save_pretrained"):
        load_language_model(str(tmp_path / "no-such-model"))
    with pytest.raises(LanguageModelLoadError, match="hf download vtm-tests/not-cached-anywhere"):
        load_language_model("vtm-tests/not-cached-anywhere")  # HF_HUB_OFFLINE=1 (conftest): never downloads


def test_prompt_needs_one_video_placeholder():
    with pytest.raises(ValueError, match="<video>"):
        AdapterConfig(prompt="USER: describe this. ASSISTANT:")


def test_projector_ignores_padded_frames():
    projector = SoftTokenProjector(D_MODEL, 32, num_tokens=4, hidden_dim=64)
    context, mask = _windows()
    changed = context.clone()
    changed[1, 4:] = 100.0
    out = projector(context, mask)
    assert out.shape == (len(TEXTS), 4, 32)
    assert torch.equal(out, projector(changed, mask))
    assert torch.isfinite(projector(context, torch.zeros_like(mask))).all()  # an empty window gives no NaN


@pytest.mark.parametrize("kind,lora_rank", [("llava", 0), ("causal_lm", 0), ("llava", 4)])
def test_loss_falls_with_the_base_model_frozen(model_dirs, kind, lora_rank):
    adapter = _adapter(model_dirs[kind], lora_rank=lora_rank)
    base = {k: v.clone() for k, v in adapter.language_model.state_dict().items() if ".lora_" not in k}
    trainable = [n for n, p in adapter.named_parameters() if p.requires_grad]
    assert any(n.startswith("projector.") for n in trainable)
    lora = [n for n in trainable if not n.startswith("projector.")]
    if lora_rank:
        # LoRA sits in the language model only; LLaVA's CLIP tower keeps the image path it was trained with
        assert lora and all(".lora_" in n and "language_model.model.language_model." in n for n in lora)
    else:
        assert not lora

    losses = _train(adapter)

    assert losses[-1] < 0.5 * losses[0], losses[::10]
    after = adapter.language_model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in base.items())


def test_generate_gives_one_description_per_window(model_dirs):
    context, mask = _windows(n=3)
    llava = _adapter(model_dirs["llava"])
    text_only = llava.generate(context, mask)
    images = [np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8) for i in range(3)]
    with_frames = llava.generate(context, mask, images=images)
    assert len(text_only) == len(with_frames) == 3 and all(isinstance(s, str) for s in text_only + with_frames)
    assert llava.generate(context, mask, images=images[::-1]) != with_frames  # the key frames reach the language model
    other_prompt = llava.generate(context, mask, prompt="USER: <video>\nWhat changed? ASSISTANT:")
    assert len(other_prompt) == 3
    with pytest.raises(ValueError, match="needs images"):
        llava.generate(context, mask, prompt="USER: <image>\n<video>\nWhat changed? ASSISTANT:")

    causal = _adapter(model_dirs["causal_lm"])
    assert len(causal.generate(context, mask)) == 3
    with pytest.raises(ValueError, match="LLaVA"):
        causal.generate(context, mask, images=images)


def test_trainable_weights_round_trip_without_the_base_model(model_dirs, tmp_path):
    trained = _adapter(model_dirs["llava"], lora_rank=4)
    _train(trained, steps=5)
    weights = trained.trainable_state_dict()
    assert all(k.startswith("projector.") or ".lora_" in k for k in weights)
    assert sum(v.numel() for v in weights.values()) < 0.1 * sum(
        v.numel() for v in trained.language_model.state_dict().values()
    )
    save_file(weights, str(tmp_path / "adapter.safetensors"))

    fresh = _adapter(model_dirs["llava"], seed=123, lora_rank=4)
    context, mask = _windows()
    with torch.no_grad():
        assert not torch.allclose(fresh.loss(context, TEXTS, mask), trained.loss(context, TEXTS, mask))
        fresh.load_trainable_state_dict(load_file(str(tmp_path / "adapter.safetensors")))
        assert torch.allclose(fresh.loss(context, TEXTS, mask), trained.loss(context, TEXTS, mask))

    no_lora = _adapter(model_dirs["llava"])
    with pytest.raises(ValueError, match="lora_rank"):
        no_lora.load_trainable_state_dict(weights)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(model_dirs):
    adapter = _adapter(
        model_dirs["causal_lm"], lora_rank=4, lora_dropout=0.0
    )  # no dropout: both passes see the same network
    context, mask = _windows()

    def loss_and_grads():
        adapter.zero_grad()
        loss = adapter.loss(context, TEXTS, mask)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in adapter.parameters() if p.requires_grad]

    adapter.train()
    plain_loss, plain_grads = loss_and_grads()
    adapter.gradient_checkpointing = True
    ckpt_loss, ckpt_grads = loss_and_grads()
    assert adapter.gradient_checkpointing
    assert torch.allclose(plain_loss, ckpt_loss)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain_grads, ckpt_grads))


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
def test_gpu_loss_matches_cpu_in_float32(model_dirs):
    context, mask = _windows()
    losses = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        adapter = VideoLanguageAdapter.load(
            AdapterConfig(input_dim=D_MODEL, hidden_dim=64), model_dirs["llava"], device=device
        )
        assert adapter.projector.queries.device.type == device
        with torch.no_grad():
            losses[device] = adapter.loss(context, TEXTS, mask).item()
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-3)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kind", ["llava", "causal_lm"])
def test_gpu_bf16_training_with_lora_and_generate(model_dirs, kind):
    torch.manual_seed(0)
    config = AdapterConfig(input_dim=D_MODEL, hidden_dim=64, max_new_tokens=8, lora_rank=4)
    adapter = VideoLanguageAdapter.load(config, model_dirs[kind], dtype=torch.bfloat16, device="cuda")
    trainable = [p for p in adapter.parameters() if p.requires_grad]
    assert trainable and all(p.is_cuda and p.dtype == torch.float32 for p in trainable)  # projector and LoRA stay fp32
    base = {k: v.clone() for k, v in adapter.language_model.state_dict().items() if ".lora_" not in k}
    assert all(v.dtype != torch.float32 for v in base.values() if v.is_floating_point())

    losses = _train(adapter)

    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses[::10]
    after = adapter.language_model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in base.items())
    context, mask = _windows(n=3)
    images = (
        [np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8) for i in range(3)]
        if kind == "llava"
        else None
    )
    out = adapter.generate(context, mask, images=images)
    assert len(out) == 3 and all(isinstance(s, str) for s in out)
