"""Atomic file writes: readers never see a half-written file.

Write to a temporary name in the same directory, fsync, then rename over the final name (rename is
atomic within one filesystem). A killed writer leaves at most a `NAME.tmp-XXXXXXXX` file (8 hex digits), which no reader
opens
and the next run removes: only names of this exact form, of files vtm writes there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

TMP_MARKER = ".tmp-"
TEMP_NAME = re.compile(r"^(?P<final>.+)\.tmp-[0-9a-f]{8}$")  # what atomic_path names its temporary files


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success it is renamed to `final`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}{TMP_MARKER}{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:
        if e.filename is None:  # a failed write() names no file; the message should say which one
            e.filename = str(final)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_json(final: Path, obj) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def remove_stale_temps(directory: Path, owns: Callable[[str], bool]) -> int:
    """Delete leftovers of killed writers directly in `directory` (not below): files named like
    `atomic_path`'s temporaries of a final name that `owns(final name)` says vtm writes there.
    Returns how many were removed."""
    removed = 0
    if directory.is_dir():
        for p in directory.iterdir():
            m = TEMP_NAME.match(p.name)
            if m and owns(m["final"]) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                removed += 1
    return removed
