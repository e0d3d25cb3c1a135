"""Training throughput from the cache: samples/s and the share of step time spent waiting for data.

    python bench/bench_train.py [--videos 40] [--epochs 3] [--out DIR]

Makes a red-object archive, extracts it once (untimed), then trains the default model for a few
epochs four times in the same run: with the training videos' inputs held in memory (the default where
they fit) and with every window read from HDF5 (the baseline, as before inputs were held in memory),
each with DataLoader worker processes (the default) and with reads in the training process. Prints
all four and the speed-ups. Target: under 10 % of step time waiting for data.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from vtm.data.sample_archive import make_red_object_archive  # noqa: E402
from vtm.pipeline import train  # noqa: E402
from vtm.pipeline.config import load_config  # noqa: E402
from vtm.pipeline.extract import run_extract  # noqa: E402
from vtm.pipeline.train import run_train  # noqa: E402

DEFAULT_IN_MEMORY = train.MAX_INPUTS_IN_MEMORY


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="vtm-bench-train-"))
    data = make_red_object_archive(out / "videos", args.videos, seed=0)
    run_extract(data, out / "cache", progress=False)
    results = {}
    for name, in_memory, workers in (
        ("memory, workers", True, 2),
        ("memory, in-process", True, 0),
        ("HDF5, workers", False, 2),
        ("HDF5, in-process", False, 0),
    ):
        train.MAX_INPUTS_IN_MEMORY = DEFAULT_IN_MEMORY if in_memory else 0
        cfg = load_config(
            None,
            {"train": {"epochs": args.epochs, "data_workers": workers, "save_every": args.epochs, "val_fraction": 0.1}},
        )
        r = run_train(out / "cache", data / "annotations.jsonl", out / f"run-{len(results)}", cfg, progress=False)
        results[name] = {"samples_per_s": r.samples_per_s, "data_wait_share": r.data_wait_share}
    print(f"{'inputs, reads':<20} {'samples/s':>10} {'waiting for data':>17}")
    for name, r in results.items():
        print(f"{name:<20} {r['samples_per_s']:>10.1f} {r['data_wait_share']:>16.1%}")
    for reads in ("workers", "in-process"):
        ratio = results[f"memory, {reads}"]["samples_per_s"] / results[f"HDF5, {reads}"]["samples_per_s"]
        print(f"speed-up of inputs in memory over HDF5 reads, {reads}: {ratio:.2f}x")
    print("target: waiting < 10 % with the defaults (memory, workers)")
    (out / "bench_train.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
