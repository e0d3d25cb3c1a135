"""After sources were deleted from the dataset, extract said "4 videos: ... 4 already in the cache" while
`vtm cache info` said "6 ok", with no word that two of them are kept without a source."""

from __future__ import annotations

from click.testing import CliRunner

from vtm.pipeline.cli import main

from .conftest import write_video


def test_extract_and_cache_info_say_which_cached_videos_lost_their_source(tmp_path, ray_local):
    videos, cache = tmp_path / "videos", tmp_path / "cache"
    for name in ("a.mp4", "b.mp4", "sub/c.mp4"):
        write_video(videos / name, seconds=1)
    extract = ["extract", str(videos), "--cache", str(cache), "--encoder", "resnet18", "--no-progress"]
    assert CliRunner().invoke(main, extract).exit_code == 0
    (videos / "sub" / "c.mp4").unlink()

    again = CliRunner().invoke(main, extract)  # nothing new: the no-op path
    assert again.exit_code == 0, again.output
    assert "2 videos: 0 extracted, 2 already in the cache" in again.output
    assert f"note: 1 cached video whose source is gone from {videos}, kept in the cache" in again.output

    write_video(videos / "d.mp4", seconds=1)
    (videos / "b.mp4").unlink()
    grown = CliRunner().invoke(main, extract)  # a new video: the full run
    assert grown.exit_code == 0, grown.output
    assert "2 videos: 1 extracted, 1 already in the cache" in grown.output
    assert "note: 2 cached videos whose sources are gone" in grown.output

    info = CliRunner().invoke(main, ["cache", "info", str(cache)])
    assert (
        "videos      4: 4 ok" in info.output
        and "; 2 of the ok ones have no source in the dataset any more (kept)" in info.output
    ), info.output
    assert "  source gone: b.mp4 (features kept)\n  source gone: sub/c.mp4 (features kept)\n" in info.output


def test_cache_info_says_which_videos_of_the_dataset_an_extract_has_not_reached(tmp_path, ray_local):
    """After an extract stopped early (Ctrl-C, a killed job) or new files arrived, `vtm cache info` listed only what
    the cache held, with no word that the dataset holds more."""
    videos, cache = tmp_path / "videos", tmp_path / "cache"
    for name in ("a.mp4", "b.mp4"):
        write_video(videos / name, seconds=1)
    extract = ["extract", str(videos), "--cache", str(cache), "--encoder", "resnet18", "--no-progress"]
    assert CliRunner().invoke(main, extract).exit_code == 0
    info = CliRunner().invoke(main, ["cache", "info", str(cache)])
    assert info.exit_code == 0 and "not yet" not in info.output, info.output

    for name in ("c.mp4", "sub/d.mp4"):
        write_video(videos / name, seconds=1)
    info = CliRunner().invoke(main, ["cache", "info", str(cache)])
    assert (
        f"not yet     2 of the 4 videos in the dataset (an extract that stopped early, or new files): `vtm "
        f"extract {videos} --cache {cache} --config {cache / 'extract_config.yaml'}` adds them" in info.output
    ), info.output
    # That command goes on with the settings the cache was built with (resnet18 here, not the default encoder).
    rerun = CliRunner().invoke(main, [*extract[:4], "--no-progress", "--config", str(cache / "extract_config.yaml")])
    assert rerun.exit_code == 0 and "4 videos: 2 extracted, 2 already in the cache" in rerun.output, rerun.output
