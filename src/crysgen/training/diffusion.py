"""`crysgen train diffusion`: Lightning training of the CrysTens denoiser, with EMA and resume.

A run directory holds ``config.yaml`` (resolved), ``scaling.json``, ``checkpoints/`` (Lightning,
every ``checkpoint_every`` steps, plus ``last.ckpt``), ``logs/`` (CSV) and ``model/`` (the model
directory exported from the EMA weights at every checkpoint and at the end).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.errors import CrysgenError
from crysgen.models.model_dir import data_fingerprint
from crysgen.models.unet2d import build_unet
from crysgen.objectives.cascade import stage_loss
from crysgen.objectives.diffusion import to_model_range
from crysgen.pipelines.diffusion import DiffusionModel
from crysgen.representations.crystens import CrysTensScaling, encode
from crysgen.training.config import DiffusionTrainConfig, save_config


class DiffusionModule(L.LightningModule):
    """Denoiser + DDPM objective + EMA copy of the weights (the one used for sampling)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg = DiffusionTrainConfig.from_dict(config)
        self.unet = build_unet(self.cfg.unet)
        self.ema = torch.optim.swa_utils.AveragedModel(
            self.unet, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(self.cfg.optim.ema_decay)
        )
        self.ema.requires_grad_(False)
        self.scheduler = self.cfg.diffusion.scheduler()

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """One DDPM step of this stage on a batch of [0, 1] tensors, (B, 4, 64, 64)."""
        loss = stage_loss(self.unet, self.scheduler, to_model_range(batch), self.cfg.stage)
        self.log("train_loss", loss, prog_bar=True, on_step=True, sync_dist=False)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        """EMA model's loss on validation tensors (the same noise and timesteps every time)."""
        gen = torch.Generator(device="cpu").manual_seed(batch_idx)
        loss = stage_loss(self.ema.module, self.scheduler, to_model_range(batch), self.cfg.stage,
                          generator=gen)
        self.log("val_loss", loss, prog_bar=True, sync_dist=True)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Update the EMA weights after every optimiser step."""
        self.ema.update_parameters(self.unet)

    def configure_optimizers(self) -> Any:
        """AdamW with linear warm-up."""
        o = self.cfg.optim
        opt = torch.optim.AdamW(self.unet.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        warm = max(1, o.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Throughput(Callback):
    """Training speed of this invocation: optimiser steps and tensors per second (all devices)."""

    def __init__(self) -> None:
        self.start, self.step0, self.result = 0.0, 0, {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the clock after setup and checkpoint restore."""
        self.start, self.step0 = time.perf_counter(), int(trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record steps, seconds and samples/s."""
        seconds = time.perf_counter() - self.start
        steps = int(trainer.global_step) - self.step0
        batch = pl_module.cfg.optim.batch_size * trainer.world_size
        self.result = {"steps": steps, "seconds": round(seconds, 2), "global_batch": batch,
                       "steps_per_s": round(steps / seconds, 3) if seconds else None,
                       "samples_per_s": round(steps * batch / seconds, 1) if seconds else None,
                       "device": (torch.cuda.get_device_name() if pl_module.device.type == "cuda"
                                  else "cpu"),
                       "devices": trainer.world_size, "precision": str(trainer.precision)}


class WallClockStop(Callback):
    """Stop after ``minutes`` of this invocation (Lightning's ``max_time`` counts resumed time)."""

    def __init__(self, minutes: float) -> None:
        self.limit = minutes * 60.0
        self.start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the clock."""
        self.start = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        """Ask the trainer to stop once the time is up."""
        if time.monotonic() - self.start > self.limit:
            trainer.should_stop = True


class ExportModel(Callback):
    """Write the EMA weights as a model directory whenever a checkpoint is saved."""

    def __init__(self, out: Path, scaling: CrysTensScaling, data: dict[str, Any]) -> None:
        self.out, self.scaling, self.data = out, scaling, data

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Export on the main process only."""
        if trainer.is_global_zero:
            export_model(pl_module, self.scaling, self.data | {"step": int(trainer.global_step)},
                         self.out)


def export_model(module: DiffusionModule, scaling: CrysTensScaling, data: dict[str, Any],
                 out: Path) -> Path:
    """Save the module's EMA weights as a model directory."""
    model = DiffusionModel(module.ema.module, module.cfg.unet, module.cfg.diffusion, scaling, data,
                           stage=module.cfg.stage)
    return model.save_pretrained(out)


class TensorBatches(torch.utils.data.Dataset):
    """Encoded tensors held in memory, handed out a whole batch at a time.

    ``__getitems__`` makes the DataLoader gather a batch with one index operation instead of
    stacking ``batch_size`` single tensors (the per-step cost that bounded GPU throughput).
    """

    def __init__(self, tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.tensors[i]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return self.tensors[torch.as_tensor(indices)]


def export_checkpoint(run: str | Path, out: str | Path, *, step: int | None = None) -> Path:
    """Export the EMA weights of one of a run's checkpoints as a model directory.

    This is how a checkpoint is selected on validation loss (``logs/*/metrics.csv``) or compared
    at an equal step budget, instead of taking the run's last state.

    Args:
        run: run directory of `crysgen train diffusion`.
        out: model directory to write.
        step: the checkpoint ``checkpoints/stepNNNNNNN.ckpt`` to export (None: ``last.ckpt``).

    Raises:
        CrysgenError: if the run or the checkpoint does not exist.
    """
    run = Path(run)
    name = "last.ckpt" if step is None else f"step{step:07d}.ckpt"
    ckpt = run / "checkpoints" / name
    if not ckpt.is_file():
        have = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) if run.is_dir() else []
        raise CrysgenError(f"no checkpoint {ckpt}" + (f" (have: {', '.join(have)})" if have else ""))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    module = DiffusionModule(state["hyper_parameters"]["config"])
    module.load_state_dict(state["state_dict"])
    data = json.loads((run / "model" / "config.json").read_text())["data"] if (
        run / "model" / "config.json").is_file() else {}
    return export_model(module, CrysTensScaling.load(run / "scaling.json"),
                        data | {"step": int(state["global_step"])}, Path(out))


def _init_model(init: str | Path, config: DiffusionTrainConfig, crystals: CrystalSet,
                fingerprint: dict[str, Any]) -> DiffusionModel:
    model = DiffusionModel.from_pretrained(init)
    if model.unet_config != config.unet or model.stage != config.stage:
        raise CrysgenError(f"--init {init}: its network or stage config differs from this run's")
    if model.data.get("sha256") != fingerprint["sha256"]:
        import warnings

        warnings.warn(f"--init {init} was trained on other data ({model.data.get('name')}); "
                      "its CrysTens scaling is refitted on this data", stacklevel=3)
    return model


def _as_batch(batch: torch.Tensor) -> torch.Tensor:
    return batch


def _loader(crystals: CrystalSet, scaling: CrysTensScaling, batch_size: int, *,
            shuffle: bool) -> torch.utils.data.DataLoader:
    ds = TensorBatches(torch.from_numpy(encode(crystals, scaling)))
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle,
                                       drop_last=shuffle and len(ds) > batch_size,
                                       collate_fn=_as_batch)


def train_diffusion(
    data: str | Path,
    out: str | Path,
    *,
    config: DiffusionTrainConfig | None = None,
    val: str | Path | None = None,
    max_steps: int | None = None,
    devices: int = 1,
    resume: bool = False,
    accelerator: str = "auto",
    progress: bool = True,
    max_minutes: float | None = None,
    init: str | Path | None = None,
) -> Path:
    """Train a CrysTens diffusion model; returns the exported model directory.

    Args:
        data: training CrystalSet (.npz).
        out: run directory.
        config: run settings (defaults if None); on resume the saved config is used.
        val: optional validation CrystalSet; its loss (EMA weights) is logged at checkpoints.
        max_steps: overrides ``config.optim.max_steps``.
        devices: GPUs (DDP when > 1) or CPU processes.
        resume: continue from ``out/checkpoints/last.ckpt`` at the same step, optimiser and EMA.
        accelerator: Lightning accelerator ("auto", "cpu", "gpu").
        progress: show the progress bar.
        max_minutes: stop (checkpoint and export) after this wall time, whatever the step.
        init: warm start: a model directory whose (EMA) weights initialise both the network and
            its EMA copy; the optimiser starts afresh at step 0. Its network config must equal
            this run's. Recorded in the exported model's data fingerprint.

    Raises:
        CrysgenError: for a missing file, or resume without a checkpoint.
    """
    from lightning.pytorch.loggers import CSVLogger

    from crysgen.training.config import load_config

    out = Path(out)
    last = out / "checkpoints" / "last.ckpt"
    if resume:
        if not last.is_file():
            raise CrysgenError(f"--resume: no checkpoint at {last}")
        config = load_config(out / "config.yaml")
    elif last.exists():
        raise CrysgenError(f"{out} already holds a run; pass --resume to continue it or use a new --out")
    config = config or DiffusionTrainConfig()
    if max_steps is not None:
        config = replace(config, optim=replace(config.optim, max_steps=max_steps))
    crystals = CrystalSet.load(data)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    scaling_path = out / "scaling.json"
    scaling = CrysTensScaling.load(scaling_path) if resume else CrysTensScaling.fit(crystals)
    scaling.save(scaling_path)
    fingerprint = data_fingerprint(crystals, Path(data).name)
    if init is not None and resume:
        raise CrysgenError("--init starts a new run from a model's weights; it cannot be combined "
                           "with --resume")
    init_model = _init_model(init, config, crystals, fingerprint) if init is not None else None
    if init_model is not None:
        fingerprint["init"] = {"model": str(init), "step": init_model.data.get("step"),
                               **({"init": init_model.data["init"]} if "init" in init_model.data else {})}
    L.seed_everything(config.optim.seed, workers=True)
    loader = _loader(crystals, scaling, config.optim.batch_size, shuffle=True)
    val_loader = None
    if val is not None:
        val_loader = _loader(CrystalSet.load(val), scaling, config.optim.batch_size, shuffle=False)
    use_gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    precision = config.optim.precision
    if precision == "auto":
        precision = "bf16-mixed" if use_gpu else "32-true"
    o = config.optim
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", every_n_train_steps=o.checkpoint_every,
                           save_last=True, save_top_k=-1, filename="step{step:07d}",
                           auto_insert_metric_name=False)
    speed = Throughput()
    trainer = L.Trainer(  # validation only when a val set is given
        max_steps=o.max_steps,
        accelerator="gpu" if use_gpu else "cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        precision=precision,
        callbacks=[ckpt, speed, ExportModel(out / "model", scaling, fingerprint),
                   *([WallClockStop(max_minutes)] if max_minutes else [])],
        logger=CSVLogger(out, name="logs"),  # a resumed run logs to the next version_N
        log_every_n_steps=o.log_every,
        gradient_clip_val=o.grad_clip or None,
        enable_progress_bar=progress,
        val_check_interval=o.checkpoint_every if val_loader else None,  # steps, across epochs
        check_val_every_n_epoch=None if val_loader else 1,
        limit_val_batches=8 if val_loader else 0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    module = DiffusionModule(config.to_dict())
    if init_model is not None:
        module.unet.load_state_dict(init_model.unet.state_dict())
        module.ema.module.load_state_dict(init_model.unet.state_dict())
    trainer.fit(module, loader, val_loader, ckpt_path=str(last) if resume else None)
    # a time-limited stop must resume from where it stopped; saving also exports the model
    # directory through ExportModel
    trainer.save_checkpoint(last)
    if trainer.is_global_zero:  # one entry per invocation, so a resumed run keeps its history
        summary_path = out / "train_summary.json"
        history = json.loads(summary_path.read_text()).get("runs", []) if summary_path.exists() else []
        history.append(speed.result | {"end_step": int(trainer.global_step)})
        write_text_atomic(summary_path, json.dumps(
            {"global_step": int(trainer.global_step), "data": fingerprint,
             "final_train_loss": float(np.asarray(trainer.callback_metrics.get("train_loss", np.nan))),
             "runs": history}, indent=1) + "\n")
    return out / "model"
