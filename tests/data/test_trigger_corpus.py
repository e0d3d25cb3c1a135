"""The trigger corpus (synthetic kinds the change score must stay quiet on, and real clips), and
the change score on the real clips, which nothing was tuned on."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from vtm.data.trigger_corpus import (
    KINDS,
    REAL_CLIPS,
    copy_real_clips,
    make_real_corpus,
    make_trigger_corpus,
    real_corpus_definition,
)


@pytest.fixture(scope="module")
def small_parts(tmp_path_factory):
    return {
        part: make_trigger_corpus(
            tmp_path_factory.mktemp(part), part, videos_per_variant=1, seconds=5.0, width=96, height=72
        )
        for part in ("tune", "test")
    }


def test_every_kind_comes_with_and_without_events_as_promised(small_parts):
    truth = json.loads((small_parts["test"] / "ground_truth.json").read_text())
    for kind, (_, with_events, without_events) in KINDS.items():
        videos = [p for p, k in truth["kinds"].items() if k == kind]
        assert any(truth["events"][p] for p in videos) == with_events, kind
        assert any(not truth["events"][p] for p in videos) == without_events, kind
    for path, events in truth["events"].items():
        seconds = truth["videos"][path]["seconds"]
        assert all(0 < e < seconds for e in events), path
        with av.open(str(small_parts["test"] / path)) as container:
            assert container.streams.video[0].frames == truth["videos"][path]["frames"], path


def test_tune_and_test_parts_never_share_a_video(small_parts):
    def first_frame(root, path):
        with av.open(str(root / path)) as container:
            return next(container.decode(video=0)).to_ndarray(format="rgb24").astype(np.int16)

    truth = json.loads((small_parts["test"] / "ground_truth.json").read_text())
    for path in truth["videos"]:
        assert np.abs(first_frame(small_parts["tune"], path) - first_frame(small_parts["test"], path)).mean() > 1.0, (
            path
        )


def test_the_change_score_on_real_clips_of_the_test_part(tmp_path, ray_local):
    """Real hard cuts are found, the one 0.3 s before the end included; a man talking in a moving car and the Earth
    turning are no events."""
    from vtm.cache.store import FeatureCache
    from vtm.pipeline.config import Config
    from vtm.pipeline.evaluation import event_scores
    from vtm.pipeline.extract import run_extract
    from vtm.pipeline.triggers import find_triggers

    videos = copy_real_clips(tmp_path / "real", part="test")
    summary = run_extract(videos, tmp_path / "cache", Config(), progress=False)
    assert summary.all_ok and summary.ok == sum(c.part == "test" for c in REAL_CLIPS.values())
    found = {
        p: [t["time"] for t in ts]
        for p, ts in find_triggers(FeatureCache.open(tmp_path / "cache"), Config().triggers).items()
    }
    cuts = REAL_CLIPS["real/bikes.mp4"].events
    assert event_scores({"bikes": found["real/bikes.mp4"]}, {"bikes": cuts})["f1"] >= 0.85, found
    assert any(abs(t - cuts[-1]) <= 0.5 for t in found["real/bikes.mp4"]), "the cut 0.3 s before the end"
    assert found["real/carphone.mp4"] == [] and found["real/world.mp4"] == []
    assert all(t > 0.5 for ts in found.values() for t in ts), "the first frames are no evidence on their own"


def test_film_stretches_are_apart_and_their_cuts_inside_them_and_relative_in_the_corpus(tmp_path):
    """The Big Buck Bunny stretches (labelled by hand) never overlap, so no shot is in both parts; a stretch's cuts
    become times relative to it."""
    from vtm.data import sample_archive as sd
    from vtm.data.trigger_corpus import BBB_CUTS, BBB_OBJECTS, BBB_SHOTS, DEBIAN_CLIPS, _add_bbb_shots

    spans = sorted([*BBB_SHOTS, *BBB_CUTS, *BBB_OBJECTS])
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    for (start, end), (part, cuts) in BBB_CUTS.items():
        assert part in ("tune", "test") and list(cuts) == sorted(cuts)
        assert start < cuts[0] and cuts[-1] < end and np.all(np.diff(cuts) >= 1.0), (start, cuts)
    assert {c.part for c in DEBIAN_CLIPS.values()} == {"tune", "test"}

    film = tmp_path / "film.mp4"  # 4 s at 24 fps, a new colour every second
    colours = np.random.default_rng(0).integers(0, 256, (4, 3))
    sd.write_video(film, [np.full((36, 64, 3), colours[i // 24], np.uint8) for i in range(96)], fps=24)
    truth, kinds = sd.GroundTruth(), {}
    cuts = {(0.5, 3.5): ("test", (1.0, 2.0, 3.0)), (0.0, 1.0): ("tune", ())}
    objects = {(2.5, 3.5): ("test", (3.0,))}
    shots = {(3.5, 4.0): "test"}
    _add_bbb_shots(film, tmp_path / "out", "test", truth, kinds, 64, 36, shots=shots, cuts=cuts, objects=objects)
    assert truth.events == {
        "bbb/cuts_000.5.mp4": [0.5, 1.5, 2.5],
        "bbb/shot_003.5.mp4": [],
        "bbb/object_002.5.mp4": [0.5],
    }
    assert kinds == {
        "bbb/cuts_000.5.mp4": "film cuts",
        "bbb/shot_003.5.mp4": "real none",
        "bbb/object_002.5.mp4": "real object",
    }
    assert truth.videos["bbb/cuts_000.5.mp4"]["frames"] == 72
    with av.open(str(tmp_path / "out/bbb/cuts_000.5.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24")[18, 32].astype(int) for f in container.decode(video=0)]
    assert np.abs(frames[11] - colours[0]).max() < 12 and np.abs(frames[12] - colours[1]).max() < 12  # cut at 0.5 s


def test_stretches_of_one_packaged_file_are_apart_and_hold_their_events():
    """Stretches cut from one file (the fixed camera, the lecture) never overlap, so no footage is in both parts; each
    stretch's events lie inside it."""
    from vtm.data.trigger_corpus import DEBIAN_CLIPS, PARTS, WHEEL_CLIPS

    clips = [*DEBIAN_CLIPS.values(), *WHEEL_CLIPS.values()]
    assert {c.part for c in WHEEL_CLIPS.values()} == {"tune", "test"}
    for source in {(c.package, c.path) for c in clips if c.span}:
        spans = sorted(c.span for c in clips if (c.package, c.path) == source)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), (source, spans)
    for c in clips:
        assert c.part in PARTS
        if c.span:
            assert all(0 < e < c.span[1] - c.span[0] for e in c.events), c


def test_a_clip_with_a_span_is_cut_out_and_re_encoded_with_times_from_zero(tmp_path):
    from vtm.data import sample_archive as sd
    from vtm.data.trigger_corpus import RealClip, _add_real_clip

    source = tmp_path / "source.avi"  # 4 s at 10 fps, a new colour every second, in another codec and container
    colours = np.random.default_rng(1).integers(0, 256, (4, 3))
    frames = [np.full((48, 64, 3), colours[i // 10], np.uint8) for i in range(40)]
    sd.write_video(source, frames, fps=10, encoding=sd.Encoding("mpeg4", options={"qscale": "2"}))
    clip = RealClip("pkg", "source.avi", "real cuts", (0.5,), "test", "test", span=(1.5, 3.0), size=(32, 24))
    truth, kinds = sd.GroundTruth(), {}
    _add_real_clip(source, tmp_path / "out", "stretch.mp4", clip, truth, kinds)
    assert truth.videos["stretch.mp4"] == {
        "frames": 15,
        "fps": 10.0,
        "seconds": 1.5,
        "width": 32,
        "height": 24,
        "codec": "libx264",
        "vfr": False,
    }
    assert truth.events == {"stretch.mp4": [0.5]} and kinds == {"stretch.mp4": "real cuts"}
    with av.open(str(tmp_path / "out/stretch.mp4")) as container:
        stream = container.streams.video[0]
        decoded = [(float(f.pts * stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    assert len(decoded) == 15 and decoded[0][0] == 0.0 and decoded[0][1].shape == (24, 32, 3)
    middle = [image[12, 16].astype(int) for _, image in decoded]
    # the stretch starts at 1.5 s, so the colour of the source's third second comes at 0.5 s
    assert np.abs(middle[4] - colours[1]).max() < 12 and np.abs(middle[5] - colours[2]).max() < 12


def test_a_real_corpus_says_which_definition_it_was_built_from(tmp_path):
    """bench_triggers refuses a corpus on disk built from another definition of the clip tables: its figures would
    not be this corpus's."""
    import json

    out = make_real_corpus(tmp_path / "real", "test", None)
    truth = json.loads((out / "ground_truth.json").read_text(encoding="utf-8"))
    assert truth["definition"] == real_corpus_definition("test") != real_corpus_definition("tune")
