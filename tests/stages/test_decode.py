from fractions import Fraction

import numpy as np
import pytest

from vtm.pipeline.sample_data import write_video
from vtm.stages.decode import DecodeError, DecodeStage, _decode_pyav, frame_statistics, probe, sample_by_time


@pytest.mark.parametrize("native", [25.0, 30.0, 30000 / 1001])
def test_sampling_by_time_at_constant_rates(native):
    pts = np.arange(int(native * 10)) / native  # 10 s
    idx = sample_by_time(pts, fps=3.0)
    assert len(idx) == 31 and idx[-1] == len(pts) - 1  # and the last frame, so that a cut in the last 1/3 s is seen
    idx = idx[:-1]
    # each sample is the frame on screen at k/3 s: not after it, and less than one frame before it
    targets = np.arange(30) / 3.0
    assert np.all(pts[idx] <= targets + 1e-3)
    assert np.all(targets - pts[idx] < 1.0 / native + 1e-9)


def test_sampling_variable_frame_rate_follows_timestamps():
    durations = np.tile([1 / 20, 1 / 40], 100)  # alternating frame lengths, 7.5 s
    pts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    idx = sample_by_time(pts, fps=2.0)[:-1]  # the last is the last frame
    targets = np.arange(len(idx)) / 2.0
    assert np.all(np.abs(pts[idx] - targets) < 1 / 20 + 1e-9)
    # by counting frames at the mean rate instead, the last samples would drift by ~1.7 s
    assert abs(pts[idx[-1]] - targets[-1]) < 0.06


def test_max_frames_caps_the_plan():
    assert len(sample_by_time(np.arange(300) / 30.0, fps=3.0, max_frames=5)) == 5


def test_probe_plans_every_good_sample_video(sample_dir, ground_truth):
    for rel, meta in ground_truth["videos"].items():
        plan = probe(sample_dir / rel, fps=3.0)
        assert plan.duration_s == pytest.approx(meta["seconds"], abs=0.1), rel
        assert len(plan.frame_index) == pytest.approx(meta["seconds"] * 3 + 1, abs=1), rel  # + the last frame
        assert np.all(np.diff(plan.timestamps) > 0)


def test_rotation_is_honoured(sample_dir, ground_truth):
    rel, degrees = next(iter(ground_truth["rotation"].items()))
    plan = probe(sample_dir / rel, fps=3.0)
    stored = ground_truth["videos"][rel]
    assert plan.rotation == degrees
    assert (plan.width, plan.height) == (stored["height"], stored["width"])  # displayed upright


@pytest.mark.parametrize("rel", ["phone/portrait.mp4", "cuts/street shots.mp4", "phone/vfr walk.mkv"])
def test_decord_and_pyav_give_the_same_frames(sample_dir, rel):
    """The fast path (decord) and the fallback (PyAV) agree, rotation included."""
    path = sample_dir / rel
    plan = probe(path, fps=3.0)
    idx = plan.frame_index[:8]
    fast = DecodeStage(image_size=64)({"path": str(path), "frame_index": idx, "rotation": plan.rotation, "decoder": "decord"})["frames"]
    plain = _decode_pyav(path, idx, 64, plan.rotation)
    assert fast.shape == plain.shape == (8, 64, 64, 3)
    assert np.abs(fast.astype(int) - plain.astype(int)).mean() < 4.0  # scaler differences only


@pytest.mark.parametrize(
    "rel, reason",
    [
        ("broken/empty.mp4", "empty file"),
        ("broken/notes.mp4", "not a video"),
        ("broken/garbage.mkv", "not a video"),
        ("broken/truncated.mp4", "truncated"),
        ("broken/audio_only.mp4", "no video stream"),
        ("broken/one_frame.mp4", "only 1 frame"),
        ("broken/folder.mp4", "directory"),
        ("does/not/exist.mp4", "not found"),
    ],
)
def test_bad_files_get_a_clear_reason(sample_dir, rel, reason):
    with pytest.raises(DecodeError, match=reason):
        probe(sample_dir / rel, fps=3.0)


def test_file_cut_short_is_reported_as_truncated(tmp_path):
    """Matroska needs no index at the end, so a cut file still opens: its declared length gives it away."""
    path = tmp_path / "cut.mkv"
    frames = np.random.default_rng(0).integers(0, 255, (150, 48, 64, 3)).astype(np.uint8)
    write_video(path, frames, fps=Fraction(30))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="truncated"):
        probe(path, fps=3.0)


def test_frame_statistics_shapes_and_normalisation():
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    frames[1, :32] = 255
    hist, grid = frame_statistics(frames)
    assert hist.shape == (2, 64) and np.allclose(hist.sum(1), 1.0)
    assert grid.shape == (2, 16, 16, 3)
    assert grid[1, :8].min() == 255 and grid[1, 8:].max() == 0
