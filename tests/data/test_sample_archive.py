"""The sample archive is what every other test and benchmark trusts, so check it against both readers."""

from pathlib import Path

import av
import decord
import numpy as np
import pytest

from vtm.data.sample_archive import make_archive, read_ground_truth

READ_ERRORS = (av.FFmpegError, OSError, RuntimeError, decord.DECORDError)


@pytest.fixture(scope="session")
def sample(sample_dir, ground_truth) -> tuple[Path, dict]:
    return sample_dir, ground_truth  # the archive made once for the whole session (tests/conftest.py)


def _pyav_frames(path: Path) -> tuple[list[np.ndarray], list[float], av.VideoFrame]:
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [f.to_ndarray(format="rgb24") for f in frames], [f.time for f in frames], frames[0]


def test_archive_has_the_variety_it_promises(sample):
    root, truth = sample
    videos = truth["videos"]
    assert {Path(p).suffix for p in videos} == {".mp4", ".mkv", ".webm", ".avi", ".mov"}
    assert {round(v["fps"], 2) for v in videos.values() if not v["vfr"]} == {25.0, 29.97, 30.0}
    assert any(not p.isascii() for p in videos) and any(" " in p for p in videos)
    assert [] in truth["events"].values(), "quiet scenes have no events"
    assert set(truth["events"]) == set(videos)
    assert (root / "cámara 2" / "calle noche.mkv").is_file()
    for path, events in truth["events"].items():
        assert events == sorted(events) and all(0 <= e <= videos[path]["seconds"] for e in events)
        # Events further apart than twice the 1 s tolerance keep the scoring unambiguous.
        assert all(b - a > 2.0 for a, b in zip(events, events[1:])), path


def test_good_videos_decode_with_pyav(sample):
    root, truth = sample
    for path, expected in truth["videos"].items():
        with av.open(str(root / path)) as container:
            stream = container.streams.video[0]
            frames = list(container.decode(stream))
            declared_rate = float(stream.average_rate)
        assert len(frames) == expected["frames"], path
        assert (frames[0].width, frames[0].height) == (expected["width"], expected["height"]), path
        last_frame_end = frames[-1].time + 1 / declared_rate  # for VFR, the declared rate is the tick
        assert last_frame_end == pytest.approx(expected["seconds"], abs=0.01), path
        if not expected["vfr"]:
            assert declared_rate == pytest.approx(expected["fps"], abs=0.01), path


def test_good_videos_decode_with_decord(sample):
    root, truth = sample
    for path, expected in truth["videos"].items():
        reader = decord.VideoReader(str(root / path))
        assert len(reader) == expected["frames"], path
        # get_frame_timestamp gives (start, end) of each frame in seconds.
        assert reader.get_frame_timestamp(len(reader) - 1)[1] == pytest.approx(expected["seconds"], abs=0.01), path
        if not expected["vfr"]:
            assert reader.get_avg_fps() == pytest.approx(expected["fps"], abs=0.01), path
        size = (expected["height"], expected["width"])
        rotated = truth["rotation"].get(path, 0) % 180 == 90
        assert reader[0].shape == (size[::-1] if rotated else size) + (3,), path


def test_vfr_video_has_irregular_timestamps(sample):
    root, truth = sample
    [path] = [p for p, v in truth["videos"].items() if v["vfr"]]
    _, times, _ = _pyav_frames(root / path)
    steps = np.round(np.diff(times), 4)
    assert set(steps) == {0.025, 0.05}
    decord_starts = decord.VideoReader(str(root / path)).get_frame_timestamp(range(len(times)))[:, 0]
    np.testing.assert_allclose(decord_starts, times, atol=1e-3)


def test_rotation_is_in_the_display_matrix(sample):
    """PyAV hands back the stored frame and reports the rotation; decord applies it."""
    root, truth = sample
    [(path, degrees)] = truth["rotation"].items()
    images, _, first = _pyav_frames(root / path)
    assert first.rotation == degrees == 90
    upright = decord.VideoReader(str(root / path))[0].asnumpy()
    stored_turned = np.rot90(images[0], k=degrees // 90)  # counter-clockwise
    assert np.abs(upright.astype(int) - stored_turned).mean() < 3


def test_cut_times_are_the_first_frames_of_new_shots(sample):
    root, truth = sample
    for path in [p for p in truth["videos"] if p.startswith("cuts/")]:
        images, times, _ = _pyav_frames(root / path)
        change = [np.abs(b.astype(int) - a).mean() for a, b in zip(images, images[1:])]
        events = truth["events"][path]
        biggest = sorted(np.argsort(change)[-len(events) :] + 1)  # frame index after each big change
        assert [round(times[i], 3) for i in biggest] == [round(e, 3) for e in events], path


def test_objects_change_only_part_of_the_frame(sample):
    root, truth = sample
    path = "cámara 1/entrada.mp4"
    images, times, _ = _pyav_frames(root / path)
    enter, leave = truth["events"][path]
    before = images[int(np.searchsorted(times, enter - 1.0))].astype(int)
    during = images[int(np.searchsorted(times, (enter + leave) / 2))].astype(int)
    changed = (np.abs(during - before).max(axis=2) > 40).mean()
    assert 0.02 < changed < 0.1


def test_broken_files_are_broken_as_described(sample):
    root, truth = sample
    broken = truth["broken"]
    assert set(broken) == {
        "broken/empty.mp4",
        "broken/truncated.mp4",
        "broken/notes.mp4",
        "broken/audio_only.mp4",
        "broken/one_frame.mp4",
        "broken/folder.mp4",
        "broken/garbage.mkv",
    }
    assert (root / "broken/empty.mp4").stat().st_size == 0
    assert (root / "broken/folder.mp4").is_dir()
    for path in [
        "broken/empty.mp4",
        "broken/truncated.mp4",
        "broken/notes.mp4",
        "broken/folder.mp4",
        "broken/garbage.mkv",
    ]:
        with pytest.raises(READ_ERRORS):
            av.open(str(root / path)).close()
        with pytest.raises(READ_ERRORS):
            decord.VideoReader(str(root / path))

    with av.open(str(root / "broken/audio_only.mp4")) as container:
        assert [s.type for s in container.streams] == ["audio"]
    with pytest.raises(READ_ERRORS):
        decord.VideoReader(str(root / "broken/audio_only.mp4"))

    images, _, _ = _pyav_frames(root / "broken/one_frame.mp4")
    assert len(images) == 1
    assert len(decord.VideoReader(str(root / "broken/one_frame.mp4"))) == 1


def test_same_seed_same_archive(tmp_path):
    first = make_archive(tmp_path / "a", 3, seconds=1.0, seed=7)
    again = make_archive(tmp_path / "b", 3, seconds=1.0, seed=7)
    other = make_archive(tmp_path / "c", 3, seconds=1.0, seed=8)
    truth = read_ground_truth(first)
    assert truth == read_ground_truth(again)
    assert len(truth["videos"]) == 3 and not truth["broken"]
    for path in truth["videos"]:
        assert (first / path).read_bytes() == (again / path).read_bytes(), path
        frames, _, _ = _pyav_frames(first / path)
        frames_again, _, _ = _pyav_frames(again / path)
        frames_other, _, _ = _pyav_frames(other / path)
        assert all(np.array_equal(a, b) for a, b in zip(frames, frames_again, strict=True))
        assert not np.array_equal(frames[0], frames_other[0])
