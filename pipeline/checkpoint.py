"""Checkpoints: safetensors weights + JSON config + JSON metadata, never pickles.

This module owns the layout: every other module asks it for a checkpoint's files and contents.

DIR/config.json          model configuration (and the adapter's, with its language model)
DIR/meta.json            what it was trained on: feature encoder, cache fingerprint, epoch, metrics
DIR/model.safetensors    the trigger model (time-aware encoder + trigger detector)
DIR/adapter.safetensors  the LLaVA adapter's trainable weights (projector, LoRA), if trained
DIR/llm/                 the language model itself (save_pretrained), only if it was fine-tuned
DIR/training_state/      optimizer, scheduler, step and RNG states and the best epoch's weights, for an exact --resume

A training run writes RUN/checkpoint-epoch-N/ every few epochs and RUN/final/ at the end: the best epoch's
weights (by validation event F1), the one to use.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vtm.cache.atomic import write_json
from vtm.cache.store import CacheSettings
from vtm.models.configs import TriggerModelConfig

if TYPE_CHECKING:
    from vtm.models.trigger_model import TriggerModel

CONFIG_FILE = "config.json"
META_FILE = "meta.json"
MODEL_FILE = "model.safetensors"
ADAPTER_FILE = "adapter.safetensors"
LLM_DIR = "llm"
TRAINING_STATE_DIR = "training_state"
FINAL_DIR = "final"  # a run's best epoch, written when it ends
EPOCH_DIR_PREFIX = "checkpoint-epoch-"
FEATURE_KEYS = ("encoder", "weights_digest", "feature_dim", "sample_fps", "image_size")


class CheckpointError(RuntimeError):
    """The checkpoint cannot be used as asked; the message says what does not match and what to do."""


@dataclass
class LoadReport:
    mismatches: list[str] = field(default_factory=list)  # settings that differ from what it was trained on
    fresh: list[str] = field(default_factory=list)  # parameters initialised fresh (missing or other shape)
    unused: list[str] = field(default_factory=list)  # tensors in the file the model has no place for

    def lines(self) -> list[str]:
        out = [f"mismatch: {m}" for m in self.mismatches]
        out += [f"weight initialised at random (not in the file, or another shape): {n}" for n in self.fresh]
        out += [f"holds a tensor the model does not use: {n}" for n in self.unused]
        return out


def feature_signature(settings: CacheSettings) -> dict:
    return {k: getattr(settings, k) for k in FEATURE_KEYS}


# --- where checkpoints are -------------------------------------------------------------------------------


def is_checkpoint(directory: Path) -> bool:
    """Whether `directory` holds a vtm checkpoint: its metadata and its trigger model's weights."""
    directory = Path(directory)
    return (directory / META_FILE).is_file() and (directory / MODEL_FILE).is_file()


def epoch_checkpoint(run_dir: Path, epoch: int) -> Path:
    """Where a training run saves its checkpoint of `epoch`."""
    return Path(run_dir) / f"{EPOCH_DIR_PREFIX}{epoch}"


def final_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a training run leaves to use: its best epoch's weights."""
    return Path(run_dir) / FINAL_DIR


def run_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints a training run wrote into `run_dir` (every few epochs, and the final one)."""
    return [
        d
        for d in sorted(Path(run_dir).iterdir())
        if (d.name == FINAL_DIR or d.name.startswith(EPOCH_DIR_PREFIX)) and is_checkpoint(d)
    ]


def checkpoints_under(root: Path) -> list[Path]:
    """Every checkpoint directory at any depth below `root`, in the order of their metadata files' paths."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [meta.parent for meta in sorted(root.rglob(META_FILE)) if (meta.parent / MODEL_FILE).is_file()]


# --- what a checkpoint holds -----------------------------------------------------------------------------


def read_meta(directory: Path) -> dict:
    """meta.json: what the checkpoint was trained on (features, cache fingerprint, epoch, metrics, labels)."""
    return read_json(directory, META_FILE)


def saved_model_config(directory: Path) -> TriggerModelConfig:
    """The trigger model's configuration as the checkpoint's config.json records it."""
    directory = Path(directory)
    try:
        return TriggerModelConfig.from_dict(read_json(directory, CONFIG_FILE)["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{directory / CONFIG_FILE} does not describe a trigger model ({type(e).__name__}: {str(e)[:120]}): "
            "the checkpoint is damaged or not vtm's"
        ) from None


def trained_features(directory: Path) -> dict:
    """The features the checkpoint was trained on (encoder, weights digest, sample_fps, image_size, ...)."""
    features = read_meta(directory).get("features")
    if not isinstance(features, dict) or not all(k in features for k in ("encoder", "sample_fps", "image_size")):
        raise CheckpointError(
            f"{Path(directory) / META_FILE} does not record the features it was trained on ('features' with "
            "encoder, sample_fps, image_size); was it written by vtm train-from-cache?"
        )
    return features


def adapter_files(directory: Path) -> tuple[dict, str] | None:
    """The trained adapter's saved settings (AdapterConfig fields, `llm`, `llm_kind`) and its weights file, or None
    when the checkpoint has no adapter."""
    saved = read_json(directory, CONFIG_FILE).get("adapter")
    weights = Path(directory) / ADAPTER_FILE
    return (saved, str(weights)) if saved and weights.is_file() else None


def load_adapter_state(directory: Path) -> dict | None:
    """The adapter's trainable weights (projector, LoRA), or None when the checkpoint has none."""
    path = Path(directory) / ADAPTER_FILE
    return _load_tensors(path) if path.is_file() else None


def fine_tuned_llm(directory: Path) -> Path | None:
    """The checkpoint's own language model (saved whole when its base was fine-tuned), or None."""
    own = Path(directory) / LLM_DIR
    return own if own.is_dir() else None


def update_digest(h, directory: Path) -> None:
    """Feed what a checkpoint's results depend on into the hashlib object `h`: its config and weights, byte for byte,
    and a fine-tuned language model's file names, sizes and times (it can be many GB)."""
    directory = Path(directory)
    for name in (CONFIG_FILE, MODEL_FILE, ADAPTER_FILE):
        if (directory / name).is_file():
            h.update(name.encode() + (directory / name).read_bytes())
    llm = fine_tuned_llm(directory)
    if llm is not None:
        h.update(
            json.dumps(
                sorted(
                    (str(f.relative_to(directory)), f.stat().st_size, f.stat().st_mtime_ns)
                    for f in llm.rglob("*")
                    if f.is_file()
                )
            ).encode()
        )


def save_checkpoint(
    directory: Path,
    model: TriggerModel,
    meta: dict,
    adapter_config: dict | None = None,
    adapter_state: dict | None = None,
    training_state: dict | None = None,
    language_model=None,
) -> Path:
    """Write a checkpoint directory atomically: built under a temp name, then renamed into place.

    `language_model` (an adapter whose LLM base was fine-tuned) is saved whole under llm/.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    if directory.exists() and not is_checkpoint(directory):
        # it is replaced below: only ever an older checkpoint, never a folder of someone's files
        raise CheckpointError(
            f"{directory} exists and is not a vtm checkpoint; vtm will not replace it. Move it away or choose "
            "another --out folder."
        )
    tmp = directory.with_name(directory.name + ".tmp-writing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / MODEL_FILE))
    if adapter_state is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in adapter_state.items()}, str(tmp / ADAPTER_FILE))
    write_json(tmp / CONFIG_FILE, {"model": model.config.to_dict(), "adapter": adapter_config})
    write_json(tmp / META_FILE, meta)
    if training_state is not None:
        _save_training_state(tmp / TRAINING_STATE_DIR, training_state)
    if language_model is not None:
        language_model.language_model.save_pretrained(tmp / LLM_DIR)
        language_model.processor.save_pretrained(tmp / LLM_DIR)
    old = directory.with_name(directory.name + ".tmp-old")
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def adapter_llm_source(directory: Path) -> str | None:
    """Where the adapter's language model loads from: the checkpoint's own llm/ if it was fine-tuned,
    else the path or hub id it was trained with. None when the checkpoint has no adapter."""
    adapter = read_json(directory, CONFIG_FILE).get("adapter")
    if not adapter:
        return None
    own = fine_tuned_llm(directory)
    return str(own) if own is not None else adapter["llm"]


def decision_threshold(directory: Path) -> float:
    """The checkpoint's decision threshold on its trigger score (calibrated on validation videos by training)."""
    return float(read_json(directory, CONFIG_FILE)["model"]["detector"]["threshold"])


def read_json(directory: Path, name: str) -> dict:
    path = Path(directory) / name
    if not path.is_file():
        raise CheckpointError(
            f"{directory} is not a vtm checkpoint (no {name}); give a directory written by `vtm train-from-cache`"
        )
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
        raise CheckpointError(
            f"{path} cannot be read ({str(e)[:120]}): the checkpoint is damaged; use another one or train again"
        ) from None
    if not isinstance(d, dict):
        raise CheckpointError(
            f"{path} holds a JSON {type(d).__name__}, not an object: the checkpoint is damaged; use another one or "
            "train again"
        )
    return d


def _load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete; use another one or train again")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({str(e)[:120]}): the checkpoint is damaged; use another "
            "one or train again"
        ) from None


def load_trigger_model(
    directory: Path,
    settings: CacheSettings | None = None,
    strict: bool = False,
    config: TriggerModelConfig | None = None,
) -> tuple[TriggerModel, dict, LoadReport]:
    """Load the trigger model of a checkpoint and check it against the cache it will score.

    `config` builds the model with another configuration and loads what fits (the rest is
    initialised fresh and listed in the report). Without it, weights that do not fit the checkpoint's
    own config.json are an error (scoring with random weights would be a wrong result). With
    `strict`, any mismatch is an error.
    """
    from vtm.models.trigger_model import TriggerModel

    directory = Path(directory)
    saved = saved_model_config(directory)
    meta = read_meta(directory)
    report = LoadReport()
    if settings is not None:
        trained_on, here = meta.get("features", {}), feature_signature(settings)
        report.mismatches += [
            f"{k}: trained on {trained_on.get(k)!r}, cache has {here[k]!r}"
            for k in FEATURE_KEYS
            if trained_on.get(k) != here[k]
        ]
    model = TriggerModel(config or saved)
    state = _load_tensors(directory / MODEL_FILE)
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    report.fresh = sorted(k for k in own if k not in fits)
    report.unused = sorted(k for k in state if k not in fits)
    if config is not None and config != saved:
        report.mismatches.append("model configuration differs from the checkpoint's")
    if config is None and report.fresh:  # scoring with random weights would be a wrong result, not a warning
        raise CheckpointError(_weights_do_not_fit(directory, own, state, report.fresh))
    if strict and (report.mismatches or report.fresh or report.unused):
        raise CheckpointError(f"checkpoint {directory} does not match (--strict): " + "; ".join(report.lines()))
    if settings is not None and any(m.startswith("feature_dim") for m in report.mismatches):
        raise CheckpointError(
            f"checkpoint {directory} was trained on {meta['features']['feature_dim']}-d features from "
            f"{meta['features']['encoder']}, "
            f"the cache has {settings.feature_dim}-d features from {settings.encoder}: re-extract with that encoder "
            "or train on this cache"
        )
    model.load_state_dict(fits, strict=False)
    model.eval()
    return model, meta, report


def _weights_do_not_fit(directory: Path, own: dict, state: dict, fresh: list[str]) -> str:
    """What in model.safetensors does not fit the model config.json describes, naming both files."""
    problems = [
        f"{k} has shape {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the configuration"
        if k in state
        else f"{k} is missing from the file"
        for k in fresh
    ]
    more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
    return (
        f"{directory / MODEL_FILE} does not fit the model described by {directory / CONFIG_FILE}: "
        f"{'; '.join(problems[:5])}{more}. "
        "The checkpoint is damaged or was edited: restore its config.json, use another checkpoint or train again."
    )


def _save_training_state(directory: Path, state: dict) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors, layout = _flatten_optimizer(state["optimizer"])
    tensors["torch_rng"] = state["torch_rng"]
    for name, t in (state.get("best_model") or {}).items():  # the best epoch's weights so far (early stopping)
        tensors[f"best_model.{name}"] = t.detach().cpu().contiguous()
    if state.get("cuda_rng") is not None:
        for i, t in enumerate(state["cuda_rng"]):
            tensors[f"cuda_rng.{i}"] = t
    save_file(tensors, str(directory / "state.safetensors"))
    np_state = state["numpy_rng"]
    write_json(
        directory / "state.json",
        {
            "optimizer_layout": layout,
            "scheduler": state["scheduler"],
            "epoch": state["epoch"],
            "step": state["step"],
            "python_rng": [state["python_rng"][0], list(state["python_rng"][1]), state["python_rng"][2]],
            "numpy_rng": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "best": state.get("best"),
        },
    )


def load_training_state(directory: Path) -> dict:
    directory = Path(directory) / TRAINING_STATE_DIR
    if not (directory / "state.json").is_file():
        raise CheckpointError(
            f"{directory.parent} has no training state to resume from (was it written by an older vtm?)"
        )
    info = read_json(directory, "state.json")
    tensors = _load_tensors(directory / "state.safetensors")
    cuda = [
        tensors[k]
        for k in sorted((k for k in tensors if k.startswith("cuda_rng.")), key=lambda k: int(k.split(".")[1]))
    ]
    py = info["python_rng"]
    npr = info["numpy_rng"]
    return {
        "optimizer": _unflatten_optimizer(tensors, info["optimizer_layout"]),
        "scheduler": info["scheduler"],
        "epoch": info["epoch"],
        "step": info["step"],
        "torch_rng": tensors["torch_rng"],
        "cuda_rng": cuda or None,
        "python_rng": (py[0], tuple(py[1]), py[2]),
        "numpy_rng": (npr[0], np.asarray(npr[1], dtype=np.uint32), npr[2], npr[3], npr[4]),
        "best": info.get("best"),
        "best_model": {k.removeprefix("best_model."): v for k, v in tensors.items() if k.startswith("best_model.")}
        or None,
    }


def capture_rng() -> dict:
    import torch

    return {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
    }


def restore_rng(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    random.setstate(state["python_rng"])
    np.random.set_state(state["numpy_rng"])


def _flatten_optimizer(sd: dict) -> tuple[dict, dict]:
    """torch optimizer state_dict -> (tensors for safetensors, JSON layout)."""
    import torch

    tensors, scalars = {}, {}
    for pid, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, layout: dict) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in layout["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": layout["param_groups"]}
