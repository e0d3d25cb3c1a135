"""Decoding on the GPU's video decoders (NVDEC) through PyNvVideoCodec, with the frames kept on the GPU.

PyAV's NVDEC (`decode.cuda_hwaccel`) copies every decoded frame to memory and decodes no faster than the cores of a
16-core machine. PyNvVideoCodec hands the NV12 frames over as CUDA memory: here the luma of every frame (for the cut
measure) and the sampled frames, converted to RGB and resized, are made on the GPU, and only those small results are
copied back. Alone, its decoders give fewer frames per second than 16 cores; beside them they add about 75 %
(bench/bench_gpu_decoders.py), so extract sends only some decode tasks here (`extract.decode_device: nvdec`).

`nv12_luma_cells` and `nv12_to_rgb` are plain torch and run on any device; `decode_nvdec` needs PyNvVideoCodec
(`pip install pynvvideocodec`) and a CUDA GPU, and returns None wherever it cannot vouch for the frames, so that the
caller decodes them on the CPU instead.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from vtm.cache.schema import GRID
from vtm.stages.decode import LUMA_LATTICE, lattice_axes

# BT.601, limited range (what FFmpeg's scaler assumes for untagged video, as PyAV's `to_ndarray` does on the CPU):
# RGB = M @ (Y - 16, U - 128, V - 128).
_YUV_TO_RGB = ((1.164, 0.0, 1.596), (1.164, -0.392, -0.813), (1.164, 2.017, 0.0))


@functools.lru_cache(maxsize=1)
def nvdec_available() -> bool:
    """Whether this process can decode with PyNvVideoCodec: the package installed and a CUDA GPU visible."""
    try:
        import PyNvVideoCodec  # noqa: F401
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def nv12_luma_cells(luma):
    """(B, H, W) uint8 luma planes (torch) -> (B, GRID, GRID) float32 mean luma (0..255) of each cell, from the same
    lattice of pixels as `decode.luma_cells` reads on the CPU (equal values for the same decoded frames)."""
    import torch

    rows, cols = (torch.from_numpy(axis).to(luma.device) for axis in lattice_axes(*luma.shape[1:]))
    picked = luma.index_select(1, rows).index_select(2, cols).to(torch.int32)
    cells = picked.reshape(-1, GRID, LUMA_LATTICE, GRID, LUMA_LATTICE).sum(dim=(2, 4))
    return cells.to(torch.float32) / (LUMA_LATTICE * LUMA_LATTICE)


def nv12_to_rgb(nv12, size: int):
    """(B, 3H/2, W) uint8 NV12 frames (torch) -> (B, size, size, 3) uint8 RGB, resized in YUV and then converted,
    as FFmpeg's scaler does for PyAV on the CPU (a few levels apart: another resampling filter)."""
    import torch
    import torch.nn.functional as F

    b, rows, w = nv12.shape
    h = rows * 2 // 3
    y = nv12[:, None, :h].float()
    uv = nv12[:, h:].reshape(b, h // 2, w // 2, 2).permute(0, 3, 1, 2).float()
    y = F.interpolate(y, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    uv = F.interpolate(uv, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    yuv = torch.cat([y - 16.0, uv - 128.0], dim=1)
    rgb = torch.einsum("ij,bjhw->bhwi", torch.tensor(_YUV_TO_RGB, device=nv12.device), yuv)
    return rgb.floor_().clamp_(0, 255).to(torch.uint8)  # truncated, as FFmpeg's fixed point does: 0.5 levels nearer


def decode_nvdec(
    path: Path | str,
    frame_index: np.ndarray,
    pts: np.ndarray,
    pts_start: int,
    n_frames: int,
    size: int,
    rotation: int,
    gpu: int = 0,
):
    """Decode frames `pts_start` .. the last of `frame_index` on NVDEC and return the wanted ones as the CPU decoder
    does: (frames (n, size, size, 3) uint8, frame indices, "nvdec", the decoded frames' times, the change between each
    and the one before, as a fraction of 255 — see `decode.FrameChanges`). `pts`: the plan's times of frames
    `pts_start`, `pts_start + 1`, ...; `n_frames`: the plan's frame count.

    Frames are matched to the plan by their place in display order, so a stream whose frame count differs from the
    plan's (frames the demuxer drops, e.g. before an edit list's start) returns None, as does any decoder error: the
    caller then decodes on the CPU.
    """
    import PyNvVideoCodec as nvc
    import torch

    wanted = np.asarray(frame_index, np.int64)
    last = int(min(wanted[-1], pts_start + len(pts) - 1))
    try:
        decoder = nvc.SimpleDecoder(
            str(path), gpu_id=gpu, use_device_memory=True, output_color_type=nvc.OutputColorType.NATIVE
        )
        if len(decoder) != n_frames:  # also where the container does not say (WebM, MKV): those go to the CPU
            return None
        height = decoder.get_stream_metadata().height
        decoder.seek_to_index(int(pts_start))
        cells, picked = [], []
        got = pts_start
        while got <= last:
            batch = decoder.get_batch_frames(min(64, last - got + 1))
            if not batch:
                return None  # the stream ended before the plan's frames did
            if any(not str(f.format).endswith("NV12") for f in batch):
                return None  # 10-bit or 4:4:4 output: the CPU decoder reads those
            nv12 = torch.stack([torch.from_dlpack(f) for f in batch])
            if nv12.dtype != torch.uint8 or nv12.shape[1] != height * 3 // 2:
                return None  # padded or deeper surfaces: not the layout read below
            cells.append(nv12_luma_cells(nv12[:, : nv12.shape[1] * 2 // 3]))
            here = np.arange(got, got + len(batch))
            keep = np.isin(here, wanted)
            if keep.any():
                picked.append(nv12_to_rgb(nv12[torch.from_numpy(np.flatnonzero(keep)).to(nv12.device)], size))
            got += len(batch)
    except Exception:  # noqa: BLE001 - PyNvVideoCodec raises its own types: any failure is the CPU decoder's turn
        return None
    cells = torch.cat(cells)
    changes = (cells[1:] - cells[:-1]).abs().mean(dim=(1, 2)).div_(255.0).cpu().numpy().astype(np.float64)
    frames = torch.cat(picked).cpu().numpy()
    if len(frames) != len(wanted):
        return None
    k = (rotation // 90) % 4
    frames = np.ascontiguousarray(np.rot90(frames, k=k, axes=(1, 2))) if k else frames
    times = np.asarray(pts, np.float64)[1 : last - pts_start + 1]
    return frames, wanted, "nvdec", times, changes
