"""Atomic file writes: readers never see a half-written file.

Write to a temporary name in the same directory, fsync, then rename over the final name (rename is
atomic within one filesystem). A killed writer leaves at most a `*.tmp-*` file, which no reader
opens and the next run removes.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Iterator

TMP_MARKER = ".tmp-"


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
    finally:
        tmp.unlink(missing_ok=True)


def write_json(final: Path, obj) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def remove_stale_temps(directory: Path) -> int:
    """Delete leftovers of killed writers; returns how many were removed."""
    removed = 0
    if directory.is_dir():
        for p in directory.rglob(f"*{TMP_MARKER}*"):
            p.unlink(missing_ok=True)
            removed += 1
    return removed
