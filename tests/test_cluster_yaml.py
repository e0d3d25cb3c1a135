from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_is_a_valid_ray_cluster_launcher_config():
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    validate_config(prepare_config(config))  # defaults filled in as `ray up` does, then Ray's schema check
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert any("vtm" in cmd and "pip install" in cmd for cmd in config["setup_commands"])
