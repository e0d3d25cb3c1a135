"""Reading and writing the feature cache (layout in `vtm.cache.schema`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import h5py
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from vtm.cache import schema
from vtm.cache.atomic import atomic_path, remove_stale_temps, write_json
from vtm.cache.storage import is_url


class CacheError(RuntimeError):
    """The cache cannot be used as asked; the message says what to do."""


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

    def differences(self, other: "CacheSettings") -> list[str]:
        mine, theirs = self.fingerprint_fields(), other.fingerprint_fields()
        return [f"{k}: cache has {theirs[k]!r}, this run has {mine[k]!r}" for k in mine if mine[k] != theirs[k]]

    @classmethod
    def from_json(cls, d: Mapping) -> "CacheSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class FeatureCache:
    """One cache directory. Open an existing one with `FeatureCache.open(root)`."""

    def __init__(self, root: Path, settings: CacheSettings):
        self.root = Path(root)
        self.settings = settings

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path) -> "FeatureCache":
        root = Path(root)
        meta = root / schema.CACHE_JSON
        if not meta.is_file():
            raise CacheError(f"{root} is not a vtm feature cache (no {schema.CACHE_JSON}); run `vtm extract DATASET --cache {root}` first.")
        d = json.loads(meta.read_text())
        if d.get("format_version") != schema.FORMAT_VERSION:
            raise CacheError(
                f"{root} has cache format {d.get('format_version')}, this vtm reads format {schema.FORMAT_VERSION}; "
                "re-run `vtm extract --rebuild` to rebuild it."
            )
        return cls(root, CacheSettings.from_json(d["settings"]))

    @classmethod
    def create(cls, root: Path, settings: CacheSettings, *, rebuild: bool = False, dataset_root: Path | None = None) -> "FeatureCache":
        """Open `root` for writing with `settings`, creating it if needed.

        An existing cache built with other settings is refused (mixing would make features
        incomparable) unless `rebuild` is set, which deletes it first.
        """
        root = Path(root)
        if (root / schema.CACHE_JSON).is_file():
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
        elif rebuild and root.exists():
            cls.clear(root)
        root.mkdir(parents=True, exist_ok=True)
        for sub in (schema.SCORES_DIR, schema.FEATURES_DIR):
            (root / sub).mkdir(exist_ok=True)
        remove_stale_temps(root)
        meta = {
            "format_version": schema.FORMAT_VERSION,
            "fingerprint": settings.fingerprint,
            "settings": dataclasses.asdict(settings),
            "dataset_root": str(dataset_root) if dataset_root else None,
        }
        write_json(root / schema.CACHE_JSON, meta)
        return cls(root, settings)

    @staticmethod
    def clear(root: Path) -> None:
        for name in (schema.CACHE_JSON, schema.MANIFEST_FILE):
            (root / name).unlink(missing_ok=True)
        for sub in (schema.SCORES_DIR, schema.FEATURES_DIR):
            shutil.rmtree(root / sub, ignore_errors=True)

    @property
    def dataset_root(self) -> Path | str | None:
        """Where the videos were extracted from: a directory, or an object-storage URL (a str)."""
        d = json.loads((self.root / schema.CACHE_JSON).read_text())
        root = d.get("dataset_root")
        return None if not root else root if is_url(root) else Path(root)

    # ---- manifest ------------------------------------------------------------------------------
    def manifest(self) -> pl.DataFrame:
        path = self.root / schema.MANIFEST_FILE
        if not path.is_file():
            return pl.from_arrow(schema.MANIFEST_SCHEMA.empty_table())
        return pl.read_parquet(path)

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
    ) -> None:
        """Write one video's features and score rows. Features first: a scores file implies features exist."""
        n = len(timestamps)
        if features.shape[0] != n or len(frame_index) != n:
            raise ValueError(f"video {video_id}: {features.shape[0]} feature rows for {n} timestamps")
        with atomic_path(self.features_path(video_id)) as tmp:
            with h5py.File(tmp, "w") as f:
                chunk = (max(1, min(n, schema.H5_CHUNK_FRAMES)), features.shape[1])
                f.create_dataset(schema.H5_FEATURES, data=features.astype(self.settings.feature_dtype), chunks=chunk)
                f.create_dataset(schema.H5_TIMESTAMPS, data=np.asarray(timestamps, np.float64))
                f.create_dataset(schema.H5_FRAME_INDEX, data=np.asarray(frame_index, np.int64))
                for name, stat in ((schema.H5_COLOR_HIST, color_hist), (schema.H5_COLOR_GRID, color_grid)):
                    if stat is not None:
                        f.create_dataset(name, data=np.asarray(stat, np.float16))
                f.attrs["video_id"] = video_id
                f.attrs["fingerprint"] = self.settings.fingerprint
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

    def read_features(self, video_id: str, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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

    def read_scores(self, video_ids: Iterable[str] | None = None) -> pl.DataFrame:
        ids = list(video_ids) if video_ids is not None else self.manifest().filter(pl.col("status") == schema.STATUS_OK)["video_id"].to_list()
        paths = [self.scores_path(v) for v in ids if self.scores_path(v).is_file()]
        if not paths:
            return pl.from_arrow(schema.SCORES_SCHEMA.empty_table())
        return pl.read_parquet(paths)
