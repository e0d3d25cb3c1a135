"""The feature-cache format, written down once. Every writer and reader in vtm uses these names.

    CACHE/
      cache.json              what built the cache (CacheSettings + format version)
      manifest.parquet        one row per input video (MANIFEST_SCHEMA)
      scores/<video_id>.parquet   one row per sampled frame (SCORES_SCHEMA)
      features/<video_id>.h5      per-frame features of one video (HDF5 layout below)
      encoder_source.json     which weights file (or seed) gave cache.json's weights digest, so that a
                              re-run with nothing to do knows it without loading the model

One file per video under scores/ and features/ keeps every write atomic (temp name, then rename),
lets a killed run resume video by video, and lets a reader open one video's window without touching
the rest. `polars.read_parquet(CACHE / "scores" / "*.parquet")` reads the whole archive's scores.
"""

from __future__ import annotations

import pyarrow as pa

FORMAT_VERSION = 1
FORMAT_ID = "vtm-feature-cache"  # in cache.json: marks a folder vtm created, so it knows what it may delete

CACHE_JSON = "cache.json"
MANIFEST_FILE = "manifest.parquet"
SCORES_DIR = "scores"
FEATURES_DIR = "features"
EXTRACT_CONFIG = "extract_config.yaml"  # the resolved configuration of the last extract
ENCODER_SOURCE_JSON = (
    "encoder_source.json"  # {"source": models.encoder_weights.weights_source(...), "encoder_info": {...}}
)
CHANGE_SCORE_JSON = "change_score.json"  # the change score's version and settings that made the stored scores

STATUS_OK = "ok"
STATUS_FAILED = "failed"

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),  # stable: derived from the relative path
        pa.field("path", pa.string(), nullable=False),  # POSIX path relative to the dataset root
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("mtime_ns", pa.int64(), nullable=False),
        pa.field("digest", pa.string(), nullable=False),  # sampled content digest (see pipeline.discover)
        pa.field("duration_s", pa.float64()),
        pa.field("native_fps", pa.float64()),
        pa.field("width", pa.int32()),  # as displayed, after rotation
        pa.field("height", pa.int32()),
        pa.field("rotation", pa.int32()),  # degrees applied to decoded frames
        pa.field("frames_sampled", pa.int32()),
        pa.field("decoder", pa.string()),  # "decord" or "pyav" (fallback)
        pa.field("status", pa.string(), nullable=False),  # STATUS_OK / STATUS_FAILED
        pa.field("error", pa.string()),  # why it failed, for a person to read
        pa.field(
            "warning", pa.string()
        ),  # an ok video that lost something (e.g. time ranges that would not decode), in words
        pa.field("fingerprint", pa.string(), nullable=False),  # CacheSettings.fingerprint at write time
        # Videos in object storage (null for local files): where every reader opens them, credentials never
        # included, and the store's version of the object (ETag, @version id where the bucket keeps versions).
        pa.field("url", pa.string()),
        pa.field("etag", pa.string()),
    ]
)

SCORES_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("sample_index", pa.int32(), nullable=False),  # 0..frames_sampled-1
        pa.field("frame_index", pa.int64(), nullable=False),  # index in the source video's frames
        pa.field("timestamp_s", pa.float64(), nullable=False),  # presentation time of that frame
        pa.field("change_score", pa.float32(), nullable=False),  # training-free trigger score, ~0..1
        pa.field("feature_change", pa.float32(), nullable=False),  # components of change_score
        pa.field("color_change", pa.float32(), nullable=False),
        pa.field("local_change", pa.float32(), nullable=False),
        # NaN where the decoder did not measure the frames between samples; null in files from before score version 4
        pa.field("cut_change", pa.float32()),
        pa.field("trigger_score", pa.float32()),  # learned trigger score; null without a checkpoint
        pa.field("label", pa.string()),  # annotation label where one exists
    ]
)

# HDF5 layout of features/<video_id>.h5 (float16 features, chunked along time so a window of
# frames reads without loading the whole video):
H5_FEATURES = "features"  # (n_frames, feature_dim) float16
H5_TIMESTAMPS = "timestamps"  # (n_frames,) float64 seconds
H5_FRAME_INDEX = "frame_index"  # (n_frames,) int64
# Cheap pixel statistics kept beside the features so the change score can be recomputed with new
# settings without decoding again (see vtm.stages.change_score); the trigger model can take them as
# inputs too (vtm.cache.windows.frame_inputs). Their sizes are part of the format: the decoder that
# computes them and every reader take them from here.
HIST_BINS = 4  # levels per colour channel (a power of two)
COLOR_HIST_DIM = HIST_BINS**3  # joint RGB bins
GRID = 16  # cells per side of the colour grid
H5_COLOR_HIST = "color_hist"  # (n_frames, COLOR_HIST_DIM) float16: joint RGB histogram, each frame's sums to 1
H5_COLOR_GRID = "color_grid"  # (n_frames, GRID, GRID, 3) float16: mean colour (0..255) of each grid cell
# (n_frames, 2) float16: the largest and the median change between consecutive decoded frames shown in each
# sample's interval (mean absolute luma difference on a GRID x GRID grid, fraction of 255; see
# vtm.stages.decode.FrameChanges). NaN where the decoder did not see them; absent in caches made before it.
H5_FRAME_CHANGE = "frame_change"
H5_CHUNK_FRAMES = 256
