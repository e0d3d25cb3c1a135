import pytest
import yaml

from vtm.pipeline.config import DEFAULT_CONFIG_FILE, Config, ConfigError, dump_config, load_config


def test_shipped_default_config_loads_and_equals_the_defaults():
    assert load_config(DEFAULT_CONFIG_FILE) == Config()
    assert set(yaml.safe_load(DEFAULT_CONFIG_FILE.read_text())) == set(Config().to_dict())


def test_every_setting_is_in_the_shipped_config():
    shipped = yaml.safe_load(DEFAULT_CONFIG_FILE.read_text())
    for section, values in Config().to_dict().items():
        assert set(shipped[section]) == set(values), section


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
        ("- a list\n", "mapping"),
    ],
)
def test_bad_settings_are_rejected_with_their_name(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
