"""Typed configuration: frozen dataclasses with defaults, loaded from YAML, overridden by CLI flags.

Each YAML section maps onto one dataclass (a nested mapping onto a nested dataclass); an unknown key
or a contradictory value stops the run at load time with a message naming it. The stages' and the
models' own config dataclasses are their sections (`change_score`, `triggers`, `model`, `adapter`),
so each setting has its default in one place: the dataclass that uses it. Fields marked
`metadata={"set_by": ...}` are filled from the data (the cache's feature size, the annotations'
labels) when a model is built, and are not settings.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vtm.models.configs import AdapterConfig, TriggerModelConfig
from vtm.models.encoder_weights import DEFAULT_ENCODER
from vtm.stages.change_score import ChangeScoreStage
from vtm.stages.decode import GRID
from vtm.stages.describe import SUMMARY_MODES, DescribeStage
from vtm.stages.detect import DEFAULT_DETECTOR, DetectObjectsStage
from vtm.stages.select_windows import SelectWindowsStage

DEFAULT_CONFIG_FILE = Path(__file__).with_name("default_config.yaml")
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ExtractConfig:
    fps: float = 3.0  # frames sampled per second of video
    encoder: str = DEFAULT_ENCODER  # resnet18 | resnet50 | efficientnet_b0 | efficientnet_lite0 | HF path or id
    weights: str | None = None  # local weights file for torchvision/timm encoders
    allow_random_weights: bool = True  # without pretrained weights, use seeded random ones (recorded)
    image_size: int = 224  # frames are resized to image_size x image_size before encoding
    max_frames: int | None = None  # cap on sampled frames per video
    segment_frames: int = 64  # sampled frames per decode task (and per encoder call)
    device: str = "auto"  # auto | cpu | cuda
    decode_device: str = "auto"  # auto (= cpu: faster than NVDEC on a 16-core GPU machine) | cpu | cuda (NVDEC)
    # | nvdec: nvdec_streams decode tasks at a time on the GPU's decoders with PyNvVideoCodec, the rest on the cores
    nvdec_streams: int = 8
    num_encoders: int | None = None  # encoder actors; default one per GPU, or one on CPU
    rebuild: bool = False  # delete an existing cache built with other settings
    trigger_checkpoint: str | None = None  # a trained checkpoint: its learned trigger score is stored too

    def __post_init__(self):
        if self.fps <= 0:
            raise ConfigError(f"extract.fps must be > 0, got {self.fps}")
        if self.image_size < GRID or self.image_size % GRID:
            raise ConfigError(f"extract.image_size must be a positive multiple of {GRID}, got {self.image_size}")
        if self.max_frames is not None and self.max_frames < 2:
            raise ConfigError(f"extract.max_frames must be at least 2 (changes need two frames), got {self.max_frames}")
        if self.segment_frames < 1:
            raise ConfigError(f"extract.segment_frames must be >= 1, got {self.segment_frames}")
        _check_device("extract", self.device)
        if self.num_encoders is not None and self.num_encoders < 1:
            raise ConfigError(f"extract.num_encoders must be >= 1, got {self.num_encoders}")
        if self.decode_device not in ("auto", "cpu", "cuda", "nvdec"):
            raise ConfigError(f"extract.decode_device must be auto, cpu, cuda or nvdec, got {self.decode_device!r}")
        if self.nvdec_streams < 1:
            raise ConfigError(f"extract.nvdec_streams must be >= 1, got {self.nvdec_streams}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40  # at most; see patience
    batch_size: int = 32
    lr: float = 1e-3  # trigger model
    adapter_lr: float = 1e-4  # projector and LoRA
    weight_decay: float = 0.01
    warmup_steps: int = 50  # linear warm-up, then linear decay to 0
    grad_accum: int = 1  # batches per optimizer step
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    mixed_precision: str = "auto"  # auto (bf16 on GPU, off on CPU) | bf16 | fp16 | off
    gradient_checkpointing: bool = False
    freeze_visual_backbone: bool = True  # always: training reads cached features
    freeze_temporal_encoder: bool = False
    freeze_trigger_detector: bool = False
    freeze_llm: bool = (
        True  # the LLM base (LoRA, when on, trains either way); false: fine-tune it, saved in the checkpoint
    )
    windows_per_event: int = 4  # jittered windows around each annotated event per epoch (at least)
    min_windows_per_epoch: int = (
        512  # with few events, more windows per event, up to this many windows per epoch in all
    )
    negatives_per_positive: float = 1.0  # windows without the event per window around one (1: balanced)
    hard_negative_share: float = 0.5  # share of those centred on change-score peaks outside events (cuts, distractors)
    time_scale: float = 1.25  # augmentation: half the windows play up to this much faster or slower; 1: off
    feature_dropout: float = 0.3  # augmentation: share of feature columns zeroed per window
    group_dropout: float = (
        0.3  # augmentation: chance that each input part (features, histogram, grid) is hidden in a window
    )
    mix_prob: float = 0.25  # augmentation: share of windows whose second part comes from another window
    crop_prob: float = 0.25  # augmentation: share of windows cut short (as at a video's end)
    val_fraction: float = 0.2  # share of annotated videos held out (split by video)
    patience: int = 10  # stop after this many epochs without a better validation event F1; 0: run all epochs
    calibrate_threshold: bool = (
        True  # pick the decision threshold with the best validation event F1 (stored in the checkpoint)
    )
    adapter_loss_weight: float = 1.0
    save_every: int = 5  # checkpoint every N epochs (and always at the end)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    workers: int = 1  # >1: data-parallel Ray Train workers (one GPU each when there are GPUs)
    data_workers: int = 2  # processes making batches of windows (0: a thread of the training process)

    def __post_init__(self):
        if not self.freeze_visual_backbone:
            raise ConfigError(
                "train.freeze_visual_backbone must be true: the visual backbone runs in `vtm extract`; training "
                "reads its cached features"
            )
        if self.mixed_precision not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError(f"train.mixed_precision must be auto, bf16, fp16 or off, got {self.mixed_precision!r}")
        for name in (
            "epochs",
            "batch_size",
            "grad_accum",
            "save_every",
            "workers",
            "windows_per_event",
            "min_windows_per_epoch",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("hard_negative_share", "feature_dropout", "group_dropout", "mix_prob", "crop_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"train.{name} must be within [0, 1], got {getattr(self, name)}")
        if self.time_scale < 1 or self.negatives_per_positive < 0 or self.patience < 0:
            raise ConfigError("train.time_scale must be >= 1, train.negatives_per_positive and train.patience >= 0")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"train.val_fraction must be within [0, 1), got {self.val_fraction}")
        _check_device("train", self.device)
        if self.lr <= 0 or self.adapter_lr <= 0:
            raise ConfigError(f"train.lr and train.adapter_lr must be > 0, got {self.lr} and {self.adapter_lr}")
        _at_least(
            self,
            "train",
            0,
            "weight_decay",
            "warmup_steps",
            "grad_clip",
            "negatives_per_positive",
            "adapter_loss_weight",
            "data_workers",
        )


@dataclass(frozen=True)
class DescribeConfig:
    """`vtm describe`: which windows go to the vision-language model, and how (see pipeline/describe.py)."""

    model: str | None = None  # LLaVA path or hub id; None: the language model of the checkpoint's adapter
    prompt: str | None = (
        None  # a question, or a full template; None: the adapter's trained prompt, or a default question
    )
    max_windows_per_video: int | None = None  # budget: at most this many windows per video (the strongest)
    dense: bool = False  # every sampled frame is a window (the baseline describe is measured against)
    image_size: int = 336  # key frames are decoded at image_size x image_size (LLaVA-1.5 sees 336 x 336)
    max_new_tokens: int = DescribeStage.max_new_tokens  # per description and for the summary
    batch_size: int = DescribeStage.max_batch  # windows per generate call (across videos)
    summary: str = DescribeStage.summary  # llm: one more call over the descriptions | join: the descriptions joined
    device: str = "auto"  # auto | cpu | cuda
    num_describers: int | None = None  # describe actors; default: one per GPU, or one on CPU
    objects: bool = False  # also detect objects (DETR) in each window's key frame
    detector: str = DEFAULT_DETECTOR  # DETR local path or hub id
    detector_threshold: float = DetectObjectsStage.threshold  # objects below this score are dropped
    audio: bool = False  # also speak each video's summary to a WAV file

    def __post_init__(self):
        if self.max_windows_per_video is not None and self.max_windows_per_video < 1:
            raise ConfigError(f"describe.max_windows_per_video must be >= 1, got {self.max_windows_per_video}")
        for name in ("image_size", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"describe.{name} must be >= 1, got {getattr(self, name)}")
        if self.summary not in SUMMARY_MODES:
            raise ConfigError(f"describe.summary must be one of {', '.join(SUMMARY_MODES)}, got {self.summary!r}")
        _check_device("describe", self.device)
        if self.dense and self.max_windows_per_video is not None:
            raise ConfigError(
                "describe.dense describes every sampled frame; describe.max_windows_per_video cannot apply to it"
            )
        if not 0.0 <= self.detector_threshold <= 1.0:
            raise ConfigError(f"describe.detector_threshold must be within 0..1, got {self.detector_threshold}")
        if self.num_describers is not None and self.num_describers < 1:
            raise ConfigError(f"describe.num_describers must be >= 1, got {self.num_describers}")


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # None: RAY_ADDRESS if set, else a local Ray started for this run


@dataclass(frozen=True)
class Config:
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    change_score: ChangeScoreStage = field(default_factory=ChangeScoreStage)
    triggers: SelectWindowsStage = field(default_factory=SelectWindowsStage)
    model: TriggerModelConfig = field(default_factory=TriggerModelConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    describe: DescribeConfig = field(default_factory=DescribeConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self):
        t = self.triggers
        if not 0 <= t.threshold <= 1:
            raise ConfigError(f"triggers.threshold must be within 0..1, got {t.threshold}")
        if t.min_gap_s < 0 or t.before_s < 0 or t.after_s < 0:
            raise ConfigError("triggers.min_gap_s, before_s and after_s must be >= 0")
        if not 0 <= t.min_dip <= 1:
            raise ConfigError(f"triggers.min_dip must be within [0, 1], got {t.min_dip}")
        if t.max_fraction is not None and not 0 < t.max_fraction <= 1:
            raise ConfigError(f"triggers.max_fraction must be within (0, 1], got {t.max_fraction}")
        if t.max_triggers is not None and t.max_triggers < 1:
            raise ConfigError(f"triggers.max_triggers must be >= 1 (or null for no limit), got {t.max_triggers}")
        c = self.change_score
        for name in (
            "window_s",
            "baseline_s",
            "feature_scale",
            "color_scale",
            "local_scale",
            "local_cells",
            "cut_scale",
        ):
            if getattr(c, name, 1) <= 0:
                raise ConfigError(f"change_score.{name} must be > 0, got {getattr(c, name)}")
        for name in ("slow_window_s", "guard_s", "activity_weight", "spread_weight", "local_radius"):
            if getattr(c, name, 0) < 0:
                raise ConfigError(f"change_score.{name} must be >= 0, got {getattr(c, name)}")
        if not 0 <= getattr(c, "light_from", 1) <= 1:
            raise ConfigError(f"change_score.light_from must be within 0..1 (1: light is change), got {c.light_from}")
        if self.model.grid is not None and GRID % self.model.grid.size:
            raise ConfigError(
                f"model.grid.size must divide the cache's {GRID}x{GRID} colour grid ({', '.join(_divisors(GRID))}), "
                f"got {self.model.grid.size}; model.grid: null leaves the grid out"
            )

    def to_dict(self) -> dict:
        return {name: _section_dict(getattr(self, name)) for name in _SECTIONS}


_SECTIONS: dict[str, type] = typing.get_type_hints(Config)
_NOT_SETTINGS = {"resources"}  # stage fields that are not user settings


def _divisors(n: int) -> list[str]:
    return [str(d) for d in range(1, n + 1) if n % d == 0]


def _settings(cls) -> dict[str, dataclasses.Field]:
    """The fields of a config dataclass that are settings (not set from the data, not a stage's resources)."""
    return {f.name: f for f in dataclasses.fields(cls) if f.name not in _NOT_SETTINGS and "set_by" not in f.metadata}


def _section_dict(obj) -> dict:
    def plain(v):
        if dataclasses.is_dataclass(v):
            return _section_dict(v)
        return list(v) if isinstance(v, tuple) else v  # YAML has lists, not tuples

    return {name: plain(getattr(obj, name)) for name in _settings(type(obj))}


def _check_device(section: str, device: str) -> None:
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"{section}.device must be auto, cpu or cuda[:N], got {device!r}")


def _at_least(obj, section: str, low: float, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < low:
            raise ConfigError(f"{section}.{name} must be >= {low}, got {getattr(obj, name)}")


def _build(cls, where: str, values: Mapping[str, Any], source: str):
    """`cls` from the settings `values` of section `where` (nested sections recursively); `source` says where
    they were read ("" or " in FILE"), for the messages about keys."""
    known = _settings(cls)
    set_by = {f.name: f.metadata["set_by"] for f in dataclasses.fields(cls) if "set_by" in f.metadata}
    for key in values:
        if key in set_by:
            raise ConfigError(
                f"{where}.{key}{source} is not a setting: it is set by {set_by[key]} when the model is built; remove it"
            )
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(f'{where}.{k}' for k in sorted(unknown))}{source}; "
            f"known in {where}: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(cls)
    try:
        return cls(**{k: _checked(f"{where}.{k}", hints[k], v, source) for k, v in values.items()})
    except ConfigError as e:  # a value of the wrong type or out of range: say which file it was read from
        raise ConfigError(_naming(str(e), source)) from None
    except (TypeError, ValueError) as e:  # a model's own config checks its values; the message gets the section's name
        raise ConfigError(_naming(f"{where}: {e}", source)) from None


def _naming(message: str, source: str) -> str:
    """`message` ending with where the settings were read (`source`: "" or " in FILE"), said once."""
    return message if source in message else message + source


def is_number(value) -> bool:
    """An int or a float, not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite_float(value) -> float | None:
    """A number as a finite float, or None for NaN, infinities and integers too large for a float
    (YAML and JSON allow them all; none is a meaningful setting or time)."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _checked(key: str, hint, value, source: str = ""):
    """`value` as the type `hint` asks for, or a ConfigError naming `key`: YAML and flags give the wrong
    type easily (fps: "fast", epochs: "ten"), and NaN or infinity would poison everything downstream."""
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:  # tuple[int, ...]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, like [{value!r}], got {value!r}")
        return tuple(_checked(f"{key}[{i}]", args[0], v) for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):  # a nested section
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}{source} must be a mapping of settings, got {value!r}")
        return _build(hint, key, value, source)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        if abs(value) >= 2**63:
            raise ConfigError(f"{key} is too large ({len(str(abs(value)))} digits)")
        return value
    if hint is float:
        if not is_number(value):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        number = finite_float(value)
        if number is None:
            raise ConfigError(f"{key} must be a finite number, got {str(value)[:20]}")
        return number
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{key} must be text, got {value!r}")
    return value


def load_config(path: Path | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
    """Defaults <- YAML file <- overrides (CLI flags; a None value means 'not given'; nested mappings merge)."""
    data: dict[str, Any] = {}
    source = f" in {path}" if path is not None else ""
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:  # from a file, PyYAML's error marks name it and the line
                loaded = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping of sections")
        unknown = set(loaded) - set(_SECTIONS)
        if unknown:
            raise ConfigError(
                f"unknown section(s) in {path}: {', '.join(sorted(map(str, unknown)))}; known: {', '.join(_SECTIONS)}"
            )
        for section, values in loaded.items():
            if values is not None and not isinstance(values, dict):
                raise ConfigError(f"section {section!r} in {path} must be a mapping of settings, got {values!r}")
        data = _upgrade_flat_model({k: dict(v or {}) for k, v in loaded.items()}, str(path))
    data = _merged(data, _upgrade_flat_model(_given(overrides or {}), "the settings given"))
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(sorted(map(str, unknown)))}; known: {', '.join(_SECTIONS)}")
    sections = {name: _build(cls, name, data.get(name) or {}, source) for name, cls in _SECTIONS.items()}
    try:
        return Config(**sections)
    except ConfigError as e:  # a value out of range across sections: say which file it was read from
        raise ConfigError(_naming(str(e), source)) from None


def _given(overrides: Mapping) -> dict:
    """The overrides without the values not given (None), at every depth."""
    return {k: _given(v) if isinstance(v, Mapping) else v for k, v in overrides.items() if v is not None}


def _merged(base: dict, over: Mapping) -> dict:
    """`base` with the values of `over`, nested mappings merged key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


# The flat `model:` section of configs written before the model section was the model's own config
# (resolved configs saved by vtm, `vtm calibrate` output): each old key and where it lives now.
_FLAT_MODEL_KEYS = {
    "encoder_kind": [("model", "encoder", "kind")],
    "d_model": [("model", "encoder", "d_model")],
    "num_layers": [("model", "encoder", "num_layers")],
    "num_heads": [("model", "encoder", "num_heads")],
    "dropout": [("model", "encoder", "dropout"), ("model", "detector", "dropout")],
    "detector_hidden": [("model", "detector", "hidden_sizes")],
    "threshold": [("model", "detector", "threshold")],
    "grid_hidden": [("model", "grid", "hidden")],
    "grid_size": [("model", "grid", "size")],  # 0: no grid (model.grid: null)
    "llm": [("adapter", "llm")],
    "llm_kind": [("adapter", "llm_kind")],
    "num_soft_tokens": [("adapter", "num_soft_tokens")],
    "adapter_hidden": [("adapter", "hidden_dim")],
    "lora_rank": [("adapter", "lora_rank")],
}


def _upgrade_flat_model(data: dict, source: str) -> dict:
    """`data` with an old flat `model:` section's keys moved to where they live now (see _FLAT_MODEL_KEYS)."""
    model = data.get("model")
    old = [k for k in model if k in _FLAT_MODEL_KEYS] if isinstance(model, Mapping) else []
    if not old:
        return data
    renames = ", ".join(f"model.{k} -> {' and '.join('.'.join(p) for p in _FLAT_MODEL_KEYS[k])}" for k in old)
    log.warning("%s uses the old flat model section; read as: %s", source, renames)
    data = {**data, "model": {k: v for k, v in model.items() if k not in old}}
    if "adapter" in data:
        data["adapter"] = dict(data["adapter"] or {})
    for key in sorted(old, key=lambda k: k == "grid_size"):  # grid_size last: 0 drops the grid altogether
        for section, *inner in _FLAT_MODEL_KEYS[key]:
            target = data.setdefault(section, {})
            for name in inner[:-1]:
                target = target.setdefault(name, {}) if isinstance(target.get(name, {}), dict) else {}
            if inner[-1] in target:
                raise ConfigError(
                    f"{source} sets both model.{key} (the old layout) and {section}.{'.'.join(inner)}; keep the latter"
                )
            target[inner[-1]] = model[key]
    if model.get("grid_size") == 0:
        data["model"]["grid"] = None
    return data


def resolve_device(device: str) -> str:
    """auto -> cuda if a GPU is visible, else cpu; a GPU asked for but missing is a ConfigError."""
    from vtm.stages.encode import pick_device

    try:
        return pick_device(device)
    except RuntimeError as e:
        raise ConfigError(str(e)) from None


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
