"""Resource errors (full disk, read-only folder, missing permission) in one line a person can act on."""

from __future__ import annotations

import errno

from vtm.cache.atomic import TEMP_NAME

_ADVICE = {
    errno.ENOSPC: ("no space left on the device", "free some space there or choose a folder on another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space there or choose a folder on another disk"),
    errno.EFBIG: (
        "file too large for this file system or process limit",
        "raise the limit (ulimit -f) or choose a folder on another disk",
    ),
    errno.EROFS: ("the file system is read-only", "make it writable, or choose a writable folder"),
    errno.EACCES: ("permission denied", "fix the folder's permissions, or choose a folder you may write"),
    errno.EPERM: ("operation not permitted", "fix the folder's permissions, or choose a folder you may write"),
}
_PHRASES = {
    "no space left": errno.ENOSPC,
    "quota exceeded": errno.EDQUOT,
    "read-only file system": errno.EROFS,
    "permission denied": errno.EACCES,
}


def explain_os_error(err: OSError) -> str:
    """`err` as 'what happened, where, what to do'. Files written atomically stay as they were, so a re-run resumes."""
    code = err.errno
    if code not in _ADVICE:  # pyarrow and h5py raise OSError without errno; their text says which it was
        text = str(err).lower()
        code = next((c for phrase, c in _PHRASES.items() if phrase in text), code)
    where = err.filename
    if where is not None:
        where = str(where)
        name = where.rsplit("/", 1)
        m = TEMP_NAME.match(name[-1])
        if m:  # name the file being written, not its temporary name
            where = "/".join(name[:-1] + [m["final"]])
    if code in _ADVICE:
        what, todo = _ADVICE[code]
    else:
        what, todo = (err.strerror or str(err) or type(err).__name__), "check the path and the disk"
    at = f" at {where}" if where else ""
    return (
        f"{what}{at}: {todo}. Nothing finished before is lost; run the same command again once that is fixed (it "
        "resumes)."
    )
