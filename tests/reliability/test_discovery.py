"""Defect 3: unreadable folders and broken or looping links were skipped silently (0 failed, exit 0)."""

from __future__ import annotations

from vtm.pipeline.discover import discover_videos

from .conftest import run_python


def test_broken_and_looping_links_are_found_with_their_reason(tmp_path):
    (tmp_path / "cam").mkdir()
    (tmp_path / "cam" / "a.mp4").write_bytes(b"x")
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (tmp_path / "l1.mp4").symlink_to(tmp_path / "l2.mp4")
    (tmp_path / "l2.mp4").symlink_to(tmp_path / "l1.mp4")
    (tmp_path / "cam" / "up").symlink_to(tmp_path)  # a folder link back up: walking it would never end
    (tmp_path / "linked").symlink_to(tmp_path / "cam")  # a second name for a folder
    found = {v.relpath: v.error for v in discover_videos(tmp_path)}
    assert found["cam/a.mp4"] is None
    assert "broken link" in found["gone.mp4"] and "nowhere.mp4" in found["gone.mp4"]
    assert "link loop" in found["l1.mp4"] and "link loop" in found["l2.mp4"]
    assert "link loop" in found["cam/up"]
    assert "cam" in found["linked"]
    assert len(found) == 6  # every video counted once


def test_videos_behind_a_linked_folder_are_found(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "v.mp4").write_bytes(b"x")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "more").symlink_to(elsewhere)
    assert [(v.relpath, v.error) for v in discover_videos(tmp_path / "data")] == [("more/v.mp4", None)]


def test_an_unreadable_folder_is_reported(tmp_path):
    (tmp_path / "ok.mp4").write_bytes(b"x")
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "hidden.mp4").write_bytes(b"x")
    (tmp_path / "private").chmod(0)
    try:
        done = run_python(
            f"from vtm.pipeline.discover import discover_videos\nfor v in discover_videos({str(tmp_path)!r}): "
            "print(v.relpath, '|', v.error)",
            obey_permissions=True,
        )
    finally:
        (tmp_path / "private").chmod(0o755)
    assert done.returncode == 0, done.stderr
    found = dict(line.split(" | ") for line in done.stdout.splitlines())
    assert found["ok.mp4"] == "None"
    assert found["private"].startswith("folder cannot be read (Permission denied)")


def test_extract_records_them_as_failed_and_exits_1(messy_extract):
    from vtm.cache.store import FeatureCache

    result, _, cache_dir = messy_extract
    assert result.exit_code == 1, result.output
    assert "2 extracted" in result.output and "2 failed" in result.output
    rows = {r["path"]: r for r in FeatureCache.open(cache_dir).manifest().to_dicts()}
    assert rows["good.mp4"]["status"] == "ok"
    assert rows["gone.mp4"]["status"] == "failed" and "broken link" in rows["gone.mp4"]["error"]
    assert rows["loop"]["status"] == "failed" and "link loop" in rows["loop"]["error"]


def test_a_video_gone_after_discovery_fails_with_its_reason(tmp_path):
    import pytest

    from vtm.stages.decode import DecodeError, probe

    from .conftest import write_video

    write_video(tmp_path / "v.mp4", seconds=1)
    (found,) = discover_videos(tmp_path)
    (tmp_path / "v.mp4").unlink()
    with pytest.raises(DecodeError, match="moved or deleted since discovery"):
        probe(found.path, 3.0)
