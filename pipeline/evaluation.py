"""Scoring predicted event times against ground truth.

A prediction counts as a hit when it lies within `tolerance_s` of a true event that no closer
prediction has claimed; each true event can be hit once, so a detector that fires twice on one cut
earns one true positive and one false positive. A true event is a moment (seconds) or an interval
(start, end): a prediction inside the interval is at distance 0.
"""

from collections.abc import Mapping, Sequence

Truth = float | tuple[float, float]


def _distance(predicted: float, truth: Truth) -> float:
    start, end = (truth, truth) if isinstance(truth, (int, float)) else truth
    return max(start - predicted, predicted - end, 0.0)


def match_events(predicted: Sequence[float], truth: Sequence[Truth], tolerance_s: float) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) for one video.

    Pairs are matched one to one, greedily, closest first. Greedy is not always the largest matching,
    but it is what a person checking the timeline would do, and it is exact when events are further
    apart than twice the tolerance, as in the sample data.
    """
    pairs = sorted(
        (d, i, j) for i, p in enumerate(predicted) for j, t in enumerate(truth) if (d := _distance(p, t)) <= tolerance_s
    )
    used_predictions, used_truths = set(), set()
    for _, i, j in pairs:
        if i not in used_predictions and j not in used_truths:
            used_predictions.add(i)
            used_truths.add(j)
    tp = len(used_predictions)
    return tp, len(predicted) - tp, len(truth) - tp


def event_scores(
    predicted: Mapping[str, Sequence[float]],
    truth: Mapping[str, Sequence[Truth]],
    tolerance_s: float = 1.0,
) -> dict:
    """Precision, recall, F1 and the tp/fp/fn counts summed over every video in either mapping.

    A video missing from `predicted` has all its events missed; predictions on a video without truth
    are false positives. With nothing predicted precision is 1 (no false alarm), and with nothing to
    find recall is 1 (nothing missed).
    """
    tp = fp = fn = 0
    for video in set(predicted) | set(truth):
        hits, false_alarms, misses = match_events(predicted.get(video, []), truth.get(video, []), tolerance_s)
        tp, fp, fn = tp + hits, fp + false_alarms, fn + misses
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}
