"""Find the videos under a dataset directory and identify them stably across runs."""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from vtm.cache.storage import is_url, list_objects, read_ranges, stat_object

# .m4a: often mislabelled video; if it has no video stream it is reported as such
VIDEO_EXTENSIONS = (
    ".mp4",
    ".m4v",
    ".mkv",
    ".webm",
    ".avi",
    ".mov",
    ".mpg",
    ".mpeg",
    ".ts",
    ".mts",
    ".m2ts",
    ".wmv",
    ".flv",
    ".3gp",
    ".ogv",
    ".mxf",
    ".m4a",
)
DIGEST_CHUNK = 256 * 1024


@dataclass(frozen=True)
class VideoFile:
    path: Path | str  # absolute, or the object's URL in object storage
    relpath: str  # POSIX, relative to the dataset root
    size_bytes: int
    mtime_ns: int
    etag: str | None = None  # the stored object's version (object storage only)
    error: str | None = (
        None  # why this path cannot be read (unreadable folder, broken link): recorded as failed, never skipped
    )

    @property
    def video_id(self) -> str:
        return video_id_for(self.relpath)


def video_id_for(relpath: str) -> str:
    """Stable id: derived from the path inside the dataset, so it survives moving the dataset root."""
    return hashlib.sha1(relpath.encode("utf-8")).hexdigest()[:16]


def discover_videos(root: Path | str, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[VideoFile]:
    """Every file (or directory named like one, to be reported) with a video extension, sorted by path.

    Nothing under `root` is skipped silently: a folder that cannot be listed, a broken or looping link
    and a file gone while listing come back with their `error` set, to be recorded as failed. Links to
    folders are followed once; a link back to a folder already read is reported, not walked again.
    `root` may be an object-storage URL (s3://bucket/prefix): then every object under it (StorageError
    if it cannot be listed).
    """
    if is_url(root):
        return [
            VideoFile(o.url, o.relpath, o.size_bytes, o.mtime_ns, etag=o.etag) for o in list_objects(root, extensions)
        ]
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist or is not a directory")
    exts = {e.lower() for e in extensions}
    found = []

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    def unreadable_folder(err: OSError) -> None:
        p = Path(err.filename)
        found.append(
            VideoFile(
                p,
                rel(p),
                0,
                0,
                error=f"folder cannot be read ({err.strerror}): the videos in it were not looked at; "
                "fix its permissions and run again",
            )
        )

    seen_folders = {}  # (device, inode) -> relative path, to tell a link loop from a new folder
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable_folder, followlinks=True):
        here = Path(dirpath)
        st = here.stat()
        seen_folders.setdefault((st.st_dev, st.st_ino), rel(here))
        dirnames.sort()
        for d in sorted(
            dirnames, key=lambda d: (here / d).is_symlink()
        ):  # real folders first: they keep their own names
            p = here / d
            try:
                target = p.stat()
            except OSError:
                continue  # os.walk reports it through onerror
            already = seen_folders.setdefault((target.st_dev, target.st_ino), rel(p))
            if already != rel(p):
                dirnames.remove(d)
                loop = already == "." or rel(here).startswith(already + "/") or rel(here) == already
                why = "a link loop (it points to a folder above it)" if loop else "it is read under that name"
                found.append(VideoFile(p, rel(p), 0, 0, error=f"link to the folder {already}: not read twice, {why}"))
        for name in filenames + [d for d in dirnames if Path(d).suffix.lower() in exts]:
            if Path(name).suffix.lower() not in exts or name.startswith("."):
                continue
            p = here / name
            try:
                st = p.stat()
            except OSError as e:
                found.append(VideoFile(p, rel(p), 0, 0, error=_unreadable_reason(p, e)))
                continue
            found.append(VideoFile(p, rel(p), st.st_size if p.is_file() else 0, st.st_mtime_ns))
    return sorted(found, key=lambda v: v.relpath)


def _unreadable_reason(path: Path, err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "symbolic link loop: the link never reaches a file"
    if path.is_symlink():
        return f"broken link: its target {os.readlink(path)} does not exist"
    return f"cannot be read ({err.strerror}): gone or changed while the folder was being listed"


def content_digest(path: Path | str) -> str:
    """Digest of the size and three sampled chunks (start, middle, end).

    Reading whole files would cost as much I/O as decoding them; a re-encoded or replaced video
    changes its size or these bytes. Directories and unreadable files get a digest of their size.
    """
    h = hashlib.sha256()
    if is_url(path):  # the same three chunks, each one ranged request
        size = stat_object(path).size_bytes
        h.update(str(size).encode())
        for chunk in read_ranges(
            path, [(o, min(size, o + DIGEST_CHUNK)) for o in _chunk_offsets(size)] if size else []
        ):
            h.update(chunk)
        return h.hexdigest()[:24]
    try:
        size = path.stat().st_size if path.is_file() else 0
        h.update(str(size).encode())
        if size:
            with open(path, "rb") as f:
                for offset in _chunk_offsets(size):
                    f.seek(offset)
                    h.update(f.read(DIGEST_CHUNK))
    except OSError as e:
        h.update(f"unreadable:{e.errno}".encode())
    return h.hexdigest()[:24]


def _chunk_offsets(size: int) -> list[int]:
    return sorted({0, max(0, size // 2 - DIGEST_CHUNK // 2), max(0, size - DIGEST_CHUNK)})
