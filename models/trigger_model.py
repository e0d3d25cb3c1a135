"""The learned trigger model: time-aware encoder + trigger detector, and scoring of whole videos."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vtm.models.configs import TriggerModelConfig
from vtm.models.grid_encoder import GridEncoder
from vtm.models.temporal_encoder import TemporalEncoder
from vtm.models.trigger_detector import TriggerDetector


class TriggerModel(nn.Module):
    def __init__(self, config: TriggerModelConfig):
        super().__init__()
        self.config = config
        self.encoder = TemporalEncoder(config.encoder)
        self.detector = TriggerDetector(config.detector)
        self.grid = GridEncoder(config.grid) if config.grid is not None else None

    def forward(
        self, features: torch.Tensor, timestamps: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, config.input_dim) -> (context (B, T, d_model), logits (B, T, 1 + classes))."""
        if self.grid is not None:  # the grid's colours are the last columns
            n = self.config.grid.input_dim
            features = torch.cat([features[..., :-n].float(), self.grid(features[..., -n:])], dim=-1)
        context = self.encoder(features, timestamps, mask)
        return context, self.detector(context)

    def forward_windows(
        self, features: np.ndarray, timestamps: np.ndarray, starts
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(context, logits, mask) for windows of `config.window` samples of one video at `starts`,
        zero-padded (and masked) past the video's end."""
        n, w = len(features), self.config.window
        device = next(self.parameters()).device
        feats = np.zeros((len(starts), w, features.shape[1]), np.float32)
        times = np.zeros((len(starts), w), np.float64)
        mask = np.zeros((len(starts), w), bool)
        for i, s in enumerate(starts):
            m = min(w, n - s)
            feats[i, :m], times[i, :m], mask[i, :m] = features[s : s + m], timestamps[s : s + m], True
            times[i, m:] = timestamps[s + m - 1]
        context, logits = self(
            torch.from_numpy(feats).to(device),
            torch.from_numpy(times).float().to(device),
            torch.from_numpy(mask).to(device),
        )
        return context, logits, mask

    @torch.inference_mode()
    def score_video(
        self, features: np.ndarray, timestamps: np.ndarray, batch_windows: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """Trigger score and class probabilities (n, classes) for every frame of one video.

        Windows overlap by half and each frame's score is a weighted mean over the windows that
        hold it, with weights falling towards a window's edges, where the model sees least context.
        """
        self.eval()
        n, w = len(features), self.config.window
        if n == 0:
            return np.zeros(0, np.float32), np.zeros((0, self.config.detector.num_classes), np.float32)
        starts = list(range(0, max(n - w, 0) + 1, max(w // 2, 1)))
        if starts[-1] + w < n:
            starts.append(n - w)
        weight = np.hanning(w + 2)[1:-1].astype(np.float32)
        total = np.zeros(n, np.float32)
        probs = np.zeros((n, self.config.detector.num_classes + 1), np.float32)
        for b in range(0, len(starts), batch_windows):
            chunk = starts[b : b + batch_windows]
            _, logits, _ = self.forward_windows(features, timestamps, chunk)
            p = logits.float().softmax(-1).cpu().numpy()
            for i, s in enumerate(chunk):
                m = min(w, n - s)
                probs[s : s + m] += p[i, :m] * weight[:m, None]
                total[s : s + m] += weight[:m]
        probs /= np.maximum(total, 1e-9)[:, None]
        return smooth_score(1.0 - probs[:, 0], self.config.min_event_frames).astype(np.float32), probs[:, 1:].astype(
            np.float32
        )


def smooth_score(score: np.ndarray, min_event_frames: int = 1) -> np.ndarray:
    """Fill dips of one or two samples, then, where every event lasts at least 3 samples, drop blips
    of one or two (morphological closing, then opening, over 3 samples).

    A learned score flickers (one frame's features wobble): a dip would split one event into two
    triggers, a blip would be a false one. Events as short as those the model was trained on stay.
    """
    if len(score) < 3:
        return score
    spans = np.lib.stride_tricks.sliding_window_view

    def dilate(x):
        return spans(np.pad(x, 1, mode="edge"), 3).max(axis=1)

    def erode(x):
        return spans(np.pad(x, 1, mode="edge"), 3).min(axis=1)

    score = erode(dilate(score))
    return dilate(erode(score)) if min_event_frames >= 3 else score
