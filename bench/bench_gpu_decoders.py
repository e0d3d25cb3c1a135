"""Decode every frame of 720p H.264 clips with fleets of processes: on the CPU, on NVDEC through PyNvVideoCodec,
and both at once (issue 13: can a GPU's video decoders take extract past the CPU decode limit?).

    python bench/bench_gpu_decoders.py CLIP.mp4 [CLIP.mp4 ...] [--out DIR]

Each fleet starts its processes, waits until every one has imported what it needs (and, on the GPU, opened its
CUDA context), then starts them together and prints frames per second over the fleet, each kind's CPU-seconds
(`time.process_time` of its processes, imports included) and the GPU's video-decoder utilisation (nvidia-smi).
Kinds: `cpu` (OpenCV's FFmpeg, one thread), `gpu` (PyNvVideoCodec's SimpleDecoder, frames left on the GPU),
`gpuproc` (the same, plus what extract would do there with torch: the luma of every frame, every tenth frame
converted to RGB and resized to 224). Needs opencv-python, and for the GPU kinds pynvvideocodec and torch with CUDA.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = r"""
import os, sys, time
kind, clip, reps, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if kind == "cpu":
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "threads;1"
    import cv2
    cv2.setNumThreads(1)
else:
    import PyNvVideoCodec as nvc
    import torch
    import torch.nn.functional as F
    torch.zeros(1, device="cuda")  # the CUDA context, before the clock starts
open(f"{go}.ready.{os.getpid()}", "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
t0, n = time.perf_counter(), 0
for _ in range(reps):
    if kind == "cpu":
        cap = cv2.VideoCapture(clip, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        while cap.grab():
            n += 1
        cap.release()
        continue
    decoder = nvc.SimpleDecoder(clip, gpu_id=0, use_device_memory=True, output_color_type=nvc.OutputColorType.NATIVE)
    while frames := decoder.get_batch_frames(32):
        n += len(frames)
        if kind == "gpuproc":
            x = torch.stack([torch.from_dlpack(f) for f in frames])  # (B, 1.5 H, W) NV12
            h = x.shape[1] * 2 // 3
            luma = x[:, :h:12, ::12].float().mean(dim=(1, 2))
            s = x[::10]
            uv = s[:, h:].reshape(len(s), h // 2, -1, 2).permute(0, 3, 1, 2).float()
            yuv = torch.cat([s[:, None, :h].float(), F.interpolate(uv, scale_factor=2)], 1)
            F.interpolate(yuv, size=(224, 224), mode="bilinear", antialias=True).to(torch.uint8).cpu()
            luma.cpu()
    torch.cuda.synchronize()
print(f"RESULT {n} {time.perf_counter() - t0:.3f} {time.process_time():.2f}", flush=True)
"""


def fleet(groups: list[tuple[str, int]], clips: list[str], reps: int, tmp: Path) -> dict:
    """Run `groups` ((kind, processes), ...) at once over `clips`; frames/s over the fleet and per kind."""
    name = "+".join(f"{kind}x{n}" for kind, n in groups)
    worker, go = tmp / "worker.py", tmp / f"go_{name}"
    worker.write_text(WORKER)
    smi = subprocess.Popen(
        ["nvidia-smi", "--query-gpu=utilization.decoder", "--format=csv,noheader,nounits", "-lms", "200"],
        stdout=subprocess.PIPE,
        text=True,
    )
    procs = [
        (
            kind,
            subprocess.Popen(
                [sys.executable, str(worker), kind, clips[i % len(clips)], str(reps), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
        for kind, n in groups
        for i in range(n)
    ]
    deadline = time.perf_counter() + 120
    while len(list(tmp.glob(f"{go.name}.ready.*"))) < len(procs) and time.perf_counter() < deadline:
        if any(p.poll() is not None for _, p in procs):
            break
        time.sleep(0.01)
    t0 = time.perf_counter()
    go.touch()
    kinds: dict[str, dict] = {}
    for kind, p in procs:
        out = p.communicate(timeout=600)[0]
        result = [line.split() for line in out.splitlines() if line.startswith("RESULT")]
        if not result:
            print(f"  a {kind} worker failed: {out[-400:]}", flush=True)
            continue
        k = kinds.setdefault(kind, {"frames": 0, "slowest_s": 0.0, "cpu_s": 0.0})
        k["frames"] += int(result[-1][1])
        k["slowest_s"] = max(k["slowest_s"], float(result[-1][2]))
        k["cpu_s"] += float(result[-1][3])
    wall = time.perf_counter() - t0
    smi.terminate()
    decoder = [float(v) for v in smi.communicate()[0].split() if v.replace(".", "").isdigit()]
    frames = sum(k["frames"] for k in kinds.values())
    row = {
        "fleet": name,
        "frames": frames,
        "wall_s": wall,
        "fps": frames / wall,
        "kinds": {kind: {**k, "fps": k["frames"] / k["slowest_s"]} for kind, k in kinds.items()},
        "decoder_util_mean": sum(decoder) / max(1, len(decoder)),
        "decoder_util_max": max(decoder, default=0.0),
    }
    per_kind = "; ".join(
        f"{kind} {k['frames']} frames at {k['fps']:.0f} fps, {k['cpu_s']:.0f} CPU-s" for kind, k in row["kinds"].items()
    )
    print(
        f"{name:<22} {frames / wall:6.0f} fps over the fleet ({per_kind}); video decoder "
        f"{row['decoder_util_mean']:.0f} % mean, {row['decoder_util_max']:.0f} % max",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="+", help="H.264 clips to decode (the fleets take them in turn)")
    parser.add_argument("--out", type=Path, help="write bench_gpu_decoders.json here")
    args = parser.parse_args()
    clips = [str(Path(c).resolve()) for c in args.clips]
    fleets = [
        ([("cpu", 16)], 1),
        ([("gpu", 1)], 2),
        ([("gpu", 4)], 2),
        ([("gpu", 8)], 2),
        ([("gpu", 16)], 2),
        ([("gpuproc", 16)], 2),
        ([("cpu", 16), ("gpu", 8)], 1),
        ([("cpu", 14), ("gpuproc", 8)], 1),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [fleet(groups, clips, reps, Path(tmp)) for groups, reps in fleets]
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_gpu_decoders.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
