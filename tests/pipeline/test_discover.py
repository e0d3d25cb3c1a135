import os

from vtm.pipeline.discover import content_digest, discover_videos, video_id_for


def test_finds_videos_recursively_with_any_name(tmp_path):
    for rel in ["a/b/cámara uno.MP4", "x y/clip.mkv", "c.webm", "d.mov", "e.avi", "notes.txt", ".hidden.mp4"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (tmp_path / "dir.mp4").mkdir()
    found = [v.relpath for v in discover_videos(tmp_path)]
    assert found == ["a/b/cámara uno.MP4", "c.webm", "d.mov", "dir.mp4", "e.avi", "x y/clip.mkv"]


def test_ids_are_stable_and_follow_the_relative_path(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"x")
    first = discover_videos(tmp_path)[0]
    assert first.video_id == video_id_for("v.mp4") == discover_videos(tmp_path)[0].video_id
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    os.rename(tmp_path / "v.mp4", moved / "v.mp4")
    assert discover_videos(moved)[0].video_id == first.video_id  # the dataset root may move


def test_digest_changes_with_content_not_with_time(tmp_path):
    p = tmp_path / "v.mp4"
    p.write_bytes(os.urandom(2_000_000))
    d = content_digest(p)
    os.utime(p, (0, 0))
    assert content_digest(p) == d
    data = bytearray(p.read_bytes())
    data[-10] ^= 0xFF  # a change in the last chunk
    p.write_bytes(bytes(data))
    assert content_digest(p) != d
    assert content_digest(tmp_path) != d  # a directory gets a digest too (it is recorded as failed)
