"""How well a trained trigger model finds annotated events: scoring from the cache, event and frame
metrics beside the change score's, per-label counts, and the decision threshold calibrated on them.

Events are matched as intervals (an annotation's start..end, widened by the tolerance), so a
prediction anywhere while "a red object is in view" finds that event, and a second one is a false alarm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vtm.cache.store import FeatureCache
from vtm.cache.windows import read_model_inputs
from vtm.models.trigger_model import TriggerModel
from vtm.pipeline.annotations import Annotations
from vtm.pipeline.evaluation import event_scores
from vtm.pipeline.metrics import frame_metrics
from vtm.stages.select_windows import SelectWindowsStage

THRESHOLDS = np.round(np.arange(0.025, 0.976, 0.025), 3)  # the candidates calibration tries


@dataclass
class ScoredVideos:
    """A model's scores on annotated videos, computed once and evaluated at any threshold."""

    annotations: Annotations
    video_ids: list[str]
    timestamps: dict[str, np.ndarray]
    score: dict[str, np.ndarray]  # trigger score per frame
    classes: dict[str, np.ndarray]  # (n, classes) probabilities per frame
    change: dict[str, np.ndarray]  # the training-free change score per frame
    labels: dict[str, np.ndarray]  # annotated class per frame (0: none)

    def truth(self, label: str | None = None) -> dict[str, list[tuple[float, float]]]:
        """{path: [(start, end), ...]} of the annotated events (of one label, or all)."""
        return {
            self.annotations.paths[v]: [
                (e.start, e.end) for e in self.annotations.events[v] if label is None or e.label == label
            ]
            for v in self.video_ids
        }

    def predicted(self, threshold: float, label: str | None = None) -> dict[str, list[float]]:
        """{path: [trigger times]} picked from the learned score (of the triggers whose likeliest class is `label`)."""
        select = SelectWindowsStage(threshold=threshold)
        names = self.annotations.labels
        out = {}
        for v in self.video_ids:
            picked = select({"timestamps": self.timestamps[v], "score": self.score[v]})
            idx = picked["trigger_index"]
            if label is not None:
                idx = [i for i in idx if names[int(np.argmax(self.classes[v][i]))] == label]
            out[self.annotations.paths[v]] = [float(self.timestamps[v][i]) for i in idx]
        return out

    def change_predicted(self) -> dict[str, list[float]]:
        select = SelectWindowsStage()
        return {
            self.annotations.paths[v]: select({"timestamps": self.timestamps[v], "score": self.change[v]})[
                "trigger_time"
            ].tolist()
            for v in self.video_ids
        }


def score_videos(
    model: TriggerModel, cache: FeatureCache, annotations: Annotations, video_ids: list[str]
) -> ScoredVideos:
    interval = 1.0 / cache.settings.sample_fps
    out = ScoredVideos(annotations, list(video_ids), {}, {}, {}, {}, {})
    for v in video_ids:
        feats, ts = read_model_inputs(cache, v, model.config)
        out.timestamps[v] = ts
        out.score[v], out.classes[v] = model.score_video(feats, ts)
        out.change[v] = cache.read_scores([v]).sort("sample_index")["change_score"].to_numpy()
        out.labels[v] = annotations.frame_labels(v, ts, interval)
    return out


def calibrate_threshold(scored: ScoredVideos, tolerance_s: float = 1.0) -> tuple[float, float]:
    """(threshold, event F1): the decision threshold with the best event F1 on these videos.

    Where several thresholds tie, the middle one of the tied range: the farthest from tipping over.
    """
    truth = scored.truth()
    f1 = np.array([event_scores(scored.predicted(float(t)), truth, tolerance_s)["f1"] for t in THRESHOLDS])
    best = np.flatnonzero(f1 >= f1.max() - 1e-9)
    return float(THRESHOLDS[best[len(best) // 2]]), float(f1.max())


def evaluate_model(
    model: TriggerModel,
    cache: FeatureCache,
    annotations: Annotations,
    video_ids: list[str],
    tolerance_s: float = 1.0,
    threshold: float | None = None,
) -> dict:
    """Frame-level P/R/F1/AP and event-level P/R/F1 of the learned score (at `threshold`, default the
    checkpoint's), beside the change score's event F1, on `video_ids`."""
    return metrics_at(
        score_videos(model, cache, annotations, video_ids),
        model.config.detector.threshold if threshold is None else threshold,
        tolerance_s,
    )


def metrics_at(scored: ScoredVideos, threshold: float, tolerance_s: float = 1.0) -> dict:
    ids = scored.video_ids
    frame = frame_metrics(
        np.concatenate([scored.score[v] for v in ids] or [np.zeros(0)]),
        np.concatenate([scored.labels[v] > 0 for v in ids] or [np.zeros(0, bool)]),
        threshold,
    )
    truth = scored.truth()
    ours, baseline = (
        event_scores(scored.predicted(threshold), truth, tolerance_s),
        event_scores(scored.change_predicted(), truth, tolerance_s),
    )
    return {
        "val/frame_precision": frame["precision"],
        "val/frame_recall": frame["recall"],
        "val/frame_f1": frame["f1"],
        "val/frame_ap": frame["average_precision"],
        "val/event_precision": ours["precision"],
        "val/event_recall": ours["recall"],
        "val/event_f1": ours["f1"],
        "val/change_score_event_f1": baseline["f1"],
        "val/threshold": float(threshold),
    }


def label_report(scored: ScoredVideos, threshold: float, tolerance_s: float = 1.0) -> dict[str, dict]:
    """Per label (and "all"): events annotated, found, missed, false alarms, precision, recall, F1; and
    the same for the change score (which has no labels), so a person sees what to annotate next."""
    rows = {}
    for label in (*scored.annotations.labels, None):
        truth = scored.truth(label)
        s = event_scores(scored.predicted(threshold, label), truth, tolerance_s)
        rows[label or "all"] = _row(s, truth)
    truth = scored.truth()
    rows["change score"] = _row(event_scores(scored.change_predicted(), truth, tolerance_s), truth)
    return rows


def _row(s: dict, truth: dict) -> dict:
    return {
        "events": sum(map(len, truth.values())),
        "found": s["tp"],
        "missed": s["fn"],
        "false": s["fp"],
        "precision": s["precision"],
        "recall": s["recall"],
        "f1": s["f1"],
    }
