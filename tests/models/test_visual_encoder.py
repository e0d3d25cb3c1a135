import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vtm.models.encoder_weights import EncoderLoadError, weights_source
from vtm.models.visual_encoder import build_visual_encoder, weights_digest


def _frames(n=2, size=64, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 255, (n, size, size, 3), dtype=np.uint8))


def test_default_encoder_is_pretrained_without_network():
    enc, info = build_visual_encoder("efficientnet_lite0")
    assert info.pretrained and "efficientnet" in info.weights and info.feature_dim == 1280
    with torch.no_grad():
        a, b = enc(_frames()), enc(_frames())
    assert a.shape == (2, 1280) and torch.equal(a, b)
    # pretrained ImageNet features of two different images differ clearly
    assert torch.nn.functional.cosine_similarity(a[0], a[1], dim=0) < 0.999


def test_missing_weights_fall_back_to_recorded_random_weights():
    enc, info = build_visual_encoder("resnet18")
    assert not info.pretrained and info.weights == "random" and info.feature_dim == 512
    _, again = build_visual_encoder("resnet18")
    assert again.weights_digest == info.weights_digest  # seeded: every worker gets the same weights
    with pytest.raises(EncoderLoadError, match="--weights"):
        build_visual_encoder("resnet18", allow_random=False)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_is_loaded(tmp_path, suffix):
    import torchvision

    torch.manual_seed(123)
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / f"r18{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    enc, info = build_visual_encoder("resnet18", weights=str(path))
    assert info.pretrained and info.weights == str(path)
    source.fc = torch.nn.Identity()
    assert info.weights_digest == weights_digest(source)


def test_missing_weights_file_is_an_error(tmp_path):
    with pytest.raises(EncoderLoadError, match="not found"):
        build_visual_encoder("resnet18", weights=str(tmp_path / "nope.pth"))


def test_unknown_name_that_is_no_local_model_says_what_to_do(tmp_path):
    with pytest.raises(EncoderLoadError, match="save_pretrained"):
        build_visual_encoder(str(tmp_path / "no-such-model"))


def _tiny_clip(path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    cfg = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 99,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=12,
    )
    CLIPModel(cfg).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return 12, 32


def _tiny_dinov2(path):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    Dinov2Model(
        Dinov2Config(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        )
    ).save_pretrained(path)
    BitImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(path)
    return 16, 28


def _tiny_siglip(path):
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    ).save_pretrained(path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return 16, 32


@pytest.mark.parametrize("make", [_tiny_clip, _tiny_dinov2, _tiny_siglip], ids=["clip", "dinov2", "siglip"])
def test_hugging_face_vision_models_from_a_local_path(tmp_path, make):
    dim, size = make(tmp_path / "m")
    enc, info = build_visual_encoder(str(tmp_path / "m"))
    assert info.feature_dim == dim and info.input_size == size and info.pretrained
    with torch.no_grad():
        out = enc(_frames(3, size=48))  # any frame size: resized to the model's own
    assert out.shape == (3, dim) and torch.isfinite(out).all()


def test_weights_source_names_the_weights_without_building_the_model(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"\0" * 1000)
    first = weights_source("resnet18", str(weights))
    assert first == weights_source("resnet18", str(weights)) and first["file"] == str(weights.resolve())
    weights.write_bytes(b"\0" * 999 + b"\1")  # same name and size, other bytes
    assert weights_source("resnet18", str(weights))["sha256"] != first["sha256"]
    assert weights_source("efficientnet_lite0", None)["file"].endswith(".pth")  # the packaged weights
    assert weights_source("some-org/some-hub-model") is None  # only loading it says which files it is
