"""Frame-level trigger metrics: precision, recall, F1 at a threshold, and average precision."""

from __future__ import annotations

import numpy as np


def frame_metrics(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    scores = np.asarray(scores, np.float64)
    positive = np.asarray(positive, bool)
    predicted = scores >= threshold
    tp = int((predicted & positive).sum())
    fp = int((predicted & ~positive).sum())
    fn = int((~predicted & positive).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "average_precision": average_precision(scores, positive),
    }


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall curve as the mean precision at each positive (ties broken stably)."""
    positive = np.asarray(positive, bool)
    if not positive.any():
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    hits = positive[order]
    precision_at_k = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at_k[hits].mean())
