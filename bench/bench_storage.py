"""Reading an archive from object storage against reading the same archive from local disk, in one run.

    python bench/bench_storage.py [--videos 6] [--seconds 30] [--repeats 3] [--no-extract] [--out DIR]

Generates an archive (`make_archive`, 320x240 25 fps), starts a real S3-compatible server on 127.0.0.1
(moto's, as the tests do: tests/s3_server.py) and uploads the archive to it. Then, alternating local and
S3 runs `--repeats` times and keeping each one's median:

1. decode (PyAV both): probe + decode every sampled frame in extract's segments, in this process, the
   local files read with the decoder the S3 objects are streamed through (PyAV), so the ratio is the
   cost of the store alone. Target: S3 / local <= 1.3.
2. decode (as extract reads): the same, local files with extract's default decoder (decord).
3. extract: the whole `vtm extract` (fresh cache, its own local Ray, in a child process), from the
   folder and from s3://. Skipped with --no-extract.

Prints seconds and the S3 / local ratio of each; writes DIR/bench_storage.json with --out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from vtm.data.sample_archive import make_archive  # noqa: E402
from vtm.pipeline.discover import discover_videos  # noqa: E402
from vtm.stages.decode import DecodeStage, probe  # noqa: E402

SEGMENT = 64  # sampled frames per decode call, as extract's default segment_frames


def _s3_server_module():
    spec = importlib.util.spec_from_file_location(
        "s3_server", Path(__file__).resolve().parents[1] / "tests" / "s3_server.py"
    )
    module = sys.modules["s3_server"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decode_all(locations: list, force_pyav: bool) -> tuple[float, int]:
    """Seconds to probe and decode every sampled frame of each video, and the frames decoded."""
    decode = DecodeStage(image_size=224)
    frames = 0
    started = time.perf_counter()
    for location in locations:
        plan = probe(location, 3.0)
        decoder = "pyav" if force_pyav else plan.decoder
        for s in range(0, len(plan.frame_index), SEGMENT):
            out = decode(
                {
                    "path": str(location),
                    "frame_index": plan.frame_index[s : s + SEGMENT],
                    "rotation": plan.rotation,
                    "decoder": decoder,
                }
            )
            frames += len(out["frames"])
    return time.perf_counter() - started, frames


def extract_seconds(source: str, cache: Path) -> float:
    """A whole `vtm extract` in a child process with its own local Ray."""
    env = {**os.environ, "RAY_ADDRESS": "local"}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "vtm.pipeline.cli", "extract", source, "--cache", str(cache), "--no-progress"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-extract", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vtm-bench-storage-"))
    data = make_archive(work / "videos", args.videos, seconds=args.seconds, seed=3, width=320, height=240)
    servers = _s3_server_module()
    endpoint = servers.free_endpoint()
    os.environ.update({**servers.ACCESS, "AWS_ENDPOINT_URL": endpoint})
    server = servers.start_server(endpoint)
    try:
        server.upload(data, "bench", "archive")
        local = [v.path for v in discover_videos(data)]
        remote = [v.path for v in discover_videos("s3://bench/archive")]
        assert [Path(p).name for p in local] == [u.rsplit("/", 1)[1] for u in remote]
        size = sum(v.size_bytes for v in discover_videos(data))
        print(f"archive: {len(local)} videos, {args.seconds:.0f} s each, {size / 1e6:.1f} MB; S3 server at {endpoint}")
        decode_all(local[:1], True), decode_all(remote[:1], True)  # warm-up: imports, codec set-up

        results: dict[str, dict] = {}
        runs = {"local (PyAV)": [], "S3 (PyAV)": [], "local (decord)": []}
        for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both sides alike
            runs["local (PyAV)"].append(decode_all(local, True))
            runs["S3 (PyAV)"].append(decode_all(remote, True))
            runs["local (decord)"].append(decode_all(local, False))
        med = {k: statistics.median(s for s, _ in v) for k, v in runs.items()}
        frames = runs["S3 (PyAV)"][0][1]
        results["decode"] = {
            "frames": frames,
            "seconds": med,
            "s3_over_local_pyav": med["S3 (PyAV)"] / med["local (PyAV)"],
            "s3_over_local_decord": med["S3 (PyAV)"] / med["local (decord)"],
        }
        print(f"\ndecode + probe, {frames} sampled frames, median of {args.repeats}:")
        for k, s in med.items():
            print(f"  {k:<16} {s:7.2f} s  {frames / s:7.1f} frames/s")
        print(f"  S3 / local, same decoder (PyAV):  {results['decode']['s3_over_local_pyav']:.2f}  (target <= 1.3)")
        print(
            f"  S3 / local as extract reads them: {results['decode']['s3_over_local_decord']:.2f}  (local uses decord)"
        )

        if not args.no_extract:
            ext = {"local": [], "S3": []}
            for k in range(args.repeats):
                ext["local"].append(extract_seconds(str(data), work / f"cache-local-{k}"))
                ext["S3"].append(extract_seconds("s3://bench/archive", work / f"cache-s3-{k}"))
            med_ext = {k: statistics.median(v) for k, v in ext.items()}
            results["extract"] = {"seconds": med_ext, "s3_over_local": med_ext["S3"] / med_ext["local"]}
            print(f"\nvtm extract (child process, own Ray, fresh cache), median of {args.repeats}:")
            for k, s in med_ext.items():
                print(f"  {k:<16} {s:7.2f} s")
            print(f"  S3 / local: {results['extract']['s3_over_local']:.2f}")
    finally:
        server.process.terminate()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_storage.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
