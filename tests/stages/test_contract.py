"""Every stage in vtm.stages follows the contract of stages/base.py: found by walking the package, so a new stage
that does not declare itself, or has no case below, fails here."""

import ast
import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import torch

import vtm.stages
from vtm.data.sample_archive import write_video
from vtm.models.tiny import make_tiny_detr, make_tiny_llava
from vtm.stages.base import Resources, Stage
from vtm.stages.change_score import ChangeScoreStage
from vtm.stages.decode import DecodeStage, ProbeStage, decode_batch, probe
from vtm.stages.describe import DescribeStage
from vtm.stages.detect import DetectObjectsStage
from vtm.stages.encode import EncodeStage
from vtm.stages.select_windows import SelectWindowsStage

STAGES_DIR = Path(vtm.stages.__path__[0])


def _stage_classes() -> dict[str, type]:
    """Every class of the stages package named *Stage or subclassing Stage, by name."""
    found = {}
    for info in pkgutil.iter_modules(vtm.stages.__path__):
        module = importlib.import_module(f"vtm.stages.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (
                cls is not Stage
                and cls.__module__ == module.__name__
                and (name.endswith("Stage") or issubclass(cls, Stage))
            ):
                found[name] = cls
    return found


STAGES = _stage_classes()


def _is_empty(function) -> bool:
    body = ast.parse(inspect.getsource(function).strip()).body[0].body
    return all(isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)) for s in body)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_stage_declares_the_contract(name):
    cls = STAGES[name]
    assert issubclass(cls, Stage), f"{name} does not subclass vtm.stages.base.Stage"
    assert dataclasses.is_dataclass(cls), f"{name}: a stage's settings are its dataclass fields"
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert "resources" in fields and isinstance(fields["resources"].default, Resources), (
        f"{name} declares no default `resources: Resources`"
    )
    for key_set in ("reads", "optional", "writes", "drops"):
        keys = getattr(cls, key_set)
        assert isinstance(keys, tuple) and all(isinstance(k, str) for k in keys), f"{name}.{key_set}: a tuple of str"
        assert key_set not in fields, f"{name}.{key_set} is class-level data, not a setting"
    assert cls.writes, f"{name} writes nothing"
    assert not set(cls.reads) & set(cls.optional), f"{name}: a key is both read and optional"
    assert set(cls.drops) <= set(cls.reads) | set(cls.optional), f"{name} drops keys it does not read"
    assert "__call__" in vars(cls), f"{name} does not map a batch"
    assert "setup" not in vars(cls) or not _is_empty(cls.setup), f"{name}: an empty setup() is Stage's already"


def test_no_stage_module_imports_ray():
    for path in sorted(STAGES_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            assert not any(n == "ray" or n.startswith("ray.") for n in names), f"{path.name} imports Ray"


# --- each stage on a small real batch holding exactly its declared input keys ---------------------------------


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(12)]
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(path, frames, fps=6)
    return path


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("models")
    return {"llava": str(make_tiny_llava(root / "llava")), "detr": str(make_tiny_detr(root / "detr"))}


def _rng_frames(n: int = 2, size: int = 48) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


def _signals(n: int = 12) -> dict:
    rng = np.random.default_rng(0)
    return {
        "timestamps": np.arange(n) / 3.0,
        "features": rng.normal(size=(n, 8)).astype(np.float32),
        "hist": rng.dirichlet(np.ones(64), size=n).astype(np.float32),
        "grid": rng.uniform(0, 255, (n, 16, 16, 3)).astype(np.float32),
        "score": np.sin(np.arange(n)).clip(0, 1),
    }


def _decode_input(video: Path, nearest: bool) -> dict:
    plan = probe(video, 3.0)
    idx = plan.frame_index[:3]
    return decode_batch(video, idx, plan.rotation, plan.decoder, plan.pts_around(idx) if nearest else None)


# name -> (stage, batch, keys beyond the declared writes that this case's settings add)
CASES = {
    "ProbeStage": lambda video, models: (ProbeStage(fps=3.0), {"path": str(video)}, set()),
    "DecodeStage": lambda video, models: (DecodeStage(image_size=32), _decode_input(video, nearest=False), set()),
    "EncodeStage": lambda video, models: (EncodeStage(device="cpu"), {"frames": _rng_frames()}, set()),
    "ChangeScoreStage": lambda video, models: (
        ChangeScoreStage(),
        {k: v for k, v in _signals().items() if k in ChangeScoreStage.reads},
        set(),
    ),
    "SelectWindowsStage": lambda video, models: (
        SelectWindowsStage(threshold=0.5),
        {k: v for k, v in _signals().items() if k in SelectWindowsStage.reads},
        set(),
    ),
    "DetectObjectsStage": lambda video, models: (
        DetectObjectsStage(model=models["detr"], threshold=0.0, device="cpu"),
        {"frames": _rng_frames()},
        set(),
    ),
    "DescribeStage": lambda video, models: (
        DescribeStage(model=models["llava"], max_new_tokens=2, device="cpu", summary="join"),
        {"frames": _rng_frames()},
        set(),
    ),
}

# Settings that use a stage's optional keys: the batch may hold them, the output holds what they add.
VARIANTS = {
    "DecodeStage nearest frames": lambda video, models: (
        DecodeStage(image_size=32, nearest_frames=True),
        _decode_input(video, nearest=True),
        set(),
    ),
    "DescribeStage with a detector": lambda video, models: (
        DescribeStage(
            model=models["llava"],
            max_new_tokens=2,
            device="cpu",
            summary="join",
            detector=DetectObjectsStage(model=models["detr"], threshold=0.0),
        ),
        {"frames": _rng_frames()},
        {"objects"},
    ),
}


def test_every_stage_has_a_case():
    assert set(CASES) == set(STAGES), "add a case for each stage (and drop the cases of stages that are gone)"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a busy 2-core machine: thread start-up would dominate
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("case", sorted(CASES) + sorted(VARIANTS))
def test_a_batch_of_the_declared_keys_gives_the_declared_keys(case, video, tiny_models):
    stage, batch, added = {**CASES, **VARIANTS}[case](video, tiny_models)
    cls = type(stage)
    if case in CASES:
        assert set(batch) == set(cls.reads)
    else:
        assert set(cls.reads) <= set(batch) <= set(cls.reads) | set(cls.optional)
    assert added <= set(cls.optional), "what some settings add is declared optional"
    stage.setup()
    out = stage(dict(batch))
    assert set(out) == (set(batch) - set(cls.drops)) | set(cls.writes) | added
    # other keys pass through untouched
    out = stage({**batch, "passenger": "kept"})
    assert out["passenger"] == "kept"
