"""The models' configurations: what vtm's config file and a checkpoint's config.json hold about each model.

Kept apart from the models (torch modules) so that reading a config (every `vtm` command does) imports no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

VIDEO_PLACEHOLDER = "<video>"
LLM_KINDS = ("auto", "llava", "causal_lm")  # how a language model is loaded (AdapterConfig.llm_kind)


@dataclass(frozen=True)
class GridEncoderConfig:
    size: int = 8  # cells per side of the grid the model sees (the cache's 16 x 16 grid, average-pooled)
    hidden: int = 32

    def __post_init__(self):
        if self.size < 1 or self.hidden < 1:
            raise ValueError(f"grid size and hidden width must be >= 1, got {self.size} and {self.hidden}")

    @property
    def input_dim(self) -> int:  # flattened (size, size, 3) colours in [0, 1]
        return self.size * self.size * 3

    @property
    def output_dim(self) -> int:
        return 2 * self.hidden


@dataclass(frozen=True)
class TemporalEncoderConfig:
    """The `model.encoder` section of vtm's configuration; fields with `set_by` metadata are filled from the data."""

    input_dim: int = field(default=1280, metadata={"set_by": "the cache's features and the model's inputs"})
    d_model: int = 64  # small: the default recipe is for a handful of annotated videos
    kind: str = "transformer"  # transformer | lstm (both see frame timestamps)
    num_layers: int = 1
    num_heads: int = 4
    dropout: float = 0.1
    max_period_s: float = 600.0  # longest period of the time encoding
    use_deltas: bool = True  # also feed each frame's change from the previous one (onsets stand out)
    # Widths of consecutive input parts (visual features, colour histogram, colour grid) normalised and
    # projected apart, so that a few dozen colour values are not drowned by a thousand feature values;
    # () = the inputs as one part.
    input_groups: tuple[int, ...] = field(
        default=(), metadata={"set_by": "the cache's features and the model's inputs"}
    )

    def __post_init__(self):
        if self.kind not in ("transformer", "lstm"):
            raise ValueError(f"kind must be transformer or lstm, got {self.kind!r}")
        for name in ("input_dim", "d_model", "num_layers", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kind == "transformer" and self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be within [0, 1), got {self.dropout}")
        if self.max_period_s <= 0:
            raise ValueError(f"max_period_s must be > 0, got {self.max_period_s}")
        object.__setattr__(self, "input_groups", tuple(self.input_groups))
        if self.input_groups and sum(self.input_groups) != self.input_dim:
            raise ValueError(f"input_groups {self.input_groups} must add up to input_dim ({self.input_dim})")
        if self.kind == "lstm" and self.d_model % 2:
            raise ValueError(f"an LSTM's d_model must be even (two directions), got {self.d_model}")


@dataclass(frozen=True)
class TriggerDetectorConfig:
    """The `model.detector` section of vtm's configuration; fields with `set_by` metadata are filled from the data."""

    # None: the time-aware encoder's d_model (TriggerModelConfig fills it in)
    input_dim: int | None = field(default=None, metadata={"set_by": "the time-aware encoder's d_model"})
    hidden_sizes: tuple[int, ...] = (32,)
    num_classes: int = field(default=1, metadata={"set_by": "the annotations' labels"})  # 1 = binary trigger
    dropout: float = 0.1
    threshold: float = 0.5  # decision threshold on the trigger score (train.calibrate_threshold replaces it)

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))  # a list from YAML/JSON
        if any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be >= 1, got {list(self.hidden_sizes)}")
        if self.num_classes < 1 or (self.input_dim is not None and self.input_dim < 1):
            raise ValueError(f"num_classes and input_dim must be >= 1, got {self.num_classes} and {self.input_dim}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be within [0, 1), got {self.dropout}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be within 0..1, got {self.threshold}")


@dataclass(frozen=True)
class TriggerModelConfig:
    """The `model` section of vtm's configuration (and a checkpoint's config.json).

    Its defaults are the training recipe's; fields with `set_by` metadata are not settings but filled from the
    data when a model is built (see vtm.pipeline.train.build_trigger_model_config).
    """

    encoder: TemporalEncoderConfig = field(default_factory=TemporalEncoderConfig)
    detector: TriggerDetectorConfig = field(default_factory=TriggerDetectorConfig)
    window: int = 16  # frames the model sees at once (clip_window_size)
    # event class names; index i is detector class i + 1
    labels: tuple[str, ...] = field(default=("event",), metadata={"set_by": "the annotations' labels"})
    color_inputs: bool = True  # the cached colour histogram (64 values) is appended to each frame's features
    # the cached 16x16 colour grid, pooled to grid.size cells a side, is appended too; None: no grid
    grid: GridEncoderConfig | None = field(default_factory=GridEncoderConfig)
    # the shortest annotated event trained on, in samples: shorter blips of the score are noise
    min_event_frames: int = field(default=1, metadata={"set_by": "the annotations' shortest event"})

    def __post_init__(self):
        if isinstance(self.grid, dict):
            object.__setattr__(self, "grid", GridEncoderConfig(**self.grid))
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.detector.input_dim is None:  # the detector reads the encoder's output
            object.__setattr__(self, "detector", dataclasses.replace(self.detector, input_dim=self.encoder.d_model))
        if self.detector.input_dim != self.encoder.d_model:
            raise ValueError(
                f"detector.input_dim ({self.detector.input_dim}) must equal encoder.d_model ({self.encoder.d_model})"
            )
        if len(self.labels) != self.detector.num_classes:
            raise ValueError(f"{len(self.labels)} labels for {self.detector.num_classes} detector classes")
        if self.window < 2:
            raise ValueError(f"window must be at least 2 frames, got {self.window}")

    @property
    def grid_size(self) -> int:
        """Cells per side of the colour grid in the inputs; 0: no grid."""
        return self.grid.size if self.grid is not None else 0

    @property
    def input_dim(self) -> int:
        """Width of one frame's inputs (see vtm.cache.windows.frame_inputs): the grid enters as raw colours."""
        return self.encoder.input_dim + (self.grid.input_dim - self.grid.output_dim if self.grid is not None else 0)

    @property
    def input_parts(self) -> tuple[int, ...]:
        """Widths of the parts of one frame's inputs: features[, colour histogram][, colour grid]."""
        groups = self.encoder.input_groups or (self.encoder.input_dim,)
        return groups[:-1] + (self.grid.input_dim,) if self.grid is not None else groups

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TriggerModelConfig:
        """A checkpoint's config.json "model"; keys older checkpoints lack mean what those were trained without
        (no colour inputs, no grid)."""
        det = dict(d["detector"])
        det["hidden_sizes"] = tuple(det["hidden_sizes"])
        enc = dict(d["encoder"])
        enc["input_groups"] = tuple(enc.get("input_groups", ()))
        return cls(
            encoder=TemporalEncoderConfig(**enc),
            detector=TriggerDetectorConfig(**det),
            window=d["window"],
            labels=tuple(d["labels"]),
            color_inputs=d.get("color_inputs", False),
            grid=d.get("grid"),
            min_event_frames=d.get("min_event_frames", 1),
        )


@dataclass(frozen=True)
class AdapterConfig:
    """The `adapter` section of vtm's configuration (and the "adapter" of a checkpoint's config.json)."""

    llm: str | None = None  # LLaVA (or causal LM) path or hub id; None: no adapter is trained
    llm_kind: str = "auto"  # auto | llava | causal_lm (the text-only fallback); a checkpoint records the one found
    input_dim: int | None = field(default=None, metadata={"set_by": "the time-aware encoder's d_model"})
    num_soft_tokens: int = 4  # soft tokens the adapter feeds the language model
    hidden_dim: int = 512
    lora_rank: int = 0  # 0: no LoRA, only the projector trains (the LLM base stays frozen either way)
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # module names inside the language model
    prompt: str = f"USER: {VIDEO_PLACEHOLDER}\nDescribe what happens at this moment. ASSISTANT:"
    max_new_tokens: int = 64  # per description and for the summary

    def __post_init__(self):
        object.__setattr__(self, "lora_target_modules", tuple(self.lora_target_modules))  # a list from YAML/JSON
        check_prompt(self.prompt)
        if self.llm_kind not in LLM_KINDS:
            raise ValueError(f"llm_kind must be one of {', '.join(LLM_KINDS)}, got {self.llm_kind!r}")
        for name in ("num_soft_tokens", "hidden_dim", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be 0 (no LoRA) or positive, got {self.lora_rank}")
        if self.lora_rank and not self.lora_target_modules:
            raise ValueError("lora_rank > 0 needs lora_target_modules")
        if self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise ValueError(
                f"lora_alpha must be > 0 and lora_dropout within [0, 1), got {self.lora_alpha} and {self.lora_dropout}"
            )


def check_prompt(prompt: str) -> None:
    if prompt.count(VIDEO_PLACEHOLDER) != 1:
        raise ValueError(
            f"the prompt must contain {VIDEO_PLACEHOLDER} exactly once (where the soft tokens go): {prompt!r}"
        )
