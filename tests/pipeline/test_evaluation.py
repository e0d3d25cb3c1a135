import pytest

from vtm.pipeline.evaluation import event_scores, match_events


def test_exact_and_near_hits():
    assert match_events([1.0, 5.4], [1.0, 5.0], tolerance_s=0.5) == (2, 0, 0)


def test_outside_tolerance_is_a_miss_and_a_false_alarm():
    assert match_events([2.0], [1.0], tolerance_s=0.5) == (0, 1, 1)


def test_empty_lists():
    assert match_events([], [], 1.0) == (0, 0, 0)
    assert match_events([], [1.0, 2.0], 1.0) == (0, 0, 2)
    assert match_events([1.0], [], 1.0) == (0, 1, 0)


def test_two_predictions_near_one_event_count_once():
    assert match_events([4.9, 5.2], [5.0], tolerance_s=1.0) == (1, 1, 0)


def test_closest_pair_is_matched_first():
    assert match_events([3.0, 3.1], [3.05], tolerance_s=0.5) == (1, 1, 0)
    # Greedy, not maximal: 1.6 takes 1.5 (its nearest), leaving 1.0 and 2.3 unmatched, although
    # 1.0-1.5 and 1.6-2.3 would both fit. Sample data keeps events far apart so this never bites.
    assert match_events([1.0, 1.6], [1.5, 2.3], tolerance_s=0.8) == (1, 1, 1)


def test_scores_sum_over_videos():
    truth = {"a.mp4": [1.0, 5.0], "b.mp4": [2.0], "quiet.mp4": []}
    predicted = {"a.mp4": [1.1, 5.1, 5.3], "quiet.mp4": [3.0]}
    # a: 2 tp, 1 fp; b missing: 1 fn; quiet: 1 fp.
    scores = event_scores(predicted, truth, tolerance_s=1.0)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 2, 1)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_scores_with_nothing_to_find_or_nothing_found():
    assert event_scores({}, {"quiet.mp4": []})["f1"] == 1.0
    nothing_found = event_scores({}, {"a.mp4": [1.0]})
    assert (nothing_found["precision"], nothing_found["recall"], nothing_found["f1"]) == (1.0, 0.0, 0.0)
    assert event_scores({"extra.mp4": [1.0]}, {})["fp"] == 1


def test_an_interval_event_is_found_anywhere_inside_it_once():
    assert match_events([5.0], [(3.0, 8.0)], 1.0) == (1, 0, 0)
    assert match_events([2.2, 8.9], [(3.0, 8.0)], 1.0) == (
        1,
        1,
        0,
    )  # the second trigger on the same event is a false alarm
    assert match_events([9.5], [(3.0, 8.0)], 1.0) == (0, 1, 1)
    assert match_events([4.0, 8.0], [(3.0, 5.0), 8.0], 0.5) == (2, 0, 0)  # moments and intervals mix
