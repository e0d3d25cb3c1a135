"""`vtm train-from-cache`: train the trigger model (and the LLaVA adapter) from cached features.

A recipe with visible steps: setup -> train (epochs of windows, validation each epoch) -> save ->
cleanup. It reads HDF5 windows of frames and never decodes video. Every random choice is seeded
per epoch and every checkpoint holds the optimizer, scheduler and RNG states, so `--resume`
continues exactly where the checkpoint left off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vtm.cache.atomic import atomic_path
from vtm.cache.output_dir import owned_output_dir
from vtm.cache.store import FeatureCache
from vtm.cache.windows import COLOR_DIM, WindowReader, read_model_inputs
from vtm.models.temporal_encoder import TemporalEncoderConfig
from vtm.models.trigger_detector import TriggerDetectorConfig
from vtm.models.trigger_model import TriggerModel, TriggerModelConfig
from vtm.pipeline import checkpoint as ckpt
from vtm.pipeline.annotations import Annotations, load_annotations
from vtm.pipeline.config import Config, ConfigError, dump_config, resolve_device
from vtm.pipeline.evaluation import event_scores
from vtm.pipeline.metrics import frame_metrics
from vtm.stages.select_windows import SelectWindowsStage

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out_dir: Path
    final: Path
    epochs: int
    metrics: dict = field(default_factory=dict)
    data_wait_share: float = 0.0  # share of step time spent waiting for the next batch
    samples_per_s: float = 0.0


def build_trigger_model_config(config: Config, feature_dim: int, labels: tuple[str, ...]) -> TriggerModelConfig:
    m = config.model
    input_dim = feature_dim + (COLOR_DIM if m.color_inputs else 0)
    return TriggerModelConfig(
        encoder=TemporalEncoderConfig(input_dim=input_dim, d_model=m.d_model, kind=m.encoder_kind, num_layers=m.num_layers, num_heads=m.num_heads, dropout=m.dropout),
        detector=TriggerDetectorConfig(input_dim=m.d_model, hidden_sizes=m.detector_hidden, num_classes=len(labels), dropout=m.dropout, threshold=m.threshold),
        window=m.window,
        labels=labels,
        color_inputs=m.color_inputs,
    )


def split_by_video(video_ids: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic split by a hash of the video id: frames of one video never straddle the split."""
    ranked = sorted(video_ids, key=lambda v: hashlib.sha1(v.encode()).hexdigest())
    n_val = math.ceil(val_fraction * len(ranked)) if len(ranked) > 1 and val_fraction > 0 else 0
    return sorted(ranked[n_val:]), sorted(ranked[:n_val])


class WindowDataset(Dataset):
    """Items: (video_id, start frame, description) -> a dict of arrays for one window."""

    def __init__(self, reader: WindowReader, labels: dict[str, np.ndarray], items: list[tuple[str, int, str]]):
        self.reader, self.labels, self.items = reader, labels, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        video_id, start, description = self.items[i]
        feats, times, mask = self.reader.read(video_id, start)
        lab = np.zeros(len(mask), np.int64)
        part = self.labels[video_id][start : start + len(mask)]
        lab[: len(part)] = part
        return {"features": feats, "timestamps": times.astype(np.float32), "mask": mask, "labels": lab, "description": description}


def _collate(items: list[dict]) -> dict:
    out = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in ("features", "timestamps", "mask", "labels")}
    out["description"] = [it["description"] for it in items]
    return out


def _event_runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of event frames."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (labels > 0).astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2]))


class TrainRecipe:
    def __init__(
        self, cache_dir: Path, annotations_path: Path, out_dir: Path, config: Config, resume: Path | None = None, progress: bool = True, rank: int = 0, world: int = 1
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
            resume_cfg = TriggerModelConfig.from_dict(ckpt.read_json(self.resume, "config.json")["model"])
        self.annotations: Annotations = load_annotations(self.annotations_path, self.cache, resume_cfg.labels if resume_cfg else None)
        labels = resume_cfg.labels if resume_cfg else self.annotations.labels
        self.model_config = build_trigger_model_config(self.config, self.cache.settings.feature_dim, labels)
        if resume_cfg is not None and resume_cfg != self.model_config:
            raise ConfigError(f"--resume: {self.resume} was trained with another model configuration; resume with the config saved in {self.out_dir / 'config.yaml'}")

        self.train_ids, self.val_ids = split_by_video(sorted(self.annotations.events), tc.val_fraction)
        if not self.train_ids:
            raise ConfigError("no annotated videos left for training after the validation split; annotate more videos or lower train.val_fraction")
        self.reader = WindowReader(self.cache, self.model_config.window, color=self.model_config.color_inputs)
        self.timestamps = {v: self.reader.timestamps(v) for v in self.annotations.events}
        interval = 1.0 / self.cache.settings.sample_fps
        self.frame_labels = {v: self.annotations.frame_labels(v, ts, interval) for v, ts in self.timestamps.items()}
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
        self.steps_per_epoch = math.ceil(len(self._epoch_items(0)) / tc.batch_size / tc.grad_accum)
        total = max(1, self.steps_per_epoch * tc.epochs)
        warm = min(tc.warmup_steps, total // 2)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: (s + 1) / (warm + 1) if s < warm else max(0.0, (total - s) / max(1, total - warm))
        )
        self.amp_dtype = _amp_dtype(tc.mixed_precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.start_epoch, self.step, self.best = 1, 0, None
        if self.resume is not None:
            self._restore(self.resume)
        self.writer = None
        if self.rank == 0:  # one rank writes the run directory
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.out_dir / "config.yaml") as tmp:
                tmp.write_text(dump_config(self.config))
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir), purge_step=self.step if self.resume else None)

    def _build_adapter(self):
        m = self.config.model
        if not m.llm:
            return None
        from vtm.models.llava_adapter import AdapterConfig, VideoLanguageAdapter

        cfg = AdapterConfig(input_dim=m.d_model, num_soft_tokens=m.num_soft_tokens, hidden_dim=m.adapter_hidden, lora_rank=m.lora_rank)
        dtype = torch.bfloat16 if self.device.startswith("cuda") else None
        adapter = VideoLanguageAdapter.load(cfg, m.llm, kind=m.llm_kind, dtype=dtype, device=self.device)
        adapter.gradient_checkpointing = self.config.train.gradient_checkpointing
        self.adapter_config = {"llm": m.llm, "llm_kind": adapter.kind, **dataclasses.asdict(cfg)}
        return adapter

    def _freeze(self) -> None:
        tc = self.config.train
        for module, frozen in ((self.model.encoder, tc.freeze_temporal_encoder), (self.model.detector, tc.freeze_trigger_detector)):
            for p in module.parameters():
                p.requires_grad_(not frozen)
        if self.adapter is not None and not tc.freeze_llm:
            # The language model itself; LLaVA's vision tower and its projector stay as trained.
            for name, p in self.adapter.language_model.named_parameters():
                if not any(part in name for part in ("vision_tower", "multi_modal_projector")):
                    p.requires_grad_(True)
            self.adapter.language_model.train()

    def _class_weights(self) -> torch.Tensor:
        """Events are rare: weight each event class by how much rarer it is than 'no event' (capped)."""
        counts = np.bincount(np.concatenate([self.frame_labels[v] for v in self.train_ids]), minlength=self.model_config.detector.num_classes + 1)
        weights = np.clip(counts[0] / np.maximum(counts, 1), 1.0, 20.0)
        weights[0] = 1.0
        return torch.tensor(weights, dtype=torch.float32)

    def _epoch_items(self, epoch: int) -> list[tuple[str, int, str]]:
        """One jittered window around every event, plus random windows; the same for a given epoch."""
        rng = np.random.default_rng([self.config.train.seed, epoch])
        w = self.model_config.window
        items: list[tuple[str, int, str]] = []
        for v in self.train_ids:
            events = self.annotations.events[v]
            for a, b in _event_runs(self.frame_labels[v]):
                centre = (a + b) // 2
                t_mid = float(self.timestamps[v][centre])
                desc = next((e.description for e in events if e.start - 0.5 <= t_mid <= e.end + 0.5 and e.description), "")
                for _ in range(self.config.train.windows_per_event):
                    start = centre - int(rng.integers(w // 4, max(w // 4 + 1, 3 * w // 4)))
                    items.append((v, int(np.clip(start, 0, max(0, len(self.frame_labels[v]) - w))), desc))
        n_neg = max(1, round(self.config.train.negatives_per_positive * max(1, len(items))))
        lengths = np.array([len(self.frame_labels[v]) for v in self.train_ids])
        picks = rng.choice(len(self.train_ids), size=n_neg, p=lengths / lengths.sum())
        for i in picks:
            v = self.train_ids[i]
            items.append((v, int(rng.integers(0, max(1, lengths[i] - w + 1))), ""))
        order = rng.permutation(len(items))
        return [items[i] for i in order][self.rank :: self.world]

    def _restore(self, directory: Path) -> None:
        model, _, _ = ckpt.load_trigger_model(directory, strict=True)
        self.model.load_state_dict(model.state_dict())
        if self.adapter is not None and (Path(directory) / ckpt.LLM_DIR).is_dir():
            from vtm.models.llava_adapter import load_language_model

            tuned, _ = load_language_model(str(Path(directory) / ckpt.LLM_DIR), device=self.device)
            self.adapter.language_model.load_state_dict(tuned.state_dict(), strict=False)
        if self.adapter is not None and (Path(directory) / "adapter.safetensors").is_file():
            from safetensors.torch import load_file

            self.adapter.load_trainable_state_dict(load_file(str(Path(directory) / "adapter.safetensors")))
        state = ckpt.load_training_state(directory)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.restore_rng(state)
        self.start_epoch, self.step, self.best = state["epoch"] + 1, state["step"], state["best"]

    # ---- train ---------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        tc = self.config.train
        metrics: dict = {}
        wait = busy = 0.0
        samples = 0
        bar = tqdm(total=tc.epochs, initial=self.start_epoch - 1, unit="epoch", desc="train", disable=not self.progress, dynamic_ncols=True)
        for epoch in range(self.start_epoch, tc.epochs + 1):
            self.model.train()
            loader = self._loader(epoch)
            self.optimizer.zero_grad(set_to_none=True)
            t_wait = time.perf_counter()
            for i, batch in enumerate(loader):
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
            if self.rank != 0:
                continue
            metrics = self.validate(epoch)
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items() if k in ("val/event_f1", "val/frame_ap")} | {"loss": f"{parts['loss']:.3f}"})
            if epoch % tc.save_every == 0 or epoch == tc.epochs:
                self.save(self.out_dir / f"checkpoint-epoch-{epoch}", epoch, metrics)
        bar.close()
        self._check_replicas_agree()
        final = self.out_dir / "final"
        if self.rank == 0 and (self.out_dir / f"checkpoint-epoch-{tc.epochs}").is_dir():
            self.save(final, tc.epochs, metrics)
        return TrainResult(self.out_dir, final, tc.epochs, metrics, wait / max(wait + busy, 1e-9), samples / max(wait + busy, 1e-9))

    def _loader(self, epoch: int) -> DataLoader:
        tc = self.config.train
        dataset = WindowDataset(self.reader, self.frame_labels, self._epoch_items(epoch))
        return DataLoader(
            dataset,
            batch_size=tc.batch_size,
            shuffle=False,  # _epoch_items already shuffled, seeded by epoch
            num_workers=tc.data_workers,
            collate_fn=_collate,
            persistent_workers=False,
            prefetch_factor=4 if tc.data_workers else None,
        )

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=self.amp_dtype)

    def _loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        feats = batch["features"].to(self.device, non_blocking=True)
        times = batch["timestamps"].to(self.device, non_blocking=True)
        mask = batch["mask"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        with self._autocast():
            context, logits = self.model(feats, times, mask)
            ce = torch.nn.functional.cross_entropy(logits.float()[mask], labels[mask], weight=self.class_weights.to(self.device))
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
        ids = self.val_ids or self.train_ids  # with one annotated video, report on training data
        metrics = evaluate_model(self.model, self.cache, self.annotations, ids)
        for k, v in metrics.items():
            if not (isinstance(v, float) and math.isnan(v)):
                self.writer.add_scalar(k, v, epoch)
        self.writer.flush()
        return metrics

    # ---- save / cleanup ------------------------------------------------------------------------
    def save(self, directory: Path, epoch: int, metrics: dict) -> Path:
        meta = {
            "features": ckpt.feature_signature(self.cache.settings),
            "cache_fingerprint": self.cache.settings.fingerprint,
            "epoch": epoch,
            "step": self.step,
            "metrics": metrics,
            "labels": list(self.model_config.labels),
            "train_videos": len(self.train_ids),
            "val_videos": len(self.val_ids),
            "llm": self.config.model.llm,
        }
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "epoch": epoch, "step": self.step, "best": self.best, **ckpt.capture_rng()}
        adapter_state = self.adapter.trainable_state_dict() if self.adapter is not None else None
        tuned_llm = self.adapter if self.adapter is not None and not self.config.train.freeze_llm else None
        return ckpt.save_checkpoint(directory, self.model, meta, getattr(self, "adapter_config", None), adapter_state, state, tuned_llm)

    def cleanup(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader.close()


def evaluate_model(model: TriggerModel, cache: FeatureCache, annotations: Annotations, video_ids: list[str], tolerance_s: float = 1.0) -> dict:
    """Frame-level P/R/F1/AP and event-level F1 of the learned score (and of the change score) on videos."""
    interval = 1.0 / cache.settings.sample_fps
    threshold = model.config.detector.threshold
    select = SelectWindowsStage(threshold=threshold)
    change_select = SelectWindowsStage()
    scores, positives, learned, change, truth = [], [], {}, {}, {}
    for v in video_ids:
        feats, ts = read_model_inputs(cache, v, model.config.color_inputs)
        s, _ = model.score_video(feats, ts)
        lab = annotations.frame_labels(v, ts, interval)
        scores.append(s)
        positives.append(lab > 0)
        path = annotations.paths[v]
        truth[path] = [(e.start + e.end) / 2 for e in annotations.events[v]]
        learned[path] = select({"timestamps": ts, "score": s})["trigger_time"].tolist()
        cs = cache.read_scores([v]).sort("sample_index")
        change[path] = change_select({"timestamps": cs["timestamp_s"].to_numpy(), "score": cs["change_score"].to_numpy()})["trigger_time"].tolist()
    frame = frame_metrics(np.concatenate(scores), np.concatenate(positives), threshold)
    ours, baseline = event_scores(learned, truth, tolerance_s), event_scores(change, truth, tolerance_s)
    return {
        "val/frame_precision": frame["precision"],
        "val/frame_recall": frame["recall"],
        "val/frame_f1": frame["f1"],
        "val/frame_ap": frame["average_precision"],
        "val/event_precision": ours["precision"],
        "val/event_recall": ours["recall"],
        "val/event_f1": ours["f1"],
        "val/change_score_event_f1": baseline["f1"],
    }


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
    args = {"cache_dir": Path(cache_dir).resolve(), "annotations_path": Path(annotations).resolve(), "out_dir": out_dir, "config": config, "resume": resume}
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=args,
        scaling_config=ScalingConfig(num_workers=config.train.workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(out_dir / "ray_train"), name="train"),
    )
    trainer.fit()
    meta = ckpt.read_json(out_dir / "final", "meta.json")
    return TrainResult(out_dir, out_dir / "final", config.train.epochs, meta["metrics"])


def _is_training_run(out_dir: Path) -> bool:
    """A training run written before runs were marked: its config.yaml beside a vtm checkpoint."""
    return (out_dir / "config.yaml").is_file() and any(
        (d / "meta.json").is_file() and (d / "model.safetensors").is_file() for d in out_dir.iterdir() if d.name == "final" or d.name.startswith("checkpoint-epoch-")
    )


def run_train(cache_dir: Path, annotations: Path, out_dir: Path, config: Config = Config(), resume: Path | None = None, progress: bool = True) -> TrainResult:
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
