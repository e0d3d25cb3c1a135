"""Decoding with PyNvVideoCodec (stages/nvdec.py): its torch helpers against the CPU decoder's outputs on any machine,
the fallback to the CPU where it cannot run, and on a GPU machine the same frames as the CPU decoder."""

import numpy as np
import pytest
import torch

from vtm.stages.decode import DecodeStage, decode_batch, luma_cells, probe
from vtm.stages.nvdec import nv12_luma_cells, nv12_to_rgb, nvdec_available


def _frames(path, n=6):
    import av

    with av.open(str(path)) as container:
        return [f for _, f in zip(range(n), container.decode(video=0))]


def test_luma_cells_from_nv12_equal_the_cpu_decoders(sample_dir):
    """The cut measure reads the same lattice of luma pixels from an NV12 plane on the GPU as from the CPU's frames."""
    frames = _frames(sample_dir / "cuts/street shots.mp4")
    nv12 = torch.from_numpy(np.stack([f.reformat(format="nv12").to_ndarray() for f in frames]))
    h = frames[0].height
    np.testing.assert_allclose(nv12_luma_cells(nv12[:, :h]).numpy(), np.stack([luma_cells(f) for f in frames]))


def test_rgb_from_nv12_is_the_cpu_decoders_within_a_few_levels(sample_dir):
    """Sampled frames converted and resized on the GPU differ from FFmpeg's scaler on the CPU by its resampling
    filter only: a few levels on average, no colour shift."""
    frames = _frames(sample_dir / "cuts/street shots.mp4")
    nv12 = torch.from_numpy(np.stack([f.reformat(format="nv12").to_ndarray() for f in frames]))
    cpu = np.stack([f.to_ndarray(format="rgb24", width=64, height=64) for f in frames]).astype(float)
    gpu = nv12_to_rgb(nv12, 64).numpy().astype(float)
    assert gpu.shape == cpu.shape
    assert np.abs(gpu - cpu).mean() < 3.0
    assert np.abs((gpu - cpu).mean(axis=(0, 1, 2))).max() < 2.0  # per channel: BT.601 limited range, as FFmpeg's


def _segment(stage: DecodeStage, path) -> dict:
    plan = probe(path, fps=3.0)
    return stage(
        decode_batch(
            path, plan.frame_index, plan.rotation, plan.decoder, plan.pts_around(plan.frame_index), plan.n_frames
        )
    )


@pytest.mark.skipif(nvdec_available(), reason="checks the fallback where PyNvVideoCodec or a GPU is missing")
def test_nvdec_without_pynvvideocodec_or_a_gpu_decodes_on_the_cpu(sample_dir):
    path = sample_dir / "cuts/street shots.mp4"
    cpu = _segment(DecodeStage(image_size=64, nearest_frames=True), path)
    nvdec = _segment(DecodeStage(image_size=64, nearest_frames=True, device="nvdec"), path)
    assert nvdec["decoded_with"] == cpu["decoded_with"] != "nvdec"
    assert np.array_equal(nvdec["frames"], cpu["frames"]) and np.array_equal(nvdec["frame_index"], cpu["frame_index"])
    assert "n_frames" not in nvdec  # the batch's plan details stay in the decode task


@pytest.mark.gpu
@pytest.mark.parametrize("rel", ["cuts/street shots.mp4", "phone/portrait.mp4", "cámara 1/entrada.mp4"])
def test_nvdec_decodes_what_the_cpu_decodes(sample_dir, rel):
    """On a GPU machine with PyNvVideoCodec: the sampled frames (rotated as displayed), their places and the cut
    measure match the CPU decoder's (which may take a neighbour frame where NVDEC returns the frame itself). MP4s
    only: a WebM's container does not give the frame count checked against the plan, so it decodes on the CPU."""
    if not nvdec_available():
        pytest.skip("needs PyNvVideoCodec (pip install pynvvideocodec) and a CUDA GPU")
    path = sample_dir / rel
    cpu = _segment(DecodeStage(image_size=64, nearest_frames=True), path)
    gpu = _segment(DecodeStage(image_size=64, nearest_frames=True, device="nvdec"), path)
    assert gpu["decoded_with"] == "nvdec"
    plan = probe(path, fps=3.0)
    assert np.array_equal(gpu["frame_index"], plan.frame_index)
    assert np.abs(gpu["frame_index"] - cpu["frame_index"]).max() <= 1
    same = gpu["frame_index"] == cpu["frame_index"]
    assert np.abs(gpu["frames"][same].astype(int) - cpu["frames"][same].astype(int)).mean() < 3.0
    if rel.startswith("cuts/"):
        jumps = [np.nan_to_num(out["frame_change"][:, 0] - out["frame_change"][:, 1]) for out in (cpu, gpu)]
        assert set(np.argsort(jumps[0])[-3:]) == set(np.argsort(jumps[1])[-3:])  # the clip's three cuts
