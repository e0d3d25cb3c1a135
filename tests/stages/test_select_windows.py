import numpy as np

from vtm.stages.select_windows import SelectWindowsStage, find_peaks, merge_windows, suppress_near

TS = np.arange(30) / 3.0


def _score(*peaks):
    s = np.zeros(30)
    for i, v in peaks:
        s[i] = v
        s[max(i - 1, 0)] = max(s[max(i - 1, 0)], v / 2)
        s[min(i + 1, 29)] = max(s[min(i + 1, 29)], v / 2)
    return s


def test_peaks_above_threshold_only():
    s = _score((5, 0.9), (15, 0.3), (25, 0.7))
    assert find_peaks(s, 0.5).tolist() == [5, 25]


def test_flat_top_gives_one_peak():
    s = np.array([0, 0.6, 0.6, 0.6, 0])
    assert find_peaks(s, 0.5).tolist() == [1]


def test_near_peaks_merge_into_the_strongest():
    s = _score((10, 0.6), (12, 0.9))  # 0.67 s apart
    assert suppress_near(TS, s, find_peaks(s, 0.5), min_gap_s=1.0).tolist() == [12]
    assert suppress_near(TS, s, find_peaks(s, 0.5), min_gap_s=0.5).tolist() == [10, 12]


def test_budget_keeps_the_strongest_in_time_order():
    s = _score((3, 0.6), (10, 0.95), (18, 0.7), (26, 0.8))
    out = SelectWindowsStage(threshold=0.5, max_triggers=2)({"timestamps": TS, "score": s})
    assert out["trigger_index"].tolist() == [10, 26]
    few = SelectWindowsStage(threshold=0.5, max_fraction=0.2, before_s=1.0, after_s=1.0)({"timestamps": TS, "score": s})
    assert len(few["trigger_index"]) == 0 + int(0.2 * 30 / 7)  # 7 frames per 2 s window at 3 fps


def test_windows_around_triggers_merge_when_they_overlap():
    s = _score((6, 0.9), (10, 0.9), (25, 0.9))
    out = SelectWindowsStage(threshold=0.5, min_gap_s=1.0, before_s=1.0, after_s=1.0)({"timestamps": TS, "score": s})
    np.testing.assert_allclose(out["windows"], [[1.0, 4.333333], [7.333333, 9.333333]], atol=1e-5)


def test_merge_windows_clips_at_zero_and_joins_touching():
    assert merge_windows([(-0.5, 1.0), (1.0, 2.0), (3.0, 4.0)]) == [(0.0, 2.0), (3.0, 4.0)]


def test_no_scores_no_triggers():
    out = SelectWindowsStage()({"timestamps": np.zeros(0), "score": np.zeros(0)})
    assert len(out["trigger_index"]) == 0 and out["windows"].shape == (0, 2)


def test_peaks_on_one_plateau_are_one_event_and_a_real_dip_separates_two():
    plateau = np.zeros(30)
    plateau[5:20] = 0.95
    plateau[[8, 16]] = 0.97  # a learned score stays high while an event lasts; its wiggles are not events
    assert SelectWindowsStage(threshold=0.5)({"timestamps": TS, "score": plateau})["trigger_index"].tolist() == [8]
    dipped = plateau.copy()
    dipped[12] = 0.6  # dips by more than min_dip of the lower peak: two events
    assert SelectWindowsStage(threshold=0.5)({"timestamps": TS, "score": dipped})["trigger_index"].tolist() == [8, 16]
    assert SelectWindowsStage(threshold=0.5, min_dip=0.0)({"timestamps": TS, "score": plateau})[
        "trigger_index"
    ].tolist() == [8, 16]
