"""The learning curve of learned triggers: test event F1 after training on 4, 8, 16 and 32 annotated videos.

    python bench/bench_learned.py [--sizes 4 8 16 32] [--test-videos 16] [--seconds 30] [--seed 1400] [--out DIR]

Writes a fresh "red object in view" archive (data/in_view_archive.py) from seeds that the choice of
the default settings never saw (--seed for the training pool, --seed + 1 for the test videos),
extracts it once with the default settings (untimed), then for each size trains with the default
settings on the first N annotated videos (the recipe holds a fifth of them out for validation: early
stopping and the threshold) and scores the test videos, which nothing was fitted on. Prints event
precision, recall and F1 of the learned score (at the checkpoint's calibrated threshold) beside the
change score's, with a tolerance of 1 s around each annotated interval, and writes bench_learned.json.
Target (issue 14): F1 >= 0.9 and >= change score + 0.4 from <= 16 videos.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from vtm.cache.store import FeatureCache  # noqa: E402
from vtm.data.in_view_archive import make_in_view_archive, subset_annotations  # noqa: E402
from vtm.pipeline import checkpoint as ckpt  # noqa: E402
from vtm.pipeline.annotations import load_annotations  # noqa: E402
from vtm.pipeline.config import load_config  # noqa: E402
from vtm.pipeline.extract import run_extract  # noqa: E402
from vtm.pipeline.learned_metrics import label_report, score_videos  # noqa: E402
from vtm.pipeline.train import run_train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--test-videos", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1400)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="vtm-bench-learned-"))
    pool = make_in_view_archive(out / "train_videos", max(args.sizes), args.seconds, seed=args.seed)
    test = make_in_view_archive(out / "test_videos", args.test_videos, args.seconds, seed=args.seed + 1)
    for data, cache in ((pool, out / "train_cache"), (test, out / "test_cache")):
        if not run_extract(data, cache, progress=False).all_ok:
            raise SystemExit(f"extracting {data} failed; see {cache}")
    test_cache = FeatureCache.open(out / "test_cache")
    rows = []
    for n in args.sizes:
        annotations = subset_annotations(pool / "annotations.jsonl", out / f"annotations-{n}.jsonl", n)
        started = time.perf_counter()
        result = run_train(out / "train_cache", annotations, out / f"run-{n}", load_config(), progress=False)
        seconds = time.perf_counter() - started
        model, _, _ = ckpt.load_trigger_model(result.final, test_cache.settings, strict=True)
        truth = load_annotations(test / "annotations.jsonl", test_cache, model.config.labels)
        report = label_report(
            score_videos(model, test_cache, truth, sorted(truth.events)), model.config.detector.threshold
        )
        rows.append(
            {
                "videos": n,
                "learned": report["all"],
                "change": report["change score"],
                "threshold": model.config.detector.threshold,
                "best_epoch": result.best_epoch,
                "epochs": result.epochs,
                "train_s": round(seconds, 1),
            }
        )
        print(f"trained on {n} videos in {seconds:.0f} s: event F1 {report['all']['f1']:.3f}", flush=True)
    events = rows[0]["learned"]["events"]
    print(
        f"\ntest: {args.test_videos} videos of {args.seconds:g} s, {events} red intervals; seeds {args.seed} "
        f"(training pool) and {args.seed + 1} (test)"
    )
    print(
        f"{'videos':>6}  {'learned P':>9} {'R':>5} {'F1':>5}  {'change P':>8} {'R':>5} {'F1':>5}  {'F1 gain':>7}  "
        f"{'threshold':>9} {'best epoch':>10} {'train s':>7}"
    )
    for r in rows:
        a, c = r["learned"], r["change"]
        print(
            f"{r['videos']:>6}  {a['precision']:>9.2f} {a['recall']:>5.2f} {a['f1']:>5.2f}  {c['precision']:>8.2f} "
            f"{c['recall']:>5.2f} {c['f1']:>5.2f}  "
            f"{a['f1'] - c['f1']:>+7.2f}  {r['threshold']:>9.3f} {r['best_epoch']:>4}/{r['epochs']:<5} "
            f"{r['train_s']:>7.0f}"
        )
    (out / "bench_learned.json").write_text(json.dumps(rows, indent=2))
    print(f"-> {out / 'bench_learned.json'}")


if __name__ == "__main__":
    main()
