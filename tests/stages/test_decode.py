from fractions import Fraction

import numpy as np
import pytest

from vtm.data.sample_archive import Encoding, write_video
from vtm.stages.decode import (
    DecodeError,
    DecodeStage,
    X264Stream,
    _decode_pyav,
    _pyav_first_frame,
    _pyav_timestamps,
    _x264_stream,
    cuda_hwaccel,
    decode_batch,
    frame_statistics,
    probe,
    sample_by_time,
)


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
    fast = DecodeStage(image_size=64)(
        {"path": str(path), "frame_index": idx, "rotation": plan.rotation, "decoder": "decord"}
    )["frames"]
    plain, decoded = _decode_pyav(path, idx, 64, plan.rotation)
    assert decoded.all()
    assert fast.shape == plain.shape == (8, 64, 64, 3)
    assert np.abs(fast.astype(int) - plain.astype(int)).mean() < 4.0  # scaler differences only


def test_probing_without_ffmpegs_trial_decode_reads_what_full_probing_reads(sample_dir, ground_truth):
    """The probe opens files without FFmpeg's trial decoding of their first frames: the frame size, rotation,
    declared duration and timestamps are those a fully probed open gives."""
    import av

    for rel in ground_truth["videos"]:
        path = sample_dir / rel
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            declared = float(stream.duration * stream.time_base) if stream.duration is not None else None
            if declared is None and container.duration is not None and len(container.streams) == 1:
                declared = container.duration / 1e6
            frame = next(container.decode(stream))
            full = (int(round(frame.rotation or 0)) % 360, frame.width, frame.height, declared)
            container.seek(0)
            pts = np.sort([p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0])
            pts = pts * float(stream.time_base)
        assert _pyav_first_frame(path) == full, rel
        assert np.array_equal(_pyav_timestamps(path), pts), rel


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


def _decode_nearest_batch(stage: DecodeStage, path, plan, idx) -> dict:
    pts, pts_start = plan.pts_around(idx)
    return stage(
        {
            "path": str(path),
            "frame_index": idx,
            "rotation": plan.rotation,
            "decoder": plan.decoder,
            "pts": pts,
            "pts_start": pts_start,
        }
    )


@pytest.mark.parametrize(
    "rel",
    [
        "transitions/dissolve.mp4",
        "phone/vfr walk.mkv",
        "phone/portrait.mp4",
        "quiet/empty room.avi",
        "cámara 3/parking lot.webm",
    ],
)
def test_skipping_unreferenced_frames_returns_neighbours_within_one_frame_decoded_exactly(sample_dir, rel):
    """Extract's decoder skips frames no other frame refers to: each wanted frame comes back, or its
    neighbour, and the pixels are exactly those of that frame decoded the plain way."""
    path = sample_dir / rel
    plan = probe(path, fps=3.0)
    stage = DecodeStage(image_size=64, nearest_frames=True)
    stage.setup()
    out = _decode_nearest_batch(stage, path, plan, plan.frame_index)
    # x264 with one reference per list (the sample archive's): B-frames no sample needs are skipped too
    assert out["decoded_with"] == ("pyav-nonref" if rel.endswith((".avi", ".webm")) else "pyav-bframes")
    got = out["frame_index"]
    assert np.all(np.abs(got - plan.frame_index) <= 1) and np.all(np.diff(got) > 0)
    assert np.all(
        np.abs(plan.pts[got] - plan.timestamps) <= 1.0 / plan.native_fps * 1.5
    )  # within one frame interval (VFR: up to 1.5 mean frames)
    exact, decoded = _decode_pyav(path, got, 64, plan.rotation)
    assert decoded.all()
    assert np.array_equal(out["frames"], exact)
    assert set(out["timing"]) == {"decode_s", "decode_cpu_s", "stats_s", "frame_change_cpu_s"}
    assert 0 < out["timing"]["frame_change_cpu_s"] < out["timing"]["decode_cpu_s"]


@pytest.mark.parametrize(
    "params, how",
    [
        ("mbtree=0:ref=1", "pyav-bframes"),
        ("mbtree=0:ref=3", "pyav-nonref"),
        (None, "pyav-nonref"),  # x264's defaults, as ffmpeg's libx264 encodes: medium, ref=3, mbtree, keyint 250
    ],
)
def test_skipping_b_frames_takes_the_frames_skipping_non_reference_ones_takes_and_decodes_them_exactly(
    tmp_path, params, how
):
    """x264 with b-pyramid (its reference B-frames) at the medium preset. With one reference per list, the
    B-frames no sample needs are skipped as well; the samples still get the frames a decoder skipping only
    non-reference frames gives them (the frame, else the next, else the previous decoded one), with the pixels
    of an exact decode. With three references an I/P-frame may predict from a B-frame: only non-reference
    frames are skipped (skipping B-frames there changes pixels). Either way the stream is opened without
    FFmpeg's probing decode, which must not change a frame."""
    import av

    path = tmp_path / "x264.mp4"
    backdrop = np.random.default_rng(0).integers(0, 255, (80, 112, 3)).astype(np.uint8)
    options = {"preset": "medium"} if params is None else {"preset": "medium", "g": "60", "x264-params": params}
    encoding = Encoding("libx264", options=options)
    write_video(path, (np.roll(backdrop, (2 * i, 3 * i), axis=(0, 1)) for i in range(150)), fps=30, encoding=encoding)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        tick = float(stream.time_base)
        unreferenced_skipped = {frame.pts for frame in container.decode(stream)}
    for fps, segment in ((3.0, 64), (7.0, 5), (15.0, 3)):
        plan = probe(path, fps=fps)
        decodable = {i for i, t in enumerate(plan.pts) if round(t / tick) in unreferenced_skipped}
        expected = [next(j for j in (i, i + 1, i - 1) if j in decodable) for i in plan.frame_index]
        stage = DecodeStage(image_size=32, nearest_frames=True)
        labels = set()
        for s in range(0, len(plan.frame_index), segment):
            out = _decode_nearest_batch(stage, path, plan, plan.frame_index[s : s + segment])
            labels.add(out["decoded_with"])
            assert list(out["frame_index"]) == expected[s : s + segment]
            exact, decoded = _decode_pyav(path, out["frame_index"], 32, 0)
            assert decoded.all() and np.array_equal(out["frames"], exact)
        assert how in labels and labels <= {how, "pyav-nonref"}  # a segment needing every B-frame skips none


@pytest.mark.parametrize(
    "encoding, expected",
    [
        (Encoding("libx264", options={"preset": "veryfast"}), X264Stream(length_size=4, single_reference=True)),
        (Encoding("libx264", options={"preset": "medium"}), X264Stream(length_size=4, single_reference=False)),
        (Encoding("libx264", options={"preset": "medium", "x264-params": "interlaced=1"}), None),
        (Encoding("mpeg4"), None),
    ],
)
def test_x264_streams_are_told_apart_by_the_settings_x264_writes(tmp_path, encoding, expected):
    """Progressive x264 streams are opened without FFmpeg's probing decode; only those with one reference per
    list have their unneeded B-frames skipped. Interlaced ones and other encoders get neither."""
    import av

    path = tmp_path / "v.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (12, 48, 64, 3)).astype(np.uint8)
    write_video(path, frames, fps=30, encoding=encoding)
    with av.open(str(path), options={"skip_frame": "all"}) as container:
        assert _x264_stream(container, container.streams.video[0]) == expected


def test_h264_with_b_frames_moves_some_samples_and_exact_mode_moves_none(sample_dir):
    path = sample_dir / "transitions/dissolve.mp4"  # x264 veryfast: B-frames, half of them unreferenced
    plan = probe(path, fps=3.0)
    near = _decode_nearest_batch(DecodeStage(image_size=64, nearest_frames=True), path, plan, plan.frame_index)
    assert 0 < np.sum(near["frame_index"] != plan.frame_index) < len(plan.frame_index)
    exact = _decode_nearest_batch(
        DecodeStage(image_size=64), path, plan, plan.frame_index
    )  # describe / infer: the frames asked for
    assert np.array_equal(exact["frame_index"], plan.frame_index) and exact["decoded_with"] == "decord"


def test_a_segment_in_the_middle_of_a_video_decodes_the_same_as_in_one_piece(sample_dir):
    path = sample_dir / "mixed/día de mercado.mp4"
    plan = probe(path, fps=3.0)
    stage = DecodeStage(image_size=64, nearest_frames=True)
    whole = _decode_nearest_batch(stage, path, plan, plan.frame_index)
    parts = [
        _decode_nearest_batch(stage, path, plan, plan.frame_index[s : s + 7])
        for s in range(0, len(plan.frame_index), 7)
    ]
    assert np.array_equal(np.concatenate([p["frame_index"] for p in parts]), whole["frame_index"])
    assert np.array_equal(np.concatenate([p["frames"] for p in parts]), whole["frames"])


def test_timestamps_that_do_not_match_the_plan_fall_back_to_exact_decoding(sample_dir):
    path = sample_dir / "cuts/street shots.mp4"
    plan = probe(path, fps=3.0)
    idx = plan.frame_index[:6]
    pts, pts_start = plan.pts_around(idx)
    out = DecodeStage(image_size=64, nearest_frames=True)(
        {
            "path": str(path),
            "frame_index": idx,
            "rotation": 0,
            "decoder": "decord",
            "pts": pts + 0.013,
            "pts_start": pts_start,
        }
    )
    assert out["decoded_with"] == "decord" and np.array_equal(out["frame_index"], idx)


def test_frame_statistics_equal_the_plain_definition():
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 48, 3), dtype=np.uint8)
    hist, grid = frame_statistics(frames)
    q = frames.astype(np.int64) // 64
    codes = (q[..., 0] * 4 + q[..., 1]) * 4 + q[..., 2]
    plain_hist = np.stack([np.bincount(c.ravel(), minlength=64) for c in codes]) / (64 * 48)
    plain_grid = frames.reshape(5, 16, 4, 16, 3, 3).astype(np.float64).mean(axis=(2, 4))
    np.testing.assert_allclose(hist, plain_hist, rtol=1e-6)
    np.testing.assert_allclose(grid, plain_grid, rtol=1e-6)


def test_gpu_decoding_without_a_gpu_falls_back_to_the_cpu_and_agrees(sample_dir):
    path = sample_dir / "cuts/street shots.mp4"
    plan = probe(path, fps=3.0)
    cpu = _decode_nearest_batch(DecodeStage(image_size=64, nearest_frames=True), path, plan, plan.frame_index)
    stage = DecodeStage(image_size=64, nearest_frames=True, device="cuda")
    stage.setup()
    gpu = _decode_nearest_batch(stage, path, plan, plan.frame_index)
    assert gpu["decoded_with"] == ("pyav-nonref-cuda" if cuda_hwaccel() is not None else cpu["decoded_with"])
    assert np.array_equal(gpu["frame_index"], cpu["frame_index"])
    assert np.abs(gpu["frames"].astype(int) - cpu["frames"].astype(int)).mean() < 1.0


@pytest.mark.gpu
@pytest.mark.parametrize(
    "rel", ["cuts/street shots.mp4", "phone/portrait.mp4", "cámara 3/parking lot.webm", "quiet/empty room.avi"]
)
def test_nvdec_decodes_what_the_cpu_decodes(sample_dir, rel):
    """On a GPU machine: H.264 (and VP9) decode on NVDEC; a codec it lacks (MJPEG) falls back to the CPU. Same frames
    either way."""
    if cuda_hwaccel() is None:
        pytest.skip("no CUDA video decoding here (no GPU, or this PyAV build lacks the cuda hwaccel)")
    path = sample_dir / rel
    plan = probe(path, fps=3.0)
    cpu = _decode_nearest_batch(DecodeStage(image_size=64, nearest_frames=True), path, plan, plan.frame_index)
    stage = DecodeStage(image_size=64, nearest_frames=True, device="cuda")
    stage.setup()
    gpu = _decode_nearest_batch(stage, path, plan, plan.frame_index)
    if rel.endswith((".mp4", ".webm")):
        assert gpu["decoded_with"] == "pyav-nonref-cuda"
    assert np.array_equal(gpu["frame_index"], cpu["frame_index"])
    assert (
        np.abs(gpu["frames"].astype(int) - cpu["frames"].astype(int)).mean() < 2.0
    )  # NV12 vs YUV420P into the same scaler
    # The frames between samples are measured on either (NV12's luma plane read in place); the cuts jump out on both.
    assert np.isfinite(gpu["frame_change"][1:]).all()
    if rel.startswith("cuts/"):
        jumps = [np.nan_to_num(out["frame_change"][:, 0] - out["frame_change"][:, 1]) for out in (cpu, gpu)]
        assert set(np.argsort(jumps[0])[-3:]) == set(np.argsort(jumps[1])[-3:])  # the clip's three cuts


@pytest.mark.parametrize("n_frames, cut_at", [(75, 70), (77, 76)])  # last interval: a full one; one frame (0.04 s)
def test_a_cut_in_the_last_sample_interval_is_found_by_every_decoder(tmp_path, n_frames, cut_at):
    """The plan ends with the video's last frame, so a cut after the last regular sample (k/fps) is seen, however
    short that last interval is, by every decoder extract and describe use; without the last frame it is missed."""
    from vtm.stages.change_score import ChangeScoreStage
    from vtm.stages.select_windows import SelectWindowsStage

    rng = np.random.default_rng(0)
    shots = [rng.integers(0, 256, (1, 1, 3)) + rng.integers(0, 40, (96, 128, 3)) for _ in range(2)]
    frames = [
        np.clip(shots[i >= cut_at] + rng.integers(0, 3, (96, 128, 3)), 0, 255).astype(np.uint8) for i in range(n_frames)
    ]
    path = tmp_path / "cut at the end.mp4"
    write_video(path, frames, fps=25)
    plan = probe(path, fps=3.0)
    regular = plan.frame_index[plan.frame_index < n_frames - 1]
    assert plan.frame_index[-1] == n_frames - 1 and regular[-1] < cut_at  # the cut comes after the last k/3 s

    def triggers(frame_index, **decode) -> list[float]:
        stage = DecodeStage(image_size=32, **decode)
        out = stage(decode_batch(path, frame_index, 0, plan.decoder, plan.pts_around(frame_index)))
        got = out["frame_index"]
        assert got[-1] >= cut_at or frame_index[-1] < cut_at  # a neighbour standing in is still of the last shot
        # the colour histogram stands in for the encoder's features: a cut changes both
        score = ChangeScoreStage()({"timestamps": plan.pts[got], "features": out["hist"], **out})["change_score"]
        return SelectWindowsStage()({"timestamps": plan.pts[got], "score": score})["trigger_time"].tolist()

    for decode in ({}, {"nearest_frames": True}):  # decord (describe, infer) and PyAV skipping frames (extract)
        assert triggers(plan.frame_index, **decode) == [pytest.approx(plan.pts[-1])]
        assert triggers(regular, **decode) == []  # before: no sample ever showed the last shot
    plain, decoded = _decode_pyav(path, plan.frame_index[-2:], 32, 0)  # the plain fallback decodes the last frame too
    assert decoded.all() and np.abs(plain[1].astype(int) - plain[0].astype(int)).mean() > 20


def _panning_video_with_a_cut(path, cut_at: int = 38, n_frames: int = 125):
    """25 fps, a scene panning 1 px a frame (6 s across) (every frame changes), a cut to another scene at `cut_at`."""
    rng = np.random.default_rng(4)
    scenes = []
    for _ in range(2):
        scene = np.kron(rng.uniform(30, 220, (4, 20, 3)), np.ones((24, 24, 1)))
        for _ in range(3):  # soft edges, as a lens gives
            for axis in (0, 1):
                scene = (scene + np.roll(scene, 3, axis) + np.roll(scene, -3, axis)) / 3
        scenes.append(scene.astype(np.uint8))
    frames = [np.roll(scenes[i >= cut_at], i, axis=1)[:, :160] for i in range(n_frames)]
    write_video(path, frames, fps=25)
    return probe(path, fps=3.0)


def test_the_frame_change_shows_a_cut_between_samples_as_one_jump_that_motion_never_makes(tmp_path):
    """Between two samples 8 frames apart the pan changes every frame a little; the cut changes one pair of frames a
    lot. The jump lands on the sample after the cut, and stands far above the pan's."""
    path = tmp_path / "pan with a cut.mp4"
    plan = _panning_video_with_a_cut(path)
    stage = DecodeStage(image_size=32, nearest_frames=True)
    out = stage(decode_batch(path, plan.frame_index, 0, plan.decoder, plan.pts_around(plan.frame_index)))
    assert out["decoded_with"].startswith("pyav")
    change = out["frame_change"]
    assert change.shape == (len(plan.frame_index), 2) and np.isnan(change[0]).all()  # nothing before the first
    jump = change[:, 0] - change[:, 1]  # the largest change in each interval over its median one
    cut = int(np.searchsorted(plan.pts[out["frame_index"]], plan.pts[38]))
    others = np.delete(jump, [0, cut])
    assert np.all(np.isfinite(others)) and jump[cut] > 4 * others.max()
    assert change[cut, 1] < 2 * np.median(change[1:, 1])  # the interval's other frames moved as usual


def test_a_segment_decoded_from_the_sample_before_it_sees_the_cut_just_before_its_first_sample(tmp_path):
    """Extract decodes a video in segments. A segment that starts at the sample after a cut must see the frames between
    it and the sample before (`pts_around(..., since=)`), or the cut's jump falls between two segments."""
    path = tmp_path / "pan with a cut.mp4"
    plan = _panning_video_with_a_cut(path)
    stage = DecodeStage(image_size=32, nearest_frames=True)
    whole = stage(decode_batch(path, plan.frame_index, 0, plan.decoder, plan.pts_around(plan.frame_index)))
    cut = int(np.searchsorted(plan.pts[whole["frame_index"]], plan.pts[38]))
    idx = plan.frame_index[cut:]

    def first_jump(around) -> float:
        out = stage(decode_batch(path, idx, 0, plan.decoder, around))
        assert np.array_equal(out["frame_index"], whole["frame_index"][cut:])
        return float(np.nan_to_num(out["frame_change"][0, 0] - out["frame_change"][0, 1]))

    since = first_jump(plan.pts_around(idx, since=plan.frame_index[cut - 1]))
    # About the same jump: which B-frames no sample needs (and so are skipped) depends on the samples a task holds.
    assert since == pytest.approx(whole["frame_change"][cut, 0] - whole["frame_change"][cut, 1], rel=0.25)
    assert first_jump(plan.pts_around(idx)) < since / 5  # from the frame before its first sample only: no jump


def test_luma_cells_read_in_place_agree_with_ffmpegs_gray():
    import av

    from vtm.stages.decode import luma_cells

    rng = np.random.default_rng(5)
    image = np.kron(rng.integers(0, 256, (9, 16, 3)), np.ones((40, 40, 1))).astype(np.uint8)  # 360 x 640
    rgb = av.VideoFrame.from_ndarray(image, format="rgb24")
    yuv = rgb.reformat(format="yuv420p")
    assert yuv.planes[0].line_size >= yuv.width
    in_place, scaled = luma_cells(yuv), luma_cells(rgb)  # yuv420p: its luma plane; rgb24: FFmpeg's gray first
    assert in_place.shape == scaled.shape == (16, 16)
    assert np.ptp(in_place) > 100  # a picture, not a flat one
    assert np.corrcoef(in_place.ravel(), scaled.ravel())[0, 1] > 0.99  # the same one (luma ranges may differ)
    for ten_bits in ("yuv420p10le", "p010le"):  # 10-bit HEVC/VP9/AV1 in software; NVDEC's 10-bit frames
        np.testing.assert_allclose(luma_cells(rgb.reformat(format=ten_bits)), in_place, atol=1.0)


def test_frame_change_per_sample_takes_each_interval_after_the_sample_before():
    from vtm.stages.decode import frame_change_per_sample

    times = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    changes = np.array([9.0, 0.1, 0.2, 0.6, 0.1, 0.3, 0.5])
    out = frame_change_per_sample(times, changes, sample_times=np.array([0.3, 0.6, 0.9]), start=0.15)
    np.testing.assert_allclose(out[0], [0.2, 0.15])  # (0.15, 0.3]: 0.1 is before the start
    np.testing.assert_allclose(out[1], [0.6, 0.3])  # (0.3, 0.6]
    np.testing.assert_allclose(out[2], [0.5, 0.5])  # (0.6, 0.9]
    assert np.isnan(frame_change_per_sample(times, changes, np.array([0.05]), start=0.0)).all()  # none decoded
    # The decoder's time of a sample's own frame may lie a little after the plan's (decord's): still that sample's.
    late = frame_change_per_sample(times + 5e-5, changes, sample_times=np.array([0.3, 0.6, 0.9]), start=0.15)
    np.testing.assert_allclose(late, out)


def test_a_low_frame_rate_camera_is_decoded_frame_by_frame_and_measured(tmp_path):
    """3 samples a second of a 5 fps camera: samples one or two frames apart, where skipping a frame would leave two
    samples one neighbour. Every frame is decoded, each sample gets its own frame exactly, and the frames between
    samples are measured: the cut stands out."""
    rng = np.random.default_rng(7)
    shots = [rng.integers(0, 256, (1, 1, 3)) + rng.integers(0, 30, (96, 128, 3)) for _ in range(2)]
    frames = [np.clip(shots[i >= 20], 0, 255).astype(np.uint8) for i in range(40)]
    path = tmp_path / "camera at 5 fps.mp4"
    write_video(path, frames, fps=5)
    plan = probe(path, fps=3.0)
    out = DecodeStage(image_size=32, nearest_frames=True)(
        decode_batch(path, plan.frame_index, 0, plan.decoder, plan.pts_around(plan.frame_index))
    )
    assert out["decoded_with"] == "pyav-every-frame" and np.array_equal(out["frame_index"], plan.frame_index)
    exact, decoded = _decode_pyav(path, plan.frame_index, 32, 0)
    assert decoded.all() and np.array_equal(out["frames"], exact)
    change = out["frame_change"]
    assert np.isfinite(change[1:]).all()
    cut = int(np.searchsorted(plan.frame_index, 20))  # the first sample showing the second shot
    assert np.nanargmax(change[:, 0]) == cut
