"""Output folders vtm owns besides the cache: a describe output and a training run.

Like the cache, such a folder is created by vtm and marked (`.vtm-output.json`, with its kind), and
locked while a job writes it. An existing folder that is neither empty nor vtm's output of the same
kind is refused before anything is written, so none of a user's files is overwritten. A folder this
run marked and left holding nothing but the mark (the run failed before writing) is left as it was found.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from vtm.cache.atomic import write_json
from vtm.cache.lock import LOCK_FILE, DirectoryLock

MARKER = ".vtm-output.json"
FORMAT_ID = "vtm-output"


class OutputDirError(RuntimeError):
    """vtm will not write into this folder; the message says why and what to do."""


def output_kind(folder: Path) -> str | None:
    """The kind of vtm output `folder` is ("describe", "train"), from its mark; None if it has none."""
    try:
        d = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return d.get("kind") if isinstance(d, dict) and d.get("format") == FORMAT_ID else None


def _only_vtm_leftovers(folder: Path) -> bool:
    """Empty, or holding only what a killed vtm leaves before writing (its lock, the mark)."""
    return all(p.name.startswith(LOCK_FILE) or p.name.startswith(MARKER) for p in folder.iterdir())


def check_output_dir(folder: Path, kind: str, option: str, older_vtm_output: Callable[[Path], bool]) -> None:
    """Refuse `folder` unless it is missing, empty, or vtm's output of this `kind` (marked, or
    `older_vtm_output` recognises one written before the mark existed)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputDirError(f"{option} {folder} is a file, not a folder; choose a new or empty folder.")
    if not folder.exists() or _only_vtm_leftovers(folder):
        return
    found = output_kind(folder)
    if found == kind or (found is None and older_vtm_output(folder)):
        return
    what = (
        f"a vtm {found} output, not a {kind} one" if found else f"not empty and not a vtm {kind} output (no {MARKER})"
    )
    raise OutputDirError(
        f"{option} {folder} is {what}; vtm will not write into it, so none of its files is touched. Choose a new or "
        f"empty folder for {option}."
    )


@contextlib.contextmanager
def owned_output_dir(
    folder: Path, kind: str, command: str, option: str, older_vtm_output: Callable[[Path], bool]
) -> Iterator[Path]:
    """Check that vtm may write `folder` (check_output_dir), create and mark it, and hold its writer lock."""
    folder = Path(folder)
    check_output_dir(folder, kind, option, older_vtm_output)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    marked = False
    try:
        with DirectoryLock(folder, command):
            if output_kind(folder) != kind:
                write_json(folder / MARKER, {"format": FORMAT_ID, "kind": kind})
                marked = True
            yield folder
    except BaseException:
        if marked and _only_vtm_leftovers(folder):  # the run failed before writing: leave the folder as it was
            (folder / MARKER).unlink(missing_ok=True)
            if created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise
