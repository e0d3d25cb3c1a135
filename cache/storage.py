"""Where videos are read from: a local path, or an object-storage URL (s3://, gs://, az://, any fsspec URL).

Every reader of a video (discovery, the decode workers, describe, infer, export) goes through here, so a
Ray worker on any machine opens the store directly with its own credentials; nothing funnels through
the driver. Objects are streamed (PyAV reads file-like objects): no scratch copy is ever written.

Credentials and endpoints come only from each store's standard places — for S3 the AWS_* environment
variables (AWS_ENDPOINT_URL for an S3-compatible server), ~/.aws profiles and instance roles; for any
store fsspec's config (FSSPEC_<PROTOCOL>_<OPTION> variables, ~/.config/fsspec). vtm takes none as an
argument and refuses URLs that carry them, so they never reach the cache, the outputs or the logs.
"""

from __future__ import annotations

import errno
import io
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

READ_BLOCK = 8 * 1024 * 1024  # bytes fetched per request while streaming: few round trips, bounded memory
RETRIES = 3  # tries of one request before the video fails (the SDK retries inside each too)
RETRY_WAIT_S = 0.5  # doubled after each try
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_TRANSIENT_ERRNOS = {
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ECONNREFUSED,
    errno.ETIMEDOUT,
    errno.EPIPE,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
}
_TRANSIENT_NAMES = (
    "Timeout",
    "Connection",
    "ClientPayload",
    "IncompleteRead",
    "ServiceUnavailable",
    "SlowDown",
    "Throttl",
    "InternalError",
)


class StorageError(RuntimeError):
    """Object storage cannot be read as asked; the message says what failed and what to do."""


@dataclass(frozen=True)
class StoredObject:
    url: str  # protocol://bucket/key, as given to `open_video`
    relpath: str  # POSIX, relative to the listed prefix
    size_bytes: int
    mtime_ns: int  # the store's last-modified time (0 where it has none)
    etag: str | None  # the store's version of the content: ETag, plus the version id where the bucket keeps versions


def is_url(location) -> bool:
    """True for object-storage URLs; local paths (and file:// URLs) are not."""
    return isinstance(location, str) and bool(_URL.match(location)) and not location.startswith("file://")


def check_url(url: str) -> str:
    """`url` without a trailing slash; refuses URLs that carry credentials (they would end up in the cache)."""
    parts = urlsplit(url)
    if "@" in parts.netloc or parts.query:
        raise StorageError(
            f"{redact(url)}: URLs with credentials (user:key@ or ?token=...) are not accepted, because vtm records "
            "the URL in the cache. "
            "Put the credentials where the store's SDK finds them (environment variables, a profile, an instance "
            "role) and pass the plain URL."
        )
    return url.rstrip("/")


def redact(url: str) -> str:
    """The URL without user info or query string, fit for a message or log."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{netloc}{parts.path}" + ("?..." if parts.query else "")


def _filesystem(url: str):
    """The store's filesystem and the path in it, with no listing remembered from earlier calls: a long-lived
    process (a test session, the web page) must see objects changed since, not stale sizes or ETags."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
        fs.invalidate_cache(path)
        return fs, path
    except (ImportError, ValueError) as e:  # an unknown protocol, or its package (s3fs, gcsfs, adlfs) not installed
        raise StorageError(f"cannot open {redact(url)}: {e}") from e


def _etag(info: dict) -> str | None:
    tag = info.get("ETag") or info.get("etag") or info.get("generation") or info.get("md5Hash")
    version = info.get("VersionId") or info.get("version_id")
    if tag is None and version is None:
        return None
    return f"{tag}" + (f"@{version}" if version else "")


def _mtime_ns(info: dict) -> int:
    when = info.get("LastModified") or info.get("last_modified") or info.get("updated") or info.get("mtime")
    if when is None:
        return 0
    if hasattr(when, "timestamp"):
        return int(when.timestamp() * 1e9)
    try:
        return int(float(when) * 1e9)
    except (TypeError, ValueError):
        return 0


def list_objects(url: str, extensions: tuple[str, ...]) -> list[StoredObject]:
    """Every object under the prefix `url` whose name ends in one of `extensions`, sorted by relative path.

    A prefix that cannot be listed (no such bucket, access denied, nothing there) fails the run: raises StorageError.
    """
    url = check_url(url)
    fs, root = _filesystem(url)
    root = root.rstrip("/")
    try:
        found = _retrying(lambda: fs.find(root, detail=True, withdirs=False), url)
    except OSError as e:
        raise StorageError(f"cannot list {redact(url)}: {explain(e)}") from e
    if not found:
        raise StorageError(
            f"nothing found under {redact(url)}: check the bucket and prefix (and that these credentials may list it)"
        )
    exts = {e.lower() for e in extensions}
    objects = []
    for path, info in found.items():
        rel = path[len(root) :].lstrip("/") if path.startswith(root) else path
        name = rel.rsplit("/", 1)[-1]
        if not rel or name.startswith(".") or Path(name).suffix.lower() not in exts:
            continue
        objects.append(
            StoredObject(fs.unstrip_protocol(path), rel, int(info.get("size") or 0), _mtime_ns(info), _etag(info))
        )
    return sorted(objects, key=lambda o: o.relpath)


def stat_object(url: str) -> StoredObject:
    """Size, time and version of one object. Raises StorageError saying why it cannot be read."""
    fs, path = _filesystem(url)
    try:
        info = _retrying(lambda: fs.info(path), url)
    except OSError as e:
        raise StorageError(f"{redact(url)}: {explain(e)}") from e
    return StoredObject(url, path.rsplit("/", 1)[-1], int(info.get("size") or 0), _mtime_ns(info), _etag(info))


def read_ranges(url: str, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes [start, end) of each range of one object, one request each (for sampled digests)."""
    fs, path = _filesystem(url)
    try:
        return [_retrying(lambda s=s, e=e: fs.cat_file(path, start=s, end=e), url) for s, e in ranges]
    except OSError as e:
        raise StorageError(f"{redact(url)}: {explain(e)}") from e


def open_video(url: str) -> io.RawIOBase:
    """A seekable binary file streaming the object, retrying dropped connections. Raises StorageError."""
    return _RetryingReader(url)


def explain(e: BaseException) -> str:
    """What a storage error means and what to do about it."""
    text = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    if isinstance(e, PermissionError):
        return (
            f"access denied ({text}): check that the credentials in the environment or profile "
            "(AWS_PROFILE, AWS_ACCESS_KEY_ID, ...) may read it, and the bucket policy"
        )
    if isinstance(e, FileNotFoundError):
        if "bucket" in text.lower():
            return (
                f"the bucket does not exist ({text}): check the URL, the region and the endpoint (AWS_ENDPOINT_URL for "
                "an S3-compatible server)"
            )
        return (
            f"object not found ({text}): deleted or renamed since it was listed? Re-run `vtm extract` to list the "
            "prefix again"
        )
    if _transient(e):
        return (
            f"the connection to the store failed after {RETRIES} tries ({type(e).__name__}: {text}): check the network "
            "and the endpoint, then re-run (finished videos are kept)"
        )
    return f"{type(e).__name__}: {text}"


def _transient(e: BaseException) -> bool:
    if isinstance(e, (FileNotFoundError, PermissionError)):
        return False
    if isinstance(e, (ConnectionError, TimeoutError)) or getattr(e, "errno", None) in _TRANSIENT_ERRNOS:
        return True
    names = [type(x).__name__ for x in (e, e.__cause__, e.__context__) if x is not None] + [str(e)[:200]]
    return any(t in n for n in names for t in _TRANSIENT_NAMES)


def _retrying(call, url: str, tries: int = RETRIES):
    """`call()`, tried again after transient errors (a dropped connection, a timeout, a throttled request)."""
    wait = RETRY_WAIT_S
    for attempt in range(1, tries + 1):
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - anything not transient is raised at once
            if attempt == tries or not _transient(e):
                if not isinstance(
                    e, OSError
                ):  # SDK errors (botocore's connection errors) become OSErrors with their text
                    raise OSError(f"{type(e).__name__}: {e}") from e
                raise
            log.warning(
                "reading %s: %s; retrying in %.1f s (try %d of %d)",
                redact(url),
                type(e).__name__,
                wait,
                attempt + 1,
                tries,
            )
            time.sleep(wait)
            wait *= 2


class _RetryingReader(io.RawIOBase):
    """A read-only file over an object: reopened at the same offset when a read fails transiently."""

    def __init__(self, url: str):
        self.url = url
        self._fs, self._path = _filesystem(url)
        self._pos = 0
        self._file = None
        try:
            self._file = _retrying(self._open, url)
            self._size = self._file.size  # known from opening: no second request
        except OSError as e:
            raise StorageError(f"{redact(url)}: {explain(e)}") from e

    def _open(self):
        f = self._fs.open(self._path, "rb", block_size=READ_BLOCK, cache_type="readahead")
        f.seek(self._pos)
        return f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        self._file.seek(self._pos)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        def once():
            try:
                return self._file.read(size)
            except Exception:
                self._file = self._open()  # a fresh connection from the same offset for the next try
                raise

        try:
            data = _retrying(once, self.url)
        except OSError as e:
            raise StorageError(f"{redact(self.url)}: {explain(e)}") from e
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()
