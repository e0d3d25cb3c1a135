"""`vtm train-from-cache`: train the trigger model (and the LLaVA adapter) from cached features.

A recipe with visible steps: setup -> train (epochs of windows, validation each epoch) -> save ->
cleanup. It reads windows of cached frames (sliced from the training videos' inputs, read once into
memory where they fit, else HDF5 slices) and never decodes video. Every random choice is seeded
per epoch and every checkpoint holds the optimizer, scheduler and RNG states, so `--resume`
continues exactly where the checkpoint left off.

The default recipe is made for a handful of annotated videos: as many windows without the event as
with it (half of them on the change score's false alarms: cuts, other objects), augmented on the
cached features (time scaling, crops, feature dropout, windows spliced across videos); each epoch is
validated on held-out videos with the decision threshold calibrated there, and the best epoch by
validation event F1 becomes `final/` (with its threshold), stopping after `patience` epochs without
improvement.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from vtm.cache.atomic import atomic_path
from vtm.cache.output_dir import owned_output_dir
from vtm.cache.store import FeatureCache
from vtm.cache.windows import WindowReader, input_parts
from vtm.models.configs import TriggerModelConfig
from vtm.models.trigger_model import TriggerModel
from vtm.pipeline import checkpoint as ckpt
from vtm.pipeline.annotations import Annotations, load_annotations
from vtm.pipeline.config import Config, ConfigError, TrainConfig, dump_config, resolve_device
from vtm.pipeline.learned_metrics import calibrate_threshold, evaluate_model, metrics_at, score_videos
from vtm.stages.select_windows import SelectWindowsStage

__all__ = ["TrainRecipe", "TrainResult", "build_trigger_model_config", "evaluate_model", "run_train"]

log = logging.getLogger(__name__)

MAX_INPUTS_IN_MEMORY = 2 << 30  # bytes of training videos' inputs held in memory; more: windows read from HDF5


@dataclass
class TrainResult:
    out_dir: Path
    final: Path
    epochs: int
    metrics: dict = field(default_factory=dict)
    data_wait_share: float = 0.0  # share of step time spent waiting for the next batch
    samples_per_s: float = 0.0
    best_epoch: int = 0  # the epoch final/ holds


def build_trigger_model_config(
    config: Config, feature_dim: int, labels: tuple[str, ...], min_event_frames: int = 1
) -> TriggerModelConfig:
    """The configured model (`config.model`) with what the data sets: input sizes from the cache, classes from
    the annotations."""
    m = config.model
    parts = input_parts(m, feature_dim)
    groups = parts[:-1] + (m.grid.output_dim,) if m.grid else parts  # the grid encoder turns its colours into these
    return dataclasses.replace(
        m,
        encoder=dataclasses.replace(m.encoder, input_dim=sum(groups), input_groups=groups),
        detector=dataclasses.replace(m.detector, num_classes=len(labels)),
        labels=labels,
        min_event_frames=min_event_frames,
    )


def with_threshold(config: TriggerModelConfig, threshold: float) -> TriggerModelConfig:
    return dataclasses.replace(config, detector=dataclasses.replace(config.detector, threshold=threshold))


def split_by_video(video_ids: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic split by a hash of the video id: frames of one video never straddle the split."""
    ranked = sorted(video_ids, key=lambda v: hashlib.sha1(v.encode()).hexdigest())
    n_val = math.ceil(val_fraction * len(ranked)) if len(ranked) > 1 and val_fraction > 0 else 0
    return sorted(ranked[n_val:]), sorted(ranked[:n_val])


Item = tuple[str, int, str, int]  # (video_id, start frame, description, seed of its augmentation)


class WindowDataset(Dataset):
    """Items -> windows of model inputs, augmented when `augment` is given (seeded per item, so an epoch's
    batches are the same in every run, in any DataLoader worker).

    A batch is made in two steps (`__getitems__`, which the DataLoader calls with a batch's indices): each
    window's random draws choose which cached rows it shows and which columns it hides, then the batch is
    gathered and its columns hidden in a few whole-batch array operations instead of many per window."""

    def __init__(
        self,
        reader: WindowReader,
        labels: dict[str, np.ndarray],
        items: list[Item],
        augment: TrainConfig | None = None,
        sample_fps: float = 1.0,
    ):
        self.reader, self.labels, self.items, self.augment, self.sample_fps = reader, labels, items, augment, sample_fps
        self.parts = np.cumsum((0,) + reader.spec.input_parts)  # column ranges of the input parts
        self.width = int(self.parts[-1])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        self.items[i]  # IndexError past the end, which ends iteration over the dataset
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, indices: list[int]) -> dict:
        n, length = len(indices), self.reader.length
        batch = {
            "features": np.empty((n, length, self.width), np.float32),
            "timestamps": np.empty((n, length), np.float32),
            "mask": np.empty((n, length), bool),
            "labels": np.empty((n, length), np.int64),
            "description": [],
        }
        kept = np.ones((n, self.width), bool)  # columns kept by feature dropout
        hidden = np.zeros((n, self.width), bool)  # columns of the input parts hidden by group dropout
        for b, i in enumerate(indices):
            video_id, start, description, seed = self.items[i]
            batch["description"].append(description)
            if self.augment is None:
                feats, times, mask, lab = self._window(video_id, start, length)
                batch["features"][b] = feats
            else:
                rng = np.random.default_rng(seed)
                times, mask, lab = self._augmented(batch["features"][b], kept[b], hidden[b], video_id, start, rng)
            batch["timestamps"][b], batch["mask"][b], batch["labels"][b] = times, mask, lab
        feats, mask = batch["features"], batch["mask"]
        if self.augment is not None:
            feats *= kept[:, None, :]
        np.copyto(feats, 0.0, where=hidden[:, None, :] | ~mask[:, :, None])
        batch["labels"][~mask] = 0
        return batch

    def _window(self, video_id: str, start: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        feats, times, mask = self.reader.read(video_id, start, length)
        lab = np.zeros(length, np.int64)
        part = self.labels[video_id][start : start + length]
        lab[: len(part)] = part
        return feats, times, mask, lab

    def _augmented(
        self, out: np.ndarray, kept: np.ndarray, hidden: np.ndarray, video_id: str, start: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fill `out` (length, width) with one augmented window's rows and mark the columns it drops in `kept` and
        `hidden`; return its timestamps, mask and labels. The batch zeroes the dropped columns and masked rows."""
        a, length = self.augment, self.reader.length
        rate = math.exp(rng.uniform(-1, 1) * math.log(a.time_scale)) if rng.random() < 0.5 else 1.0
        span = max(1, math.ceil(length * rate))
        feats, times, mask, lab = self._window(video_id, start, span)
        rows = np.arange(length)  # the rows of `feats` the window shows, in order
        if rate != 1.0:  # every rate-th frame, shown at the sampling rate: the event plays faster or slower
            rows = np.minimum(np.round(rows * rate).astype(int), span - 1)
            times = times[0] + np.arange(length) / self.sample_fps
        mask, lab = mask[rows], lab[rows]
        cut = length  # rows from here on come from another window: a cut to elsewhere
        if rng.random() < a.mix_prob and len(self.items) > 1:
            other = self.items[int(rng.integers(len(self.items)))]
            other_feats, _, other_mask, other_lab = self._window(other[0], other[1], length)
            cut = int(rng.integers(length // 4, max(length // 4 + 1, 3 * length // 4)))
            mask[cut:], lab[cut:] = other_mask[cut:], other_lab[cut:]
        shift = 0
        if rng.random() < a.crop_prob:  # a window that ends early, as at a video's end; the late start shifts left
            keep = int(rng.integers(length // 2, length))
            shift = int(rng.integers(0, length - keep + 1))
            mask, lab = np.roll(mask, -shift), np.roll(lab, -shift)
            mask[keep:] = False
        shown = (np.arange(length) + shift) % length  # window row j shows row shown[j] of the unshifted window
        mixed = shown >= cut
        if mixed.any():
            out[~mixed] = feats[rows[shown[~mixed]]]
            out[mixed] = other_feats[shown[mixed]]
        else:
            np.take(feats, rows[shown], axis=0, out=out)
        parts = self.parts
        if len(parts) > 2 and a.group_dropout > 0:  # hide whole parts, so that none can carry the model alone
            hide = rng.random(len(parts) - 1) < a.group_dropout
            hide[int(rng.integers(len(hide)))] = False
            for k in np.flatnonzero(hide):
                hidden[parts[k] : parts[k + 1]] = True
        if a.feature_dropout > 0:
            n_cols = parts[-2] if self.reader.spec.grid_size else parts[-1]  # the grid's colours are not dropped
            kept[:n_cols] = rng.random(n_cols) >= a.feature_dropout
        return times, mask, lab


class EpochWindows:
    """The windows each epoch trains on: jittered windows around every event, as many without the event
    (around change-score false alarms and at random), shuffled; the same for a given epoch, in any process.

    It holds only the small state the windows depend on, so each DataLoader worker derives an epoch's list
    itself and one set of worker processes serves the whole run."""

    def __init__(
        self,
        train_ids: list[str],
        frame_labels: dict[str, np.ndarray],
        timestamps: dict[str, np.ndarray],
        descriptions: dict[str, list[tuple[float, float, str]]],
        hard_negatives: dict[str, np.ndarray],
        config: TrainConfig,
        window: int,
        rank: int = 0,
        world: int = 1,
    ):
        self.train_ids, self.config, self.window, self.rank, self.world = train_ids, config, window, rank, world
        self.frame_labels = {v: frame_labels[v] for v in train_ids}
        self.timestamps = {v: timestamps[v] for v in train_ids}
        self.descriptions = {v: descriptions[v] for v in train_ids}  # (start s, end s, text) of each described event
        self.hard_negatives = {v: hard_negatives[v] for v in train_ids}
        self._epoch, self._items = None, []  # the last epoch asked for: asked once per window in a worker

    def __call__(self, epoch: int) -> list[Item]:
        if epoch != self._epoch:
            self._epoch, self._items = epoch, self._draw(epoch)
        return self._items

    def _draw(self, epoch: int) -> list[Item]:
        tc = self.config
        rng = np.random.default_rng([tc.seed, epoch])
        w = self.window

        def around(v: str, frame: int) -> int:
            start = frame - int(rng.integers(w // 4, max(w // 4 + 1, 3 * w // 4)))
            return int(np.clip(start, 0, max(0, len(self.frame_labels[v]) - w)))

        runs = [(v, a, b) for v in self.train_ids for a, b in _event_runs(self.frame_labels[v])]
        # A handful of videos holds few events: draw more windows per event so that an epoch has enough steps.
        per_event = max(
            tc.windows_per_event,
            math.ceil(tc.min_windows_per_epoch / (1 + tc.negatives_per_positive) / max(1, len(runs))),
        )
        items: list[tuple[str, int, str]] = []
        for v, a, b in runs:
            centre = (a + b) // 2
            t_mid = float(self.timestamps[v][centre])
            desc = next(
                (text for start, end, text in self.descriptions[v] if start - 0.5 <= t_mid <= end + 0.5 and text),
                "",
            )
            items += [(v, around(v, int(rng.integers(a, b))), desc) for _ in range(per_event)]
        n_neg = max(1, round(tc.negatives_per_positive * max(1, len(items))))
        hard = [(v, int(f)) for v in self.train_ids for f in self.hard_negatives[v]]
        n_hard = min(round(tc.hard_negative_share * n_neg), len(hard) * per_event) if hard else 0
        for k in rng.integers(0, max(1, len(hard)), size=n_hard):
            items.append((hard[k][0], around(hard[k][0], hard[k][1]), ""))
        lengths = np.array([len(self.frame_labels[v]) for v in self.train_ids])
        for i in rng.choice(len(self.train_ids), size=n_neg - n_hard, p=lengths / lengths.sum()):
            items.append((self.train_ids[i], int(rng.integers(0, max(1, lengths[i] - w + 1))), ""))
        seeds = rng.integers(0, 2**31, size=len(items))
        order = rng.permutation(len(items))
        return [(*items[i], int(seeds[i])) for i in order][self.rank :: self.world]


class EpochSampler(Sampler):
    """(epoch, i) for each window i of the epoch set by `set_epoch`: one DataLoader for the whole run."""

    def __init__(self, windows: EpochWindows):
        self.windows, self.epoch = windows, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.windows(self.epoch))

    def __iter__(self):
        epoch = self.epoch
        return ((epoch, i) for i in range(len(self.windows(epoch))))


class EpochWindowDataset(Dataset):
    """(epoch, i) -> window i of that epoch's windows, as `WindowDataset` makes it."""

    def __init__(
        self, windows: EpochWindows, reader: WindowReader, labels: dict[str, np.ndarray], augment, sample_fps: float
    ):
        self.windows = windows
        self.reader, self.labels, self.augment, self.sample_fps = reader, labels, augment, sample_fps
        self._epoch, self._dataset = None, None  # the last epoch's WindowDataset

    def _of_epoch(self, epoch: int) -> WindowDataset:
        if epoch != self._epoch:
            windows = self.windows(epoch)
            self._dataset = WindowDataset(self.reader, self.labels, windows, self.augment, self.sample_fps)
            self._epoch = epoch
        return self._dataset

    def __getitem__(self, index: tuple[int, int]) -> dict:
        epoch, i = index
        return self._of_epoch(epoch)[i]

    def __getitems__(self, indices: list[tuple[int, int]]) -> dict:
        """One batch of (epoch, i) indices, all of one epoch (the sampler yields one epoch at a time)."""
        return self._of_epoch(indices[0][0]).__getitems__([i for _, i in indices])


def _collate(batch: dict) -> dict:
    """A batch of arrays (`WindowDataset.__getitems__`) as the training step takes it. Only the features become a
    tensor here: from a worker process each tensor travels as its own shared-memory file (a socket round trip to
    receive), while the small arrays travel inside the message itself."""
    return {**batch, "features": torch.from_numpy(batch["features"])}


class Prefetched:
    """A DataLoader iterator's batches, taken from it in a background thread: making a batch (no worker
    processes) or receiving one from a worker process (a socket read and a shared-memory map per tensor)
    then overlaps the training step instead of adding to it. Torch and numpy release the GIL in their
    array work, so the step and the thread run side by side."""

    _END = object()

    def __init__(self, batches, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(batches,), daemon=True, name="vtm-prefetch")
        self._thread.start()

    def _fill(self, batches) -> None:
        try:
            for batch in batches:
                if not self._put(batch):
                    return
        except BaseException as e:  # noqa: BLE001 - raised again in the training thread
            self._put(e)
            return
        self._put(self._END)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _event_runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of event frames."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (labels > 0).astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2]))


class TrainRecipe:
    def __init__(
        self,
        cache_dir: Path,
        annotations_path: Path,
        out_dir: Path,
        config: Config,
        resume: Path | None = None,
        progress: bool = True,
        rank: int = 0,
        world: int = 1,
    ):
        self.cache_dir, self.annotations_path, self.out_dir = Path(cache_dir), Path(annotations_path), Path(out_dir)
        self.config, self.resume = config, resume
        self.rank, self.world = rank, world  # data-parallel: each rank trains on its share of windows
        self.progress = progress and rank == 0

    # ---- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        tc = self.config.train
        torch.manual_seed(tc.seed)  # the same seed on every rank: replicas start identical
        np.random.seed(tc.seed)
        self.device = resolve_device(tc.device) if self.world == 1 else str(_ray_train_device())
        self.cache = FeatureCache.open(self.cache_dir)
        resume_cfg = None
        if self.resume is not None:
            resume_cfg = ckpt.saved_model_config(self.resume)
        self.annotations: Annotations = load_annotations(
            self.annotations_path, self.cache, resume_cfg.labels if resume_cfg else None
        )
        labels = resume_cfg.labels if resume_cfg else self.annotations.labels
        interval = 1.0 / self.cache.settings.sample_fps
        self.model_config = build_trigger_model_config(
            self.config, self.cache.settings.feature_dim, labels, self._shortest_event(interval)
        )
        if (
            resume_cfg is not None
            and with_threshold(resume_cfg, self.model_config.detector.threshold) != self.model_config
        ):
            raise ConfigError(
                f"--resume: {self.resume} was trained with another model configuration; resume with the config "
                f"saved in {self.out_dir / 'config.yaml'}"
            )

        self.train_ids, self.val_ids = split_by_video(sorted(self.annotations.events), tc.val_fraction)
        if not self.train_ids:
            raise ConfigError(
                "no annotated videos left for training after the validation split; annotate more videos or lower "
                "train.val_fraction"
            )
        self.reader = WindowReader(self.cache, self.model_config.window, self.model_config)
        self.timestamps = {v: self.reader.timestamps(v) for v in self.annotations.events}
        # A few annotated videos' inputs are small: read once, windows are then slices (no HDF5 read per window).
        # A cache without the inputs the model takes fails here, with what to do.
        in_memory = sum(len(self.timestamps[v]) for v in self.train_ids) * self.model_config.input_dim * 4
        if in_memory <= MAX_INPUTS_IN_MEMORY:
            self.reader.load(self.train_ids)
        else:
            self.reader.read(self.train_ids[0], 0)
        interval = 1.0 / self.cache.settings.sample_fps
        self.frame_labels = {v: self.annotations.frame_labels(v, ts, interval) for v, ts in self.timestamps.items()}
        self.hard_negatives = {v: self._change_peaks_outside_events(v) for v in self.train_ids}
        self.windows = EpochWindows(
            self.train_ids,
            self.frame_labels,
            self.timestamps,
            {v: [(e.start, e.end, e.description) for e in self.annotations.events[v]] for v in self.train_ids},
            self.hard_negatives,
            tc,
            self.model_config.window,
            self.rank,
            self.world,
        )
        self.class_weights = self._class_weights()

        self.model = TriggerModel(self.model_config).to(self.device)
        self.model.encoder.gradient_checkpointing = tc.gradient_checkpointing
        self.adapter = self._build_adapter()
        self._freeze()
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr": tc.lr}]
        if self.adapter is not None:  # the LLM base is frozen; projector and LoRA train
            groups.append({"params": [p for p in self.adapter.parameters() if p.requires_grad], "lr": tc.adapter_lr})
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ConfigError("every component is frozen: nothing to train (see the train.freeze_* settings)")
        self.optimizer = torch.optim.AdamW(groups, weight_decay=tc.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.windows(0)) / tc.batch_size / tc.grad_accum)
        total = max(1, self.steps_per_epoch * tc.epochs)
        warm = min(tc.warmup_steps, total // 2)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: (s + 1) / (warm + 1) if s < warm else max(0.0, (total - s) / max(1, total - warm))
        )
        self.amp_dtype = _amp_dtype(tc.mixed_precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.start_epoch, self.step, self.best = 1, 0, None
        self.best_state: dict[str, torch.Tensor] | None = None  # weights of the best epoch so far
        if self.resume is not None:
            self._restore(self.resume)
        self.writer = None
        if self.rank == 0:  # one rank writes the run directory
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.out_dir / "config.yaml") as tmp:
                tmp.write_text(dump_config(self.config))
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir), purge_step=self.step if self.resume else None)

    def _shortest_event(self, interval: float) -> int:
        """Samples in the shortest annotated event (1 without events): the score is smoothed below that."""
        runs = [
            b - a
            for v, evs in self.annotations.events.items()
            if evs
            for a, b in _event_runs(self.annotations.frame_labels(v, self.cache.read_features(v)[1], interval))
        ]
        return int(min(runs)) if runs else 1

    def _build_adapter(self):
        if not self.config.adapter.llm:
            return None
        from vtm.models.llava_adapter import VideoLanguageAdapter

        cfg = dataclasses.replace(self.config.adapter, input_dim=self.model_config.encoder.d_model)
        dtype = torch.bfloat16 if self.device.startswith("cuda") else None
        adapter = VideoLanguageAdapter.load(cfg, cfg.llm, kind=cfg.llm_kind, dtype=dtype, device=self.device)
        adapter.gradient_checkpointing = self.config.train.gradient_checkpointing
        self.adapter_config = dataclasses.asdict(dataclasses.replace(cfg, llm_kind=adapter.kind))  # the kind found
        return adapter

    def _freeze(self) -> None:
        tc = self.config.train
        for module, frozen in (
            (self.model.encoder, tc.freeze_temporal_encoder),
            (self.model.detector, tc.freeze_trigger_detector),
        ):
            for p in module.parameters():
                p.requires_grad_(not frozen)
        if self.adapter is not None and not tc.freeze_llm:
            # The language model itself; LLaVA's vision tower and its projector stay as trained.
            for name, p in self.adapter.language_model.named_parameters():
                if not any(part in name for part in ("vision_tower", "multi_modal_projector")):
                    p.requires_grad_(True)
            self.adapter.language_model.train()

    def _class_weights(self) -> torch.Tensor:
        """Weight each event class by how much rarer it is than 'no event' in the windows trained on (capped)."""
        w = self.model_config.window
        seen = [self.frame_labels[v][start : start + w] for v, start, _, _ in self.windows(0)]
        counts = np.bincount(np.concatenate(seen), minlength=self.model_config.detector.num_classes + 1)
        weights = np.clip(counts[0] / np.maximum(counts, 1), 1.0, 20.0)
        weights[0] = 1.0
        return torch.tensor(weights, dtype=torch.float32)

    def _change_peaks_outside_events(self, video_id: str) -> np.ndarray:
        """Frames where the training-free change score fires but nothing is annotated: the look-alikes
        (cuts, other objects) a few-shot model most needs to see as 'no event'."""
        rows = self.cache.read_scores([video_id]).sort("sample_index")
        peaks = SelectWindowsStage()(
            {"timestamps": rows["timestamp_s"].to_numpy(), "score": rows["change_score"].to_numpy()}
        )["trigger_index"]
        return np.asarray([i for i in peaks if self.frame_labels[video_id][i] == 0], np.int64)

    def _restore(self, directory: Path) -> None:
        model, _, _ = ckpt.load_trigger_model(directory, strict=True)
        self.model.load_state_dict(model.state_dict())
        if self.adapter is not None and ckpt.fine_tuned_llm(directory) is not None:
            from vtm.models.llava_adapter import load_language_model

            tuned, _ = load_language_model(str(ckpt.fine_tuned_llm(directory)), device=self.device)
            self.adapter.language_model.load_state_dict(tuned.state_dict(), strict=False)
        adapter_state = ckpt.load_adapter_state(directory) if self.adapter is not None else None
        if adapter_state is not None:
            self.adapter.load_trainable_state_dict(adapter_state)
        state = ckpt.load_training_state(directory)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.restore_rng(state)
        self.start_epoch, self.step, self.best = state["epoch"] + 1, state["step"], state["best"]
        self.best_state = state.get("best_model")

    # ---- train ---------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        tc = self.config.train
        metrics: dict = {}
        wait = busy = 0.0
        samples = 0
        bar = tqdm(
            total=tc.epochs,
            initial=self.start_epoch - 1,
            unit="epoch",
            desc="train",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        last = self.start_epoch - 1
        # resumed from where it stopped early
        stopped = self.best is not None and tc.patience > 0 and last - self.best["epoch"] >= tc.patience
        loader = self._loader()  # one for the run: its worker processes start once, not every epoch
        batches = None  # the next epoch's, when they already load
        try:
            for epoch in range(self.start_epoch, tc.epochs + 1 if not stopped else 0):
                last = epoch
                self.model.train()
                self.optimizer.zero_grad(set_to_none=True)
                t_wait = time.perf_counter()
                if batches is None:
                    batches = self._batches(loader, epoch)
                # A DataLoader iterator per epoch drew its workers' base seed from torch's RNG here: draw it, so that
                # dropout gets the same random numbers as then, and a resumed run the same as one never stopped.
                torch.empty((), dtype=torch.int64).random_()
                for i, batch in enumerate(batches):
                    t_got = time.perf_counter()
                    wait += t_got - t_wait
                    loss, parts = self._loss(batch)
                    self.scaler.scale(loss / tc.grad_accum).backward()
                    if (i + 1) % tc.grad_accum == 0 or i + 1 == len(loader):
                        self._optimizer_step()
                        if self.writer is not None:
                            for name, value in parts.items():
                                self.writer.add_scalar(f"train/{name}", value, self.step)
                            self.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
                    samples += len(batch["description"])
                    t_wait = time.perf_counter()
                    busy += t_wait - t_got
                batches = None
                if epoch < tc.epochs:  # the next epoch's first batches load while this one is validated and saved
                    t_start = time.perf_counter()
                    batches = self._batches(loader, epoch + 1)
                    wait += time.perf_counter() - t_start
                stop = False
                if self.rank == 0:
                    metrics = self.validate(epoch)
                    self._keep_if_best(epoch, metrics)
                    bar.update(1)
                    bar.set_postfix(
                        {k: f"{v:.3f}" for k, v in metrics.items() if k in ("val/event_f1", "val/frame_ap")}
                        | {"loss": f"{parts['loss']:.3f}"}
                    )
                    stop = tc.patience > 0 and epoch - self.best["epoch"] >= tc.patience
                    if epoch % tc.save_every == 0 or epoch == tc.epochs or stop:
                        self.save(ckpt.epoch_checkpoint(self.out_dir, epoch), epoch, metrics)
                if self._all_agree(stop):
                    break
        finally:
            if batches is not None:  # stopped early, or failed: end the next epoch's loading
                batches.close()
        bar.close()
        self._check_replicas_agree()
        final = ckpt.final_checkpoint(self.out_dir)
        if self.rank == 0 and ckpt.epoch_checkpoint(self.out_dir, last).is_dir() and self.best is not None:
            self.save(final, last, self.best["metrics"], best=True)
        best_epoch = self.best["epoch"] if self.best else last
        return TrainResult(
            self.out_dir,
            final,
            last,
            metrics,
            wait / max(wait + busy, 1e-9),
            samples / max(wait + busy, 1e-9),
            best_epoch,
        )

    def _keep_if_best(self, epoch: int, metrics: dict) -> None:
        """Remember this epoch's weights and threshold if its validation event F1 (then frame AP) is the best yet."""
        ap = metrics["val/frame_ap"]
        key = [metrics["val/event_f1"], -1.0 if math.isnan(ap) else ap]
        if self.best is None or key > self.best["key"]:
            self.best = {"epoch": epoch, "key": key, "threshold": metrics["val/threshold"], "metrics": metrics}
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def _all_agree(self, stop: bool) -> bool:
        """Rank 0 decides when to stop; every rank must leave the loop together."""
        if self.world == 1:
            return stop
        import torch.distributed as dist

        flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def _batches(self, loader: DataLoader, epoch: int) -> Prefetched:
        """The epoch's batches, loading in the background from now on. Starting a DataLoader iterator may draw from
        torch's RNG; the state is put back, so that when loading starts changes no random number of the training."""
        rng = torch.get_rng_state()
        loader.sampler.set_epoch(epoch)
        batches = Prefetched(iter(loader))
        torch.set_rng_state(rng)
        return batches

    def _loader(self) -> DataLoader:
        tc = self.config.train
        dataset = EpochWindowDataset(self.windows, self.reader, self.frame_labels, tc, self.cache.settings.sample_fps)
        return DataLoader(
            dataset,
            batch_size=tc.batch_size,
            sampler=EpochSampler(self.windows),  # in order: the windows are shuffled, seeded by epoch
            num_workers=tc.data_workers,
            collate_fn=_collate,
            persistent_workers=tc.data_workers > 0,
            prefetch_factor=4 if tc.data_workers else None,
        )

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=self.amp_dtype)

    def _loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        feats = batch["features"].to(self.device, non_blocking=True)
        times, mask, labels = (torch.as_tensor(batch[k]).to(self.device) for k in ("timestamps", "mask", "labels"))
        with self._autocast():
            context, logits = self.model(feats, times, mask)
            ce = torch.nn.functional.cross_entropy(
                logits.float()[mask], labels[mask], weight=self.class_weights.to(self.device)
            )
            loss, parts = ce, {"trigger_loss": ce.item()}
            described = [i for i, d in enumerate(batch["description"]) if d]
            if self.adapter is not None and described:
                idx = torch.tensor(described, device=self.device)
                lm = self.adapter.loss(context[idx], [batch["description"][i] for i in described], mask[idx])
                loss = loss + self.config.train.adapter_loss_weight * lm
                parts["adapter_loss"] = lm.item()
        parts["loss"] = loss.item()
        return loss, parts

    def _optimizer_step(self) -> None:
        tc = self.config.train
        if self.world > 1:
            self._average_gradients()
        if tc.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def _trainable(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _average_gradients(self) -> None:
        """All-reduce gradients across ranks (a rank whose batch skipped a part contributes zeros).

        Done by hand rather than with DDP because the adapter's loss is not its forward(), which
        DDP's hooks assume.
        """
        import torch.distributed as dist

        for p in self._trainable():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= self.world

    def _check_replicas_agree(self) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        digest = torch.stack([p.detach().double().sum() for p in self._trainable()]).sum().reshape(1).to(self.device)
        gathered = [torch.zeros_like(digest) for _ in range(self.world)]
        dist.all_gather(gathered, digest)
        if any(not torch.equal(g, gathered[0]) for g in gathered):
            raise RuntimeError(f"data-parallel replicas diverged: weight sums {[float(g) for g in gathered]}")

    # ---- validate ------------------------------------------------------------------------------
    def validate(self, epoch: int) -> dict:
        """Metrics on the validation videos at the calibrated (or configured) decision threshold."""
        ids = self.val_ids or self.train_ids  # with one annotated video, report on training data
        scored = score_videos(self.model, self.cache, self.annotations, ids)
        threshold = (
            calibrate_threshold(scored)[0]
            if self.config.train.calibrate_threshold
            else self.model_config.detector.threshold
        )
        metrics = metrics_at(scored, threshold)
        for k, v in metrics.items():
            if not (isinstance(v, float) and math.isnan(v)):
                self.writer.add_scalar(k, v, epoch)
        self.writer.flush()
        return metrics

    # ---- save / cleanup ------------------------------------------------------------------------
    def save(self, directory: Path, epoch: int, metrics: dict, best: bool = False) -> Path:
        """A checkpoint of this epoch's weights, or with `best` of the best epoch's (the training state stays this
        epoch's)."""
        model = self.model
        threshold = metrics.get("val/threshold", self.model_config.detector.threshold)
        if best:
            model = TriggerModel(self.model_config)
            model.load_state_dict(self.best_state)
        model.config = with_threshold(self.model_config, threshold)
        meta = {
            "features": ckpt.feature_signature(self.cache.settings),
            "cache_fingerprint": self.cache.settings.fingerprint,
            "epoch": self.best["epoch"] if best else epoch,
            "trained_epochs": epoch,
            "step": self.step,
            "metrics": metrics,
            "threshold": {
                "value": threshold,
                "calibrated_on_videos": len(self.val_ids or self.train_ids)
                if self.config.train.calibrate_threshold
                else 0,
            },
            "labels": list(self.model_config.labels),
            "train_videos": len(self.train_ids),
            "val_videos": len(self.val_ids),
            "llm": self.config.adapter.llm,
        }
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "step": self.step,
            "best": self.best,
            "best_model": self.best_state,
            **ckpt.capture_rng(),
        }
        adapter_state = self.adapter.trainable_state_dict() if self.adapter is not None else None
        tuned_llm = self.adapter if self.adapter is not None and not self.config.train.freeze_llm else None
        return ckpt.save_checkpoint(
            directory, model, meta, getattr(self, "adapter_config", None), adapter_state, state, tuned_llm
        )

    def cleanup(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader.close()


def _amp_dtype(mode: str, device: str) -> torch.dtype | None:
    on_gpu = device.startswith("cuda")
    if mode == "off" or (mode == "auto" and not on_gpu):
        return None
    if mode in ("auto", "bf16"):
        return torch.bfloat16
    return torch.float16


def _ray_train_device():
    import ray.train.torch

    return ray.train.torch.get_device()


def _train_worker(args: dict) -> None:
    """One Ray Train worker: the same recipe on this rank's share of the windows."""
    import ray.train

    ctx = ray.train.get_context()
    recipe = TrainRecipe(**args, progress=False, rank=ctx.get_world_rank(), world=ctx.get_world_size())
    recipe.setup()
    try:
        recipe.train()
    finally:
        recipe.cleanup()


def _run_distributed(cache_dir, annotations, out_dir, config: Config, resume) -> TrainResult:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from vtm.pipeline.ray_runner import cluster_gpus, init_ray

    init_ray(config.ray.address)
    use_gpu = config.train.device != "cpu" and cluster_gpus() > 0
    out_dir = Path(out_dir).resolve()
    args = {
        "cache_dir": Path(cache_dir).resolve(),
        "annotations_path": Path(annotations).resolve(),
        "out_dir": out_dir,
        "config": config,
        "resume": resume,
    }
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=args,
        scaling_config=ScalingConfig(
            num_workers=config.train.workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}
        ),
        run_config=RunConfig(storage_path=str(out_dir / "ray_train"), name="train"),
    )
    trainer.fit()
    final = ckpt.final_checkpoint(out_dir)
    return TrainResult(out_dir, final, config.train.epochs, ckpt.read_meta(final)["metrics"])


def _is_training_run(out_dir: Path) -> bool:
    """A training run written before runs were marked: its config.yaml beside a vtm checkpoint."""
    return (out_dir / "config.yaml").is_file() and bool(ckpt.run_checkpoints(out_dir))


def run_train(
    cache_dir: Path,
    annotations: Path,
    out_dir: Path,
    config: Config = Config(),
    resume: Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train from the cache in this process, or on `config.train.workers` Ray Train workers.
    `out_dir` must be new, empty or an earlier training run (`vtm.cache.output_dir`), and is locked for
    the run: a second training into it is refused with who holds it."""
    with owned_output_dir(Path(out_dir), "train", "vtm train-from-cache", "--out", _is_training_run):
        if config.train.workers > 1:
            return _run_distributed(cache_dir, annotations, out_dir, config, resume)
        recipe = TrainRecipe(cache_dir, annotations, out_dir, config, resume, progress)
        recipe.setup()
        try:
            return recipe.train()
        finally:
            recipe.cleanup()
