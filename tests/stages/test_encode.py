import time

import numpy as np
import pytest
import torch

from vtm.stages.encode import EncodeStage, pick_device

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _frames(n=5):
    return np.random.default_rng(0).integers(0, 255, (n, 224, 224, 3), dtype=np.uint8)


def test_encode_stage_maps_frames_to_float16_features_and_drops_pixels():
    stage = EncodeStage(device="cpu", max_batch=2)
    t = time.time()
    stage.setup()
    setup = stage.setup_timing()  # where a model load's seconds went (bench/bench_extract.py prints them)
    assert t <= setup["started_at"] and setup["build_s"] > 0
    assert setup["import_s"] + setup["build_s"] + setup["to_device_s"] <= time.time() - t
    out = stage({"frames": _frames(), "timestamps": np.arange(5.0)})
    assert "frames" not in out and out["timestamps"].tolist() == [0, 1, 2, 3, 4]
    assert out["features"].shape == (5, 1280) and out["features"].dtype == np.float16
    whole = EncodeStage(device="cpu", max_batch=64)
    whole.setup()
    np.testing.assert_allclose(
        whole({"frames": _frames()})["features"], out["features"], atol=2e-3
    )  # splitting is invisible


def test_asking_for_cuda_without_a_gpu_says_so():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="--device cpu"):
        pick_device("cuda")


@pytest.mark.gpu
@gpu
def test_gpu_half_precision_agrees_with_cpu():
    cpu, cuda = EncodeStage(device="cpu"), EncodeStage(device="cuda")
    cpu.setup()
    cuda.setup()
    a = cpu({"frames": _frames()})["features"].astype(np.float32)
    b = cuda({"frames": _frames()})["features"].astype(np.float32)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.995


@pytest.mark.gpu
@gpu
def test_gpu_stage_runs_fp16_in_batches_of_64_and_splitting_is_invisible():
    stage = EncodeStage(device="cuda")
    stage.setup()
    assert stage.max_batch == 64 and next(stage.model.parameters()).dtype == torch.float16
    frames = _frames(150)  # batches of 64, 64 and 22
    out = stage({"frames": frames, "timestamps": np.arange(150.0)})
    assert out["features"].shape == (150, stage.info.feature_dim) and out["features"].dtype == np.float16
    assert np.isfinite(out["features"]).all()  # no fp16 overflow
    small = EncodeStage(device="cuda", max_batch=7)
    small.setup()
    a, b = out["features"][:20].astype(np.float32), small({"frames": frames[:20]})["features"].astype(np.float32)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.999
