"""After sources were deleted from the dataset, extract said "4 videos: ... 4 already in the cache" while
`vtm cache info` said "6 ok", with no word that two of them are kept without a source."""

from __future__ import annotations

import shlex

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
    videos, cache = tmp_path / "videos", tmp_path / "my cache"  # the command it prints is quoted for a shell
    for name in ("a.mp4", "b.mp4"):
        write_video(videos / name, seconds=1)
    extract = ["extract", str(videos), "--cache", str(cache), "--encoder", "resnet18", "--no-progress"]
    assert CliRunner().invoke(main, extract).exit_code == 0
    info = CliRunner().invoke(main, ["cache", "info", str(cache)])
    assert info.exit_code == 0 and "not yet" not in info.output, info.output

    for name in ("c.mp4", "sub/d.mp4"):
        write_video(videos / name, seconds=1)
    write_video(videos / "a.mp4", seconds=2)  # new content under an extracted name
    info = CliRunner().invoke(main, ["cache", "info", str(cache)])
    command = shlex.join(["vtm", *extract[:4], "--config", str(cache / "extract_config.yaml")])
    assert (
        "not yet     3 of the 4 videos in the dataset: 2 not in the cache (an extract that stopped early, or new "
        f"files), 1 modified since extracted; `{command}` brings them in" in info.output
    ), info.output
    # That command goes on with the settings the cache was built with (resnet18 here, not the default encoder).
    rerun = CliRunner().invoke(main, [*shlex.split(command)[1:], "--no-progress"])
    assert rerun.exit_code == 0 and "4 videos: 3 extracted, 1 already in the cache" in rerun.output, rerun.output

    videos.rename(tmp_path / "moved")  # the whole dataset: said once, not once per video
    info = CliRunner().invoke(main, ["cache", "info", str(cache)])
    assert "(not there any more: moved or deleted; features kept)" in info.output, info.output
    assert "source gone" not in info.output and "not yet" not in info.output
