"""Typed configuration: frozen dataclasses with defaults, loaded from YAML, overridden by CLI flags.

Each YAML section maps onto one dataclass; an unknown key or a contradictory value stops the run
at load time with a message naming it. The stages' own dataclass fields are their settings, so a
stage's section (`change_score`, `triggers`) lists exactly the stage's fields.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vtm.models.visual_encoder import DEFAULT_ENCODER
from vtm.stages.change_score import ChangeScoreStage
from vtm.stages.decode import GRID
from vtm.stages.select_windows import SelectWindowsStage

DEFAULT_CONFIG_FILE = Path(__file__).with_name("default_config.yaml")


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
    decode_device: str = "auto"  # auto (the GPU's video decoder where the encoder runs on a GPU) | cpu | cuda
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
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"extract.device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.num_encoders is not None and self.num_encoders < 1:
            raise ConfigError(f"extract.num_encoders must be >= 1, got {self.num_encoders}")
        if self.decode_device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"extract.decode_device must be auto, cpu or cuda, got {self.decode_device!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The learned trigger model and the LLaVA adapter (see models/)."""

    encoder_kind: str = "transformer"  # time-aware encoder: transformer | lstm
    d_model: int = 64  # small: the default recipe is for a handful of annotated videos
    num_layers: int = 1
    num_heads: int = 4
    dropout: float = 0.1
    detector_hidden: tuple[int, ...] = (32,)
    window: int = 16  # clip_window_size: sampled frames the model sees at once
    color_inputs: bool = True  # append the cached colour histogram to each frame's features
    grid_size: int = 8  # append the cached colour grid pooled to this many cells a side (a divisor of 16); 0: none
    grid_hidden: int = 32  # width of the colour-grid encoder shared by all cells
    threshold: float = (
        0.5  # the detector's decision threshold on the trigger score (train.calibrate_threshold replaces it)
    )
    llm: str | None = None  # LLaVA (or causal LM) path or hub id; None: no adapter is trained
    llm_kind: str = "auto"  # auto | llava | causal_lm (the text-only fallback)
    num_soft_tokens: int = 4
    adapter_hidden: int = 512
    lora_rank: int = 0  # 0: no LoRA; the LLM base stays frozen either way

    def __post_init__(self):
        object.__setattr__(self, "detector_hidden", tuple(self.detector_hidden))
        if self.encoder_kind not in ("transformer", "lstm"):
            raise ConfigError(f"model.encoder_kind must be transformer or lstm, got {self.encoder_kind!r}")
        if self.encoder_kind == "transformer" and self.d_model % self.num_heads:
            raise ConfigError(f"model.d_model ({self.d_model}) must be divisible by model.num_heads ({self.num_heads})")
        if self.window < 2:
            raise ConfigError(f"model.window must be at least 2 frames, got {self.window}")
        if self.grid_size < 0 or (self.grid_size and GRID % self.grid_size) or self.grid_hidden < 1:
            raise ConfigError(
                f"model.grid_size must be 0 or a divisor of {GRID} and model.grid_hidden >= 1, got {self.grid_size} "
                f"and {self.grid_hidden}"
            )
        if self.llm_kind not in ("auto", "llava", "causal_lm"):
            raise ConfigError(f"model.llm_kind must be auto, llava or causal_lm, got {self.llm_kind!r}")
        _at_least(self, "model", 1, "d_model", "num_layers", "num_heads", "num_soft_tokens", "adapter_hidden")
        _at_least(self, "model", 0, "lora_rank")
        if any(h < 1 for h in self.detector_hidden):
            raise ConfigError(f"model.detector_hidden sizes must be >= 1, got {list(self.detector_hidden)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be within [0, 1), got {self.dropout}")
        if not 0 <= self.threshold <= 1:
            raise ConfigError(f"model.threshold must be within 0..1, got {self.threshold}")


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
    data_workers: int = 2  # DataLoader processes reading HDF5 windows

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
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda[:N], got {self.device!r}")
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
    max_new_tokens: int = 64  # per description and for the summary
    batch_size: int = 8  # windows per generate call (across videos)
    summary: str = "llm"  # llm: one more call over the descriptions | join: the descriptions joined
    device: str = "auto"  # auto | cpu | cuda
    num_describers: int | None = None  # describe actors; default: one per GPU, or one on CPU
    objects: bool = False  # also detect objects (DETR) in each window's key frame
    detector: str = "facebook/detr-resnet-50"  # DETR local path or hub id
    detector_threshold: float = 0.7  # objects below this score are dropped
    audio: bool = False  # also speak each video's summary to a WAV file

    def __post_init__(self):
        if self.max_windows_per_video is not None and self.max_windows_per_video < 1:
            raise ConfigError(f"describe.max_windows_per_video must be >= 1, got {self.max_windows_per_video}")
        for name in ("image_size", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"describe.{name} must be >= 1, got {getattr(self, name)}")
        if self.summary not in ("llm", "join"):
            raise ConfigError(f"describe.summary must be llm or join, got {self.summary!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"describe.device must be auto, cpu or cuda[:N], got {self.device!r}")
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
    model: ModelConfig = field(default_factory=ModelConfig)
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
        for name in ("window_s", "baseline_s", "feature_scale", "color_scale", "local_scale", "local_cells"):
            if getattr(c, name, 1) <= 0:
                raise ConfigError(f"change_score.{name} must be > 0, got {getattr(c, name)}")

    def to_dict(self) -> dict:
        return {name: _section_dict(getattr(self, name)) for name in _SECTIONS}


_SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Config)}
_NOT_SETTINGS = {"resources"}  # stage fields that are not user settings


def _section_dict(obj) -> dict:
    plain = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731 - YAML has lists, not tuples
    return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name not in _NOT_SETTINGS}


def _at_least(obj, section: str, low: float, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < low:
            raise ConfigError(f"{section}.{name} must be >= {low}, got {getattr(obj, name)}")


def _build_section(name: str, values: Mapping[str, Any]):
    cls = _SECTIONS[name]
    known = {f.name for f in dataclasses.fields(cls)} - _NOT_SETTINGS
    unknown = set(values) - known
    if unknown:
        raise ConfigError(
            f"unknown setting(s) in section {name!r}: {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(cls)
    return cls(**{k: _checked(f"{name}.{k}", hints[k], v) for k, v in values.items()})


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


def _checked(key: str, hint, value):
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
    """Defaults <- YAML file <- overrides (CLI flags; a None value means 'not given')."""
    data: dict[str, dict] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping of sections")
        unknown = set(loaded) - set(_SECTIONS)
        if unknown:
            raise ConfigError(
                f"unknown section(s) in {path}: {', '.join(sorted(unknown))}; known: {', '.join(_SECTIONS)}"
            )
        for section, values in loaded.items():
            if values is not None and not isinstance(values, dict):
                raise ConfigError(f"section {section!r} in {path} must be a mapping of settings, got {values!r}")
        data = {k: dict(v or {}) for k, v in loaded.items()}
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    try:
        return Config(**{name: _build_section(name, data.get(name, {})) for name in _SECTIONS})
    except TypeError as e:
        raise ConfigError(str(e)) from None


def resolve_device(device: str) -> str:
    """auto -> cuda if a GPU is visible, else cpu; a GPU asked for but missing is a ConfigError."""
    from vtm.stages.encode import pick_device

    try:
        return pick_device(device)
    except RuntimeError as e:
        raise ConfigError(str(e)) from None


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
