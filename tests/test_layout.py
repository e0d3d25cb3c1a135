"""The folders' import rules (docs/architecture.md): each layer imports only the layers below it.

models/, stages/ and cache/ are tested by calling them directly, so they never import Ray or the jobs; the
faces in ui/ are built on the jobs, and a job uses only ui's pure renderers (plots, thumbnails, speech).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# folder -> the vtm packages its modules may import (besides their own)
MAY_IMPORT = {
    "models": set(),
    "cache": set(),
    "data": set(),
    "stages": {"models", "cache"},
    "pipeline": {"models", "stages", "cache", "data", "ui"},
    "ui": {"models", "stages", "cache", "pipeline"},
}
NO_RAY = {"models", "stages", "cache", "data", "ui"}
RENDERERS = {"vtm.ui.plots", "vtm.ui.thumbnails", "vtm.ui.speech"}


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return names


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).glob("*.py"))


@pytest.mark.parametrize("folder", sorted(MAY_IMPORT))
def test_each_folder_imports_only_the_layers_below_it(folder):
    wrong = []
    for path in modules(folder):
        for name in imports(path):
            parts = name.split(".")
            if parts[0] == "vtm" and len(parts) > 1 and parts[1] not in MAY_IMPORT[folder] | {folder}:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
            if parts[0] == "ray" and folder in NO_RAY:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_jobs_use_only_the_pure_renderers_of_ui():
    """The web page and the report are built on the jobs; only the CLI (the command-line face) starts them."""
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules("pipeline")
        if path.name != "cli.py"
        for name in imports(path)
        if name.startswith("vtm.ui.") and name.count(".") == 2 and name not in RENDERERS
    ]
    assert not wrong, "\n".join(wrong)


def test_the_rules_see_every_folder():
    """A new top-level package must get a rule here before it can import anything."""
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(MAY_IMPORT)


def test_reading_a_config_and_starting_a_command_import_no_torch():
    """torch takes seconds to import (most of `vtm --help`'s time, and of a re-run with nothing to do): only the code
    that runs a model imports it, when it runs. The configs live apart from the models for this (models/configs.py,
    models/encoder_weights.py)."""
    import subprocess
    import sys

    code = (
        "import sys; import vtm.pipeline.cli, vtm.pipeline.extract, vtm.pipeline.config, vtm.pipeline.checkpoint; "
        "print(sorted(m for m in ('torch', 'transformers', 'timm', 'torchvision') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
