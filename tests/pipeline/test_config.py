import pytest
import yaml

from vtm.cache.schema import COLOR_HIST_DIM
from vtm.models.configs import AdapterConfig, TriggerDetectorConfig, TriggerModelConfig
from vtm.pipeline.config import DEFAULT_CONFIG_FILE, Config, ConfigError, dump_config, load_config
from vtm.pipeline.train import build_trigger_model_config
from vtm.stages.describe import DescribeStage
from vtm.stages.detect import DetectObjectsStage


def test_shipped_default_config_loads_and_equals_the_defaults():
    assert load_config(DEFAULT_CONFIG_FILE) == Config()
    assert set(yaml.safe_load(DEFAULT_CONFIG_FILE.read_text())) == set(Config().to_dict())


def test_every_setting_is_in_the_shipped_config():
    def keys(d, prefix=""):
        return {prefix + k for k in d} | {
            key for k, v in d.items() if isinstance(v, dict) for key in keys(v, f"{prefix}{k}.")
        }

    assert keys(yaml.safe_load(DEFAULT_CONFIG_FILE.read_text())) == keys(Config().to_dict())


def test_flags_override_the_file_and_none_means_not_given(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("extract:\n  fps: 2\n  encoder: resnet18\ntriggers:\n  threshold: 0.7\n")
    cfg = load_config(path, {"extract": {"fps": 5.0, "encoder": None}})
    assert cfg.extract.fps == 5.0 and cfg.extract.encoder == "resnet18" and cfg.triggers.threshold == 0.7


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, {"extract": {"fps": 1.5, "max_frames": 100}})
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    "text, message",
    [
        ("extract:\n  fsp: 3\n", "unknown setting.*fsp"),
        ("extrct:\n  fps: 3\n", "unknown section.*extrct"),
        ("extract:\n  fps: 0\n", "fps must be > 0"),
        ("extract:\n  max_frames: 1\n", "max_frames"),
        ("extract:\n  image_size: 100\n", "multiple of 16"),
        ("extract:\n  device: tpu\n", "device"),
        ("triggers:\n  threshold: 3\n", "threshold"),
        ("triggers:\n  max_fraction: 0\n", "max_fraction"),
        ("change_score:\n  activity_weight: -5\n", "change_score.activity_weight must be >= 0"),
        ("change_score:\n  light_from: 1.5\n", "change_score.light_from must be within 0..1"),
        ("change_score:\n  cut_scale: 0\n", "change_score.cut_scale must be > 0"),
        ("triggers:\n  threshold: abc\n", "triggers.threshold must be a number"),
        ("model:\n  encoder: {d_model: ten}\n", "model.encoder.d_model must be a whole number"),
        ("- a list\n", "mapping"),
        ("extract:\n  fps: 3\n decode_device: cpu\n", r"(?s)not valid YAML.*bad\.yaml\", line 3"),  # where to look
    ],
)
def test_bad_settings_are_rejected_with_their_name(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(path)
    assert str(path) in str(refused.value)  # which file to mend


def _load(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path)


def test_model_and_adapter_sections_are_the_models_own_configs(tmp_path):
    cfg = _load(
        tmp_path,
        "model:\n  encoder: {use_deltas: false, kind: lstm, d_model: 32}\n  grid: null\n  detector: {threshold: 0.4}\n"
        "adapter:\n  lora_rank: 8\n  lora_alpha: 32\n  lora_target_modules: [q_proj, k_proj, v_proj]\n"
        '  prompt: "USER: <video>\\nWhat moved? ASSISTANT:"\n',
    )
    assert isinstance(cfg.model, TriggerModelConfig) and isinstance(cfg.adapter, AdapterConfig)
    assert cfg.model.encoder.use_deltas is False and cfg.model.encoder.kind == "lstm" and cfg.model.grid is None
    assert cfg.model.detector.input_dim == 32  # follows the encoder's d_model
    assert cfg.adapter.lora_alpha == 32 and cfg.adapter.lora_target_modules == ("q_proj", "k_proj", "v_proj")
    assert cfg.adapter.prompt == "USER: <video>\nWhat moved? ASSISTANT:"
    built = build_trigger_model_config(cfg, 40, ("a", "b"), min_event_frames=3)
    assert built.encoder.input_dim == 40 + COLOR_HIST_DIM and built.encoder.input_groups == (40, COLOR_HIST_DIM)
    assert built.encoder.use_deltas is False and built.detector.num_classes == 2 and built.detector.threshold == 0.4
    assert built.labels == ("a", "b") and built.min_event_frames == 3
    assert _load(tmp_path, dump_config(cfg)) == cfg  # the resolved config round-trips, nested sections too


def test_the_recipe_defaults_are_the_model_configs_defaults():
    cfg = Config()
    assert cfg.model == TriggerModelConfig() and cfg.adapter == AdapterConfig()
    assert (cfg.model.encoder.d_model, cfg.model.window, cfg.model.grid.size, cfg.model.detector.hidden_sizes) == (
        64,
        16,
        8,
        (32,),
    )
    assert cfg.describe.detector_threshold == DetectObjectsStage().threshold
    assert cfg.describe.max_new_tokens == AdapterConfig().max_new_tokens == DescribeStage(model="m").max_new_tokens


def test_settings_filled_from_the_data_are_refused_with_what_sets_them(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.encoder\.input_dim in .*c\.yaml is not a setting.*cache"):
        _load(tmp_path, "model:\n  encoder: {input_dim: 512}\n")
    with pytest.raises(ConfigError, match=r"model\.labels.*annotations"):
        _load(tmp_path, "model:\n  labels: [a, b]\n")


@pytest.mark.parametrize(
    "text, message",
    [
        ("model:\n  encoder: {d_modle: 32}\n", r"unknown setting.*model\.encoder\.d_modle in .*c\.yaml"),
        ("adapter:\n  lora_alfa: 8\n", r"unknown setting.*adapter\.lora_alfa in .*c\.yaml"),
        ("model:\n  encoder: {d_model: 30, num_heads: 4}\n", r"model\.encoder: d_model \(30\) must be divisible"),
        ("model:\n  encoder: 5\n", r"model\.encoder in .*c\.yaml must be a mapping"),
        ("model:\n  grid: {size: 3}\n", r"model\.grid\.size must divide"),
        ("model:\n  detector: {threshold: 1.5}\n", r"model\.detector: threshold must be within"),
        ("adapter:\n  prompt: no placeholder\n", r"adapter: the prompt must contain <video>"),
        ("adapter:\n  llm_kind: gpt\n", r"adapter: llm_kind must be one of"),
        ("adapter:\n  lora_target_modules: q_proj\n", r"adapter\.lora_target_modules must be a list"),
        ("model:\n  d_model: 32\n  encoder: {d_model: 64}\n", r"sets both model\.d_model .*model\.encoder\.d_model"),
    ],
)
def test_bad_model_settings_are_rejected_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


# The model section as vtm wrote it before the model configs were nested (default_config.yaml, resolved configs
# saved beside outputs, `vtm calibrate` files).
FLAT_MODEL = """
model:
  encoder_kind: lstm
  d_model: 32
  num_layers: 2
  num_heads: 4
  dropout: 0.2
  detector_hidden: [16, 8]
  window: 12
  color_inputs: true
  grid_size: 4
  grid_hidden: 16
  threshold: 0.4
  llm: some/llava
  llm_kind: llava
  num_soft_tokens: 2
  adapter_hidden: 64
  lora_rank: 4
"""


def test_an_old_flat_model_section_still_loads(tmp_path):
    cfg = _load(tmp_path, FLAT_MODEL)
    m, a = cfg.model, cfg.adapter
    assert (m.encoder.kind, m.encoder.d_model, m.encoder.num_layers, m.encoder.num_heads) == ("lstm", 32, 2, 4)
    assert m.encoder.dropout == m.detector.dropout == 0.2 and m.detector.hidden_sizes == (16, 8)
    assert m.window == 12 and m.grid.size == 4 and m.grid.hidden == 16 and m.detector.threshold == 0.4
    assert (a.llm, a.llm_kind, a.num_soft_tokens, a.hidden_dim, a.lora_rank) == ("some/llava", "llava", 2, 64, 4)
    no_grid = _load(tmp_path, FLAT_MODEL.replace("grid_size: 4", "grid_size: 0"))
    assert no_grid.model.grid is None
    assert load_config(None, {"model": {"d_model": 32}}).model.encoder.d_model == 32  # from Python too
    assert load_config(None, {"model": {"grid_size": 0, "window": None}}).model.grid is None


def test_a_checkpoints_saved_model_config_still_loads():
    saved = TriggerModelConfig(labels=("a", "b"), detector=TriggerDetectorConfig(num_classes=2)).to_dict()
    assert TriggerModelConfig.from_dict(saved) == TriggerModelConfig(
        labels=("a", "b"), detector=TriggerDetectorConfig(num_classes=2)
    )
    older = {k: v for k, v in saved.items() if k not in ("grid", "color_inputs", "min_event_frames")}
    old = TriggerModelConfig.from_dict(older)  # written before the colour inputs: none of them
    assert old.grid is None and old.color_inputs is False and old.detector.input_dim == saved["detector"]["input_dim"]


@pytest.mark.parametrize("command", ["infer", "ui"])
def test_infer_and_ui_take_a_config_and_their_flags_fall_back_to_it(command):
    from vtm.pipeline.cli import main

    params = {p.name: p for p in main.commands[command].params}
    assert "config_path" in params
    defaults = {n: p.to_info_dict()["default"] for n, p in params.items()}
    assert {n: d for n, d in defaults.items() if d not in (None, False)} == {}  # no default restated beside the config
