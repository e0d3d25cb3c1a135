"""EncodeStage throughput, frames/s: GPU (fp16, batch 64) vs the same machine's CPU, efficientnet_lite0 at 224 px.

    python bench/bench_encode_gpu.py      # needs a CUDA GPU; prints JSON with the ratios

Frames are random (throughput does not depend on content); the timings include the host<->GPU copies.
"""

import json
import os
import sys
import time

import numpy as np
import torch

from vtm.stages.encode import EncodeStage


def fps(stage, n, reps):
    frames = np.random.default_rng(0).integers(0, 255, (n, 224, 224, 3), dtype=np.uint8)
    stage({"frames": frames[: stage.max_batch]})  # warm-up (cuDNN autotune, allocator)
    best = []
    for _ in range(reps):
        t = time.perf_counter()
        stage({"frames": frames})  # returns float16 numpy on the host: includes H2D/D2H
        best.append(n / (time.perf_counter() - t))
    return max(best), float(np.median(best))


if not torch.cuda.is_available():
    sys.exit("bench_encode_gpu.py needs a CUDA GPU")
res = {"torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
g = EncodeStage(device="cuda", max_batch=64)
g.setup()
res["pretrained"] = g.info.pretrained
res["gpu_name"] = torch.cuda.get_device_name()
res["gpu_fp16_b64"] = fps(g, 2048, 5)
c = EncodeStage(device="cpu", max_batch=64)
c.setup()
res["cpu_fp32_b64"] = fps(c, 256, 3)
c16 = EncodeStage(device="cpu")  # the stage's CPU default: batch 16
c16.setup()
res["cpu_fp32_b16"] = fps(c16, 256, 3)
res["ratio_gpu_b64_over_cpu_b64_median"] = res["gpu_fp16_b64"][1] / res["cpu_fp32_b64"][1]
res["ratio_gpu_b64_over_cpu_b16_median"] = res["gpu_fp16_b64"][1] / res["cpu_fp32_b16"][1]
print(json.dumps(res, indent=1))
