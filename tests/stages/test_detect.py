import numpy as np
import pytest
import torch

from vtm.models.tiny import TINY_DETR_LABELS, make_tiny_causal_lm, make_tiny_detr
from vtm.stages.detect import DetectObjectsStage, ObjectDetectorLoadError, draw_objects

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SIZES = [(48, 64), (90, 60), (33, 120)]  # (H, W): landscape, portrait, and a size the processor must pad


@pytest.fixture(scope="module")
def detr(tmp_path_factory) -> str:
    return str(make_tiny_detr(tmp_path_factory.mktemp("detr") / "detr"))


def _stage(detr, **settings) -> DetectObjectsStage:
    stage = DetectObjectsStage(model=detr, **{"threshold": 0.0, "device": "cpu", **settings})
    stage.setup()
    return stage


def _frames(n, height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, height, width, 3), dtype=np.uint8)


def _check(objects, height, width, threshold, max_objects):
    assert len(objects) <= max_objects
    scores = [o["score"] for o in objects]
    assert scores == sorted(scores, reverse=True)
    for o in objects:
        assert o["label"] in TINY_DETR_LABELS.values()
        assert threshold <= o["score"] <= 1
        x0, y0, x1, y1 = o["box"]
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height


def test_objects_per_frame_are_sorted_capped_and_inside_each_frame(detr):
    stage = _stage(detr, max_objects=4, max_batch=2)
    for i, (height, width) in enumerate(SIZES):
        batch = {"frames": _frames(3, height, width, seed=i), "timestamps": np.arange(3.0)}
        out = stage(batch)
        assert out["frames"] is batch["frames"] and out["timestamps"].tolist() == [0, 1, 2]
        assert len(out["objects"]) == 3
        for objects in out["objects"]:
            assert len(objects) == 4  # threshold 0 keeps every query, so the cap is what stops it
            _check(objects, height, width, 0.0, 4)


def test_splitting_a_batch_is_invisible(detr):
    frames = _frames(5, 48, 64)
    whole, split = _stage(detr, max_batch=8)(dict(frames=frames)), _stage(detr, max_batch=2)(dict(frames=frames))
    for a, b in zip(whole["objects"], split["objects"]):
        assert [o["label"] for o in a] == [o["label"] for o in b]
        np.testing.assert_allclose([o["score"] for o in a], [o["score"] for o in b], atol=1e-3)
        np.testing.assert_allclose([o["box"] for o in a], [o["box"] for o in b], atol=0.2)


def test_threshold_keeps_only_scores_at_or_above_it(detr):
    frames = _frames(2, 48, 64)
    all_scores = [
        o["score"] for objects in _stage(detr, max_objects=100)({"frames": frames})["objects"] for o in objects
    ]
    middle = float(np.median(all_scores))
    for objects in _stage(detr, threshold=middle, max_objects=100)({"frames": frames})["objects"]:
        _check(objects, 48, 64, middle, 100)
    assert _stage(detr, threshold=1.01)({"frames": frames})["objects"] == [[], []]


def test_a_model_that_cannot_load_says_what_to_do(tmp_path):
    missing = tmp_path / "no-such-detector"
    with pytest.raises(ObjectDetectorLoadError, match="save_pretrained") as e:
        DetectObjectsStage(model=str(missing), device="cpu").setup()
    assert str(missing) in str(e.value)
    not_detr = make_tiny_causal_lm(tmp_path / "llama")
    with pytest.raises(ObjectDetectorLoadError, match="'llama' model, not DETR"):
        DetectObjectsStage(model=str(not_detr), device="cpu").setup()


def test_draw_objects_outlines_boxes_on_a_copy():
    frame = np.full((60, 80, 3), 128, np.uint8)
    before = frame.copy()
    drawn = draw_objects(frame, [{"label": "dog", "score": 0.93, "box": [20.0, 25.0, 60.0, 55.0]}])
    np.testing.assert_array_equal(frame, before)
    assert drawn.shape == frame.shape and drawn.dtype == np.uint8
    assert (drawn[25:55, 20] != 128).any(axis=1).all()  # the left edge of the outline
    assert (drawn[35:45, 30:50] == 128).all()  # the inside is left alone
    assert (drawn[:25, 20:60] != 128).any()  # the tag sits above the box


def test_draw_objects_clips_to_the_frame_and_leaves_a_frame_without_objects_alone():
    frame = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    np.testing.assert_array_equal(draw_objects(frame, []), frame)
    drawn = draw_objects(frame, [{"label": "a very long label", "score": 0.5, "box": [-10.0, -5.0, 70.0, 45.0]}])
    assert drawn.shape == frame.shape


@pytest.mark.gpu
@gpu
def test_gpu_half_precision_agrees_with_cpu(detr):
    # At the processor's own size (64 x 96) nothing is resized: GPU and CPU interpolation differ slightly,
    # and a random tiny DETR turns slight input differences into other boxes.
    frames = _frames(4, 64, 96)
    cpu = _stage(detr, max_objects=100)({"frames": frames})["objects"]
    cuda = _stage(detr, max_objects=100, device="cuda")({"frames": frames})["objects"]
    for a, b in zip(cpu, cuda):
        assert len(a) == len(b)
        np.testing.assert_allclose([o["score"] for o in a], [o["score"] for o in b], atol=0.02)
        # fp16 may swap near-tied queries, so match each CPU box to its nearest GPU box.
        boxes_b = np.array([o["box"] for o in b])
        for o in a:
            assert np.abs(boxes_b - np.array(o["box"])).max(axis=1).min() < 2.0
