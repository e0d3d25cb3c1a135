import numpy as np

from vtm.stages.change_score import ChangeScoreStage
from vtm.stages.select_windows import SelectWindowsStage

FPS = 3.0
N = 60  # 20 s


def _batch(features, grid=None, hist=None):
    n = len(features)
    rng = np.random.default_rng(1)
    if grid is None:
        grid = np.full((n, 16, 16, 3), 100.0) + rng.normal(0, 0.5, (n, 16, 16, 3))
    if hist is None:
        hist = np.full((n, 64), 1 / 64) + rng.normal(0, 1e-4, (n, 64))
    return {"features": features, "grid": grid, "hist": hist, "timestamps": np.arange(n) / FPS}


def _still_features(rng, n=N, d=32, noise=0.01):
    base = rng.normal(size=d)
    return base + rng.normal(0, noise, (n, d))


def _peaks(out):
    return SelectWindowsStage(threshold=0.5)({"timestamps": out["timestamps"], "score": out["change_score"]})[
        "trigger_time"
    ]


def test_quiet_scene_scores_nothing():
    out = ChangeScoreStage()(_batch(_still_features(np.random.default_rng(0))))
    assert out["change_score"].max() < 0.2
    assert len(_peaks(out)) == 0


def test_hard_cut_peaks_at_the_cut():
    rng = np.random.default_rng(0)
    f = _still_features(rng)
    f[30:] = _still_features(rng)[30:]
    out = ChangeScoreStage()(_batch(f))
    assert out["change_score"][30] > 0.8
    assert np.argmax(out["change_score"]) == 30
    np.testing.assert_allclose(_peaks(out), [10.0])


def test_dissolve_peaks_at_its_middle():
    rng = np.random.default_rng(0)
    a, b = _still_features(rng), _still_features(rng)
    mix = np.clip((np.arange(N) - 27) / 6, 0, 1)[:, None]  # 2 s dissolve from sample 27 to 33
    out = ChangeScoreStage()(_batch((1 - mix) * a + mix * b))
    assert abs(np.argmax(out["change_score"]) - 30) <= 1
    assert len(_peaks(out)) == 1


def test_small_object_entering_a_still_scene_is_found_and_light_drift_is_not():
    rng = np.random.default_rng(0)
    f = _still_features(rng)  # the global features barely notice a small object
    grid = np.full((N, 16, 16, 3), 100.0) + rng.normal(0, 0.5, (N, 16, 16, 3))
    grid += np.linspace(0, 40, N)[:, None, None, None]  # the light slowly brightens the whole picture
    grid[30:, 4:7, 4:7] = 220.0  # a bright object fills 9 of 256 cells from sample 30 on
    out = ChangeScoreStage()(_batch(f, grid=grid))
    assert out["local_change"][30] > 0.3
    assert out["local_change"][5:25].max() < 0.02  # the drift is shared by all cells: not local
    np.testing.assert_allclose(_peaks(out), [10.0])


def test_steady_motion_is_a_baseline_not_a_trigger():
    rng = np.random.default_rng(0)
    a, b = np.linalg.qr(rng.normal(size=(32, 2)))[0].T  # orthonormal: the turn below is uniform
    angle = 0.15 * np.arange(N)[:, None]  # the view turns steadily, like a long pan
    pan = np.cos(angle) * a + np.sin(angle) * b + rng.normal(0, 0.01, (N, 32))
    out = ChangeScoreStage()(_batch(pan))
    assert out["feature_change"][5:-5].min() > 0.01  # there is change everywhere...
    assert len(_peaks(out)) == 0  # ...but no moment stands out


def test_busy_footage_raises_the_bar_but_a_cut_still_stands_out():
    """An evolving texture changes a lot all the time; the same amount of change on a still scene would fire."""
    rng = np.random.default_rng(0)
    busy = rng.normal(size=32) + rng.normal(0, 0.35, (N, 32))  # every frame differs from the last
    quiet = ChangeScoreStage()(_batch(_still_features(rng)))
    out = ChangeScoreStage()(_batch(busy))
    assert np.median(out["feature_change"]) > 20 * np.median(quiet["feature_change"])
    assert len(_peaks(out)) == 0
    busy[30:] += 2.0 * rng.normal(size=32)  # a cut to another busy scene
    np.testing.assert_allclose(_peaks(ChangeScoreStage()(_batch(busy))), [10.0])


def test_the_ends_of_a_video_are_evidence_but_the_first_frame_alone_is_not():
    rng = np.random.default_rng(0)
    f = _still_features(rng)
    f[0] = _still_features(rng)[0]  # the first frame looks unlike the rest (an encoder's first key frame)
    f[-1] = _still_features(rng)[-1]  # a hard cut on the very last sampled frame
    out = ChangeScoreStage()(_batch(f))
    np.testing.assert_allclose(_peaks(out), [(N - 1) / FPS])
    assert out["change_score"][:3].max() < 0.1


def test_scores_stay_in_zero_to_one():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(N, 16)) * rng.uniform(0, 3, (N, 1))
    score = ChangeScoreStage()(_batch(f))["change_score"]
    assert score.min() >= 0.0 and score.max() < 1.0


def test_two_frames_is_enough_and_one_is_all_zero():
    rng = np.random.default_rng(0)
    for n in (1, 2):
        out = ChangeScoreStage()(_batch(rng.normal(size=(n, 8))))
        assert out["change_score"].shape == (n,)
        assert out["change_score"][0] == 0.0
