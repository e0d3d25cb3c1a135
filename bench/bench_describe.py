"""`vtm describe` against its baseline, `--dense` (every sampled frame to the VLM), on one cache in one run.

    python bench/bench_describe.py [--videos 12] [--seconds 20] [--model PATH] [--out DIR]

Makes a sparse-event archive (`make_archive`: quiet scenes, cuts, objects entering; ground truth
beside it), extracts it once (untimed), then describes it twice on the same local Ray with the same
model: triggered windows only (the default), and `--dense`. Prints windows/s, the share of sampled
frames sent to the VLM (target: <= 30 % while every annotated event still gets a description) and
VLM time. Then the describe stage alone, in this process, over the same key frames with batch size 1
and 8: the batching speed-up (its target is for a GPU; without one it is measured on the CPU and
labelled so). The default model is the tiny offline LLaVA, so the VLM time is small next to Ray and
decoding; pass --model for a real LLaVA on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

from vtm.data.sample_archive import make_archive, read_ground_truth  # noqa: E402
from vtm.models.tiny import make_tiny_llava  # noqa: E402
from vtm.pipeline.config import load_config  # noqa: E402
from vtm.pipeline.describe import run_describe  # noqa: E402
from vtm.pipeline.evaluation import event_scores  # noqa: E402
from vtm.pipeline.extract import run_extract  # noqa: E402
from vtm.stages.decode import DecodeStage  # noqa: E402
from vtm.stages.describe import DescribeStage  # noqa: E402


def described_times(out: Path, videos: list[str]) -> dict[str, list[float]]:
    return {p: [t["timestamp"] for t in json.loads((out / f"{p}.json").read_text())["triggers"]] for p in videos}


def batching(model: str, data: Path, analyses: dict[str, list[dict]], image_size: int, max_new_tokens: int) -> dict:
    """The describe stage alone over the sparse run's key frames, batch size 1 against 8."""
    decode = DecodeStage(image_size=image_size)
    frames = np.concatenate(
        [
            decode({"path": str(data / p), "frame_index": np.array([t["frame_index"] for t in ts])})["frames"]
            for p, ts in analyses.items()
            if ts
        ]
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "windows": len(frames)}
    for size in (1, 8):
        stage = DescribeStage(model=model, max_new_tokens=max_new_tokens, max_batch=size, device=device)
        stage.setup()
        stage({"frames": frames[:size]})  # warm-up (kernels, caches)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        stage({"frames": frames})
        if device == "cuda":
            torch.cuda.synchronize()
        result[f"batch_{size}_windows_per_s"] = len(frames) / (time.perf_counter() - t0)
    result["speedup"] = result["batch_8_windows_per_s"] / result["batch_1_windows_per_s"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--model", help="LLaVA path or hub id (default: a tiny random LLaVA built offline)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="vtm-bench-describe-"))
    data = make_archive(out / "videos", args.videos, seconds=args.seconds, seed=0)
    model = args.model or str(make_tiny_llava(out / "tiny-llava"))
    image_size = 64 if args.model is None else 336  # the tiny LLaVA sees 32 x 32
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    assert run_extract(data, out / "cache", progress=False).all_ok
    truth = read_ground_truth(data)["events"]

    results = {}
    for name, dense in (("describe", False), ("--dense", True)):
        cfg = load_config(
            None,
            {
                "describe": {
                    "model": model,
                    "dense": dense,
                    "image_size": image_size,
                    "max_new_tokens": args.max_new_tokens,
                }
            },
        )
        s = run_describe(out / "cache", out / name.strip("-"), cfg, progress=False)
        assert s.all_ok, s.failed
        coverage = event_scores(described_times(out / name.strip("-"), list(truth)), truth)
        results[name] = {**s.report(), "events": coverage["tp"] + coverage["fn"], "events_described": coverage["tp"]}
    print(
        f"{'':<10} {'windows':>8} {'wall s':>7} {'windows/s':>10} {'VLM s':>6} {'frames':>7} {'to VLM':>7} "
        f"{'share':>6} {'events described':>17}"
    )
    for name, r in results.items():
        print(
            f"{name:<10} {r['windows']:>8} {r['seconds']:>7.1f} {r['windows_per_s']:>10.1f} "
            f"{r['vlm_seconds']:>6.1f} {r['frames_sampled']:>7} "
            f"{r['frames_to_vlm']:>7} {r['vlm_share']:>6.1%} {r['events_described']:>8} of {r['events']:<6}"
        )
    sparse, dense = results["describe"], results["--dense"]
    print(
        f"describe sends {sparse['vlm_share']:.1%} of sampled frames to the VLM (target <= 30 %), describes "
        f"{sparse['events_described']} of {sparse['events']} annotated events, and takes "
        f"{sparse['seconds'] / dense['seconds']:.2f}x "
        f"the wall time and {sparse['vlm_seconds'] / max(dense['vlm_seconds'], 1e-9):.2f}x the VLM time of --dense"
    )
    ray.shutdown()

    analyses = {p: json.loads((out / "describe" / f"{p}.json").read_text())["triggers"] for p in truth}
    b = batching(model, data, analyses, image_size, args.max_new_tokens)
    results["batching"] = b
    note = "" if b["device"] != "cpu" else " (no GPU: measured on the CPU; the batching target is for a GPU)"
    print(
        f"describe stage alone on {b['device']}, {b['windows']} windows: batch 1 {b['batch_1_windows_per_s']:.1f} "
        "windows/s, "
        f"batch 8 {b['batch_8_windows_per_s']:.1f} windows/s, speed-up {b['speedup']:.2f}x{note}"
    )
    (out / "bench_describe.json").write_text(json.dumps(results, indent=2))
    print(f"results: {out / 'bench_describe.json'}")


if __name__ == "__main__":
    main()
