import numpy as np
import pytest
import torch

from vtm.models.configs import TemporalEncoderConfig, TriggerDetectorConfig, TriggerModelConfig
from vtm.models.trigger_model import TriggerModel, smooth_score


def _config(kind="transformer", classes=1):
    return TriggerModelConfig(
        encoder=TemporalEncoderConfig(input_dim=12, d_model=16, kind=kind, num_layers=1, num_heads=2),
        detector=TriggerDetectorConfig(input_dim=16, hidden_sizes=(8,), num_classes=classes),
        window=8,
        labels=tuple(f"c{i}" for i in range(classes)),
        grid=None,
    )


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_shapes_and_padding(kind):
    torch.manual_seed(0)
    model = TriggerModel(_config(kind, classes=3)).eval()
    feats, times = torch.randn(2, 8, 12), torch.arange(8).float().repeat(2, 1) / 3
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    context, logits = model(feats, times, mask)
    assert context.shape == (2, 8, 16) and logits.shape == (2, 8, 4)
    assert torch.all(context[1, 5:] == 0)


def test_timestamps_matter():
    """The same frames at other times give other outputs: the encoder is time-aware."""
    torch.manual_seed(0)
    model = TriggerModel(_config()).eval()
    feats = torch.randn(1, 8, 12)
    even = torch.arange(8).float()[None] / 3
    gap = even.clone()
    gap[0, 4:] += 60.0  # a minute-long gap in the middle
    with torch.no_grad():
        assert not torch.allclose(model(feats, even)[1], model(feats, gap)[1])


def test_score_video_covers_every_frame_of_any_length():
    torch.manual_seed(0)
    model = TriggerModel(_config(classes=2))
    for n in (1, 5, 8, 23):
        score, probs = model.score_video(np.random.randn(n, 12).astype(np.float32), np.arange(n) / 3.0)
        assert score.shape == (n,) and probs.shape == (n, 2)
        assert np.all((score >= 0) & (score <= 1))
        # 1 - p(no event) = sum of event classes, smoothed (see smooth_score)
        np.testing.assert_allclose(score, smooth_score(probs.sum(1), model.config.min_event_frames), atol=1e-5)


def test_config_round_trips_and_rejects_contradictions():
    cfg = _config(classes=2)
    assert TriggerModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="labels"):
        TriggerModelConfig(encoder=cfg.encoder, detector=cfg.detector, window=8, labels=("only one",))
    with pytest.raises(ValueError, match="input_dim"):
        TriggerModelConfig(
            encoder=cfg.encoder, detector=TriggerDetectorConfig(input_dim=99, num_classes=2), labels=cfg.labels
        )


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_gpu_scores_match_cpu(kind):
    """Scoring a whole video on the GPU gives the CPU's scores (default-size model, windows batched)."""
    import copy

    torch.manual_seed(0)
    config = TriggerModelConfig(
        encoder=TemporalEncoderConfig(kind=kind),
        detector=TriggerDetectorConfig(num_classes=2),
        labels=("a", "b"),
        grid=None,
    )
    model = TriggerModel(config)
    rng = np.random.default_rng(0)
    n = 301  # not a multiple of the half-window: the last window is padded and masked
    feats = rng.standard_normal((n, config.encoder.input_dim)).astype(np.float32)
    times = np.arange(n) / 3.0 + 3600.0
    times[150:] += 45.0  # a gap
    cpu_score, cpu_probs = model.score_video(feats, times)
    on_gpu = copy.deepcopy(model).to("cuda")
    for batch_windows in (64, 3):
        score, probs = on_gpu.score_video(feats, times, batch_windows=batch_windows)
        np.testing.assert_allclose(score, cpu_score, atol=2e-4)
        np.testing.assert_allclose(probs, cpu_probs, atol=2e-4)
    short_cpu, _ = model.score_video(feats[:5], times[:5])  # shorter than one window
    np.testing.assert_allclose(on_gpu.score_video(feats[:5], times[:5])[0], short_cpu, atol=2e-4)


def test_smoothing_fills_flickers_and_drops_blips_only_where_events_are_long():
    event = np.array(
        [0.0, 0.0, 0.9, 0.95, 0.3, 0.9, 0.9, 0.0, 0.0, 0.0, 0.8, 0.0, 0.0]
    )  # a one-frame dip inside, a one-frame blip after
    long_events = smooth_score(event, min_event_frames=5)
    assert long_events[4] >= 0.9 and long_events[10] == 0.0  # the dip is filled, the blip is gone
    short_events = smooth_score(event, min_event_frames=1)
    assert short_events[4] >= 0.9 and short_events[10] == 0.8  # a model of momentary events keeps its blips
    assert (short_events >= event).all()
