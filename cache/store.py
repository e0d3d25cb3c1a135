"""Reading and writing the feature cache (layout in `vtm.cache.schema`)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from vtm.cache import schema
from vtm.cache.atomic import TEMP_NAME, atomic_path, remove_stale_temps, write_json
from vtm.cache.lock import LOCK_FILE, DirectoryLock, LockError
from vtm.cache.storage import is_url


class CacheError(RuntimeError):
    """The cache cannot be used as asked; the message says what to do."""


VIDEO_FILE_STEM = re.compile(r"^[0-9a-f]{16}$")  # vtm.pipeline.discover.video_id_for


def read_cache_json(root: Path) -> dict | None:
    """The cache.json of `root` if vtm wrote it (it has vtm's format id, or is an older vtm's), else None."""
    try:
        d = json.loads((Path(root) / schema.CACHE_JSON).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict):
        return None
    if d.get("format") == schema.FORMAT_ID or (
        "format" not in d and "format_version" in d and isinstance(d.get("settings"), dict)
    ):
        return d
    return None


def _root_text(dataset_root: Path | str) -> str:
    text = str(dataset_root)
    return text if "://" in text else str(Path(text).resolve())


def _owned_names(root: Path) -> dict:
    """Folder -> which file names in it vtm writes (and so may delete), final names only."""
    top = {
        schema.CACHE_JSON,
        schema.MANIFEST_FILE,
        schema.EXTRACT_CONFIG,
        schema.ENCODER_SOURCE_JSON,
        schema.CHANGE_SCORE_JSON,
    }
    per_video = {schema.SCORES_DIR: ".parquet", schema.FEATURES_DIR: ".h5"}

    def video_file(suffix: str):
        return lambda name: name.endswith(suffix) and VIDEO_FILE_STEM.match(name[: -len(suffix)]) is not None

    owned = {root: top.__contains__}
    owned.update({root / sub: video_file(suffix) for sub, suffix in per_video.items()})
    return owned


@dataclass(frozen=True)
class CacheSettings:
    """What a cache was built with. Two runs may share a cache only if their fingerprints match."""

    encoder: str
    weights: str  # where the weights came from: a path, a package, or "random"
    weights_digest: str
    pretrained: bool
    feature_dim: int
    sample_fps: float
    image_size: int
    max_frames: int | None
    feature_dtype: str = "float16"
    score_version: int = 1  # bump when the change score's definition changes
    format_version: int = schema.FORMAT_VERSION

    # Settings that do not change what is stored, so they do not enter the fingerprint.
    _NOT_FINGERPRINTED = ("weights",)

    def fingerprint_fields(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if k not in self._NOT_FINGERPRINTED}

    @property
    def fingerprint(self) -> str:
        blob = json.dumps(self.fingerprint_fields(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def differences(self, other: CacheSettings) -> list[str]:
        mine, theirs = self.fingerprint_fields(), other.fingerprint_fields()
        return [f"{k}: cache has {theirs[k]!r}, this run has {mine[k]!r}" for k in mine if mine[k] != theirs[k]]

    @classmethod
    def from_json(cls, d: Mapping) -> CacheSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class FeatureCache:
    """One cache directory. Open an existing one with `FeatureCache.open(root)`."""

    def __init__(self, root: Path, settings: CacheSettings):
        self.root = Path(root)
        self.settings = settings

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path) -> FeatureCache:
        root = Path(root)
        d = read_cache_json(root)
        if d is None:
            if root.is_dir() and any(root.iterdir()):  # a folder of videos given where the cache was meant
                raise CacheError(
                    f"{root} is not a vtm feature cache (no {schema.CACHE_JSON} written by vtm); if it holds the "
                    f"videos, extract them first (`vtm extract {root} --cache CACHE_DIR`) and give CACHE_DIR here."
                )
            raise CacheError(
                f"{root} is not a vtm feature cache (no {schema.CACHE_JSON} written by vtm); run `vtm extract "
                f"DATASET --cache {root}` first."
            )
        if d.get("format_version") != schema.FORMAT_VERSION:
            raise CacheError(
                f"{root} has cache format {d.get('format_version')}, this vtm reads format {schema.FORMAT_VERSION}; "
                "re-run `vtm extract --rebuild` to rebuild it."
            )
        return cls(root, CacheSettings.from_json(d["settings"]))

    @classmethod
    def check_can_write(cls, root: Path) -> None:
        """Refuse a folder vtm did not create: an existing, non-empty folder that is not a vtm cache
        holds someone else's files, and vtm writes (and deletes) only in folders it owns."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise CacheError(f"--cache {root} is a file, not a folder; choose a new or empty folder for the cache.")
        if not root.exists() or read_cache_json(root) is not None:
            return
        if (root / schema.CACHE_JSON).exists():
            raise CacheError(
                f"{root / schema.CACHE_JSON} was not written by vtm (or is damaged); vtm will not write into "
                f"{root}. Choose a new or empty folder for --cache."
            )
        if any(
            not p.name.startswith(LOCK_FILE) for p in root.iterdir()
        ):  # a lock (or its temporary) left by a killed vtm is vtm's
            raise CacheError(
                f"{root} is not empty and is not a vtm feature cache (no {schema.CACHE_JSON}); vtm will not write "
                "into it, "
                "so none of its files is touched. Choose a new or empty folder for --cache."
            )

    @classmethod
    @contextlib.contextmanager
    def lock_for_writing(cls, root: Path, command: str) -> Iterator[None]:
        """Check that vtm may write `root` (see check_can_write), create it, and hold its writer lock."""
        root = Path(root)
        cls.check_can_write(root)
        created = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
        try:
            with DirectoryLock(root, command):
                yield
        except LockError as e:
            raise CacheError(str(e)) from None
        finally:
            if created:  # a run that failed before writing (a bad --weights file, say) leaves no empty folder behind
                with contextlib.suppress(OSError):
                    root.rmdir()

    @classmethod
    def create(
        cls, root: Path, settings: CacheSettings, *, rebuild: bool = False, dataset_root: Path | str | None = None
    ) -> FeatureCache:
        """Open `root` for writing with `settings`, creating it if needed (hold `lock_for_writing` around it).

        An existing cache built with other settings (mixing would make features incomparable) or from
        another dataset root (its paths would point nowhere) is refused unless `rebuild` is set, which
        first deletes the files vtm wrote there, and only those.
        """
        root = Path(root)
        cls.check_can_write(root)
        recorded_root = None
        if read_cache_json(root) is not None:
            if rebuild:
                cls.clear(root)
            else:
                existing = cls.open(root)
                diffs = settings.differences(existing.settings)
                if diffs:
                    raise CacheError(
                        f"the cache at {root} was built with other settings ({'; '.join(diffs)}). "
                        "Pass --rebuild to delete it and start over, or choose another --cache directory."
                    )
                recorded_root = read_cache_json(root).get("dataset_root")
                if recorded_root and dataset_root is not None and recorded_root != _root_text(dataset_root):
                    raise CacheError(
                        f"the cache at {root} belongs to the dataset at {recorded_root}, not "
                        f"{_root_text(dataset_root)}: one cache holds one dataset. "
                        "Choose another --cache folder for this dataset, or pass --rebuild to delete this cache and "
                        "start over."
                    )
        root.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": schema.FORMAT_ID,
            "format_version": schema.FORMAT_VERSION,
            "fingerprint": settings.fingerprint,
            "settings": dataclasses.asdict(settings),
            "dataset_root": _root_text(dataset_root) if dataset_root is not None else recorded_root,
        }
        # first, so the folder is marked as a vtm cache before anything else lands in it
        write_json(root / schema.CACHE_JSON, meta)
        for sub in (schema.SCORES_DIR, schema.FEATURES_DIR):
            (root / sub).mkdir(exist_ok=True)
        for folder, owns in _owned_names(root).items():
            remove_stale_temps(folder, owns)
        return cls(root, settings)

    @staticmethod
    def clear(root: Path) -> None:
        """Delete what vtm wrote in the cache at `root`, by exact name; any other file stays.
        cache.json goes last, so a clear cut short still leaves a folder marked as a cache."""
        root = Path(root)
        if read_cache_json(root) is None:
            raise CacheError(
                f"{root} is not a vtm feature cache; --rebuild deletes only a cache vtm wrote. Choose a new or "
                "empty folder for --cache."
            )
        for folder, owns in _owned_names(root).items():
            if folder == root or not folder.is_dir() or folder.is_symlink():
                continue
            for p in folder.iterdir():
                m = TEMP_NAME.match(p.name)
                if owns(m["final"] if m else p.name) and p.is_file() and not p.is_symlink():
                    p.unlink(missing_ok=True)
            try:
                folder.rmdir()
            except OSError:
                pass  # something that is not vtm's is in it: it stays
        remove_stale_temps(root, _owned_names(root)[root])
        for name in (
            schema.MANIFEST_FILE,
            schema.EXTRACT_CONFIG,
            schema.ENCODER_SOURCE_JSON,
            schema.CHANGE_SCORE_JSON,
            schema.CACHE_JSON,
        ):
            (root / name).unlink(missing_ok=True)

    @property
    def dataset_root(self) -> Path | str | None:
        """Where the videos were extracted from: a directory, or an object-storage URL (a str)."""
        root = (read_cache_json(self.root) or {}).get("dataset_root")
        return None if not root else root if is_url(root) else Path(root)

    # ---- manifest ------------------------------------------------------------------------------
    def manifest(self) -> pl.DataFrame:
        path = self.root / schema.MANIFEST_FILE
        if not path.is_file():
            return pl.from_arrow(schema.MANIFEST_SCHEMA.empty_table())
        df = pl.read_parquet(path)
        missing = [
            f for f in schema.MANIFEST_SCHEMA if f.name not in df.columns
        ]  # a manifest from before a column was added
        return df.with_columns(
            pl.lit(None, dtype=pl.from_arrow(pa.array([], f.type)).dtype).alias(f.name) for f in missing
        ).select(schema.MANIFEST_SCHEMA.names)

    def write_manifest(self, rows: Iterable[Mapping]) -> None:
        """Replace the manifest with `rows`, sorted by path so equal content gives equal files."""
        rows = sorted(rows, key=lambda r: r["path"])
        names = schema.MANIFEST_SCHEMA.names
        table = pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows], schema=schema.MANIFEST_SCHEMA)
        with atomic_path(self.root / schema.MANIFEST_FILE) as tmp:
            pq.write_table(table, tmp)

    # ---- per-video data ------------------------------------------------------------------------
    def scores_path(self, video_id: str) -> Path:
        return self.root / schema.SCORES_DIR / f"{video_id}.parquet"

    def features_path(self, video_id: str) -> Path:
        return self.root / schema.FEATURES_DIR / f"{video_id}.h5"

    def has_video(self, video_id: str) -> bool:
        return self.scores_path(video_id).is_file() and self.features_path(video_id).is_file()

    def write_video(
        self,
        video_id: str,
        features: np.ndarray,
        timestamps: np.ndarray,
        frame_index: np.ndarray,
        scores: Mapping[str, np.ndarray],
        color_hist: np.ndarray | None = None,
        color_grid: np.ndarray | None = None,
        frame_change: np.ndarray | None = None,
    ) -> None:
        """Write one video's features and score rows. Features first: a scores file implies features exist."""
        n = len(timestamps)
        if features.shape[0] != n or len(frame_index) != n:
            raise ValueError(f"video {video_id}: {features.shape[0]} feature rows for {n} timestamps")
        # HDF5 is built in memory and written as plain bytes: a write that fails (full disk, read-only
        # folder) is then one clean OSError here, never HDF5's C library failing mid-file.
        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as f:
            chunk = (max(1, min(n, schema.H5_CHUNK_FRAMES)), features.shape[1])
            f.create_dataset(schema.H5_FEATURES, data=features.astype(self.settings.feature_dtype), chunks=chunk)
            f.create_dataset(schema.H5_TIMESTAMPS, data=np.asarray(timestamps, np.float64))
            f.create_dataset(schema.H5_FRAME_INDEX, data=np.asarray(frame_index, np.int64))
            stats = (
                (schema.H5_COLOR_HIST, color_hist),
                (schema.H5_COLOR_GRID, color_grid),
                (schema.H5_FRAME_CHANGE, frame_change),
            )
            for name, stat in stats:
                if stat is not None:
                    f.create_dataset(name, data=np.asarray(stat, np.float16))
            f.attrs["video_id"] = video_id
            f.attrs["fingerprint"] = self.settings.fingerprint
        with atomic_path(self.features_path(video_id)) as tmp:
            tmp.write_bytes(buffer.getbuffer())
        columns = {
            "video_id": [video_id] * n,
            "sample_index": np.arange(n, dtype=np.int32),
            "frame_index": np.asarray(frame_index, np.int64),
            "timestamp_s": np.asarray(timestamps, np.float64),
        }
        for name in schema.SCORES_SCHEMA.names:
            if name not in columns:
                columns[name] = scores.get(name, pa.nulls(n))
        table = pa.Table.from_pydict(columns, schema=schema.SCORES_SCHEMA)
        with atomic_path(self.scores_path(video_id)) as tmp:
            pq.write_table(table, tmp)

    def read_features(
        self, video_id: str, start: int = 0, stop: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, timestamps and frame indices of samples [start, stop) of one video."""
        path = self.features_path(video_id)
        if not path.is_file():
            raise CacheError(f"no features for video {video_id} in {self.root}; is it `ok` in the manifest?")
        with h5py.File(path, "r") as f:
            sl = slice(start, stop)
            return f[schema.H5_FEATURES][sl], f[schema.H5_TIMESTAMPS][sl], f[schema.H5_FRAME_INDEX][sl]

    def read_color_stats(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The colour histogram and grid of every sampled frame (for re-computing change scores)."""
        with h5py.File(self.features_path(video_id), "r") as f:
            return f[schema.H5_COLOR_HIST][:], f[schema.H5_COLOR_GRID][:]

    def read_frame_change(self, video_id: str) -> np.ndarray | None:
        """The change between consecutive decoded frames in each sample's interval (`schema.H5_FRAME_CHANGE`); None
        for a video extracted before vtm kept it."""
        with h5py.File(self.features_path(video_id), "r") as f:
            return f[schema.H5_FRAME_CHANGE][:] if schema.H5_FRAME_CHANGE in f else None

    def read_scores(self, video_ids: Iterable[str] | None = None) -> pl.DataFrame:
        ids = (
            list(video_ids)
            if video_ids is not None
            else self.manifest().filter(pl.col("status") == schema.STATUS_OK)["video_id"].to_list()
        )
        paths = [self.scores_path(v) for v in ids if self.scores_path(v).is_file()]
        if not paths:
            return pl.from_arrow(schema.SCORES_SCHEMA.empty_table())
        # In the format's columns: a file written before a column was added gets it as null.
        columns = pl.from_arrow(schema.SCORES_SCHEMA.empty_table()).schema
        return pl.read_parquet(paths, schema=columns, missing_columns="insert")
