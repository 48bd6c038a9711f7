"""`crysgen train diffusion`: Lightning training of the CrysTens denoiser, with EMA and resume.

The run directory is described in :mod:`crysgen.training.runs`; its ``model/`` holds the EMA
weights, exported at every checkpoint and at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.models.diffusion import DiffusionBundle
from crysgen.models.unet2d import build_unet
from crysgen.objectives.cascade import stage_loss
from crysgen.objectives.diffusion import to_model_range
from crysgen.objectives.diffusion_edm import edm_loss
from crysgen.representations.crystens import CrysTensScaling
from crysgen.training.config import DiffusionTrainConfig
from crysgen.training.runs import (
    adamw_with_warmup,
    checkpoint_data,
    ema_copy,
    fit,
    open_run,
    read_checkpoint,
    tensor_loader,
)

if TYPE_CHECKING:
    from diffusers.models.unets.unet_2d import UNet2DModel


class DiffusionModule(L.LightningModule):
    """Denoiser + objective (DDPM or EDM) + EMA copy of the weights (the one used for sampling)."""

    loss_weight: torch.Tensor | None  # a registered buffer

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg = DiffusionTrainConfig.from_dict(config)
        self.unet = build_unet(self.cfg.unet)
        self.ema = ema_copy(self.unet, self.cfg.optim.ema_decay, warmup=self.cfg.optim.ema_warmup)
        self.scheduler = self.cfg.diffusion.scheduler()
        weight = self.cfg.diffusion.weight_map(self.cfg.crystens)
        # a buffer follows the module to its device; not saved (the config rebuilds it)
        self.register_buffer("loss_weight", None if weight is None else torch.from_numpy(weight),
                             persistent=False)

    def loss(self, unet: torch.nn.Module, batch: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """The objective's loss of ``unet`` on a batch of [0, 1] tensors, (B, 4, size, size)."""
        d, x0 = self.cfg.diffusion, to_model_range(batch)
        if d.objective == "edm":
            return edm_loss(unet, self.scheduler, x0, p_mean=d.p_mean, p_std=d.p_std,
                            weight=self.loss_weight, generator=generator)
        return stage_loss(unet, self.scheduler, x0, self.cfg.stage, generator=generator,
                          weight=self.loss_weight)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """One optimiser step's loss on a batch of [0, 1] tensors, (B, 4, size, size)."""
        loss = self.loss(self.unet, batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, sync_dist=False)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        """EMA model's loss on validation tensors (the same noise and noise levels every time)."""
        gen = torch.Generator(device="cpu").manual_seed(batch_idx)
        loss = self.loss(self.ema.module, batch, generator=gen)
        self.log("val_loss", loss, prog_bar=True, sync_dist=True)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimiser step, then the EMA update.

        Inside the step, so that a checkpoint saved at this step (by a callback's
        ``on_train_batch_end``, which runs before the module's) holds the EMA of every step it counts.
        """
        super().optimizer_step(*args, **kwargs)
        self.ema.update_parameters(self.unet)

    def iteration(self, trainer: L.Trainer) -> int:
        """Optimiser steps taken (one per iteration)."""
        return int(trainer.global_step)

    def configure_optimizers(self) -> Any:
        """AdamW with linear warm-up."""
        return adamw_with_warmup(self.unet.parameters(), self.cfg.optim)


def export_model(module: DiffusionModule, scaling: CrysTensScaling, data: dict[str, Any],
                 out: Path) -> Path:
    """Save the module's EMA weights as a model directory."""
    unet = cast("UNet2DModel", module.ema.module)  # AveragedModel types its copy as a Module
    model = DiffusionBundle(unet, module.cfg.unet, module.cfg.diffusion, scaling, data,
                            stage=module.cfg.stage)
    return model.save_pretrained(out)


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
    state = read_checkpoint(run, step)
    module = DiffusionModule(state["hyper_parameters"]["config"])
    module.load_state_dict(state["state_dict"])
    data = checkpoint_data(run, int(state["global_step"]))
    return export_model(module, CrysTensScaling.load(Path(run) / "scaling.json"), data, Path(out))


def _init_model(init: str | Path, config: DiffusionTrainConfig, crystals: CrystalSet,
                fingerprint: dict[str, Any]) -> DiffusionBundle:
    model = DiffusionBundle.from_pretrained(init)
    if (model.unet_config != config.unet or model.stage != config.stage
            or model.scaling.layout != config.crystens):
        raise CrysgenError(f"--init {init}: its network, stage or CrysTens layout differs from this run's")
    if model.data.get("sha256") != fingerprint["sha256"]:
        import warnings

        warnings.warn(f"--init {init} was trained on other data ({model.data.get('name')}); "
                      "its CrysTens scaling is refitted on this data", stacklevel=3)
    return model


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
        config: run settings (defaults if None); on resume the saved config is used. Its
            ``crystens`` layout (site rows S, element codes) is the tensors' shape; the scaling
            fitted on ``data`` records it.
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
    run = open_run(data, out, config, DiffusionTrainConfig, resume=resume, max_steps=max_steps, init=init,
                   fit_scaling=lambda cs, cfg: CrysTensScaling.fit(cs, layout=cfg.crystens))
    config, fingerprint = run.config, run.fingerprint
    if run.scaling.layout != config.crystens:  # a run resumed across a layout change
        raise CrysgenError(f"{out}: scaling.json's CrysTens layout differs from config.yaml's")
    init_model = _init_model(init, config, run.crystals, fingerprint) if init is not None else None
    if init_model is not None:
        fingerprint["init"] = {"model": str(init), "step": init_model.data.get("step"),
                               **({"init": init_model.data["init"]} if "init" in init_model.data else {})}
    o = config.optim
    L.seed_everything(o.seed, workers=True)
    loader = tensor_loader(run.crystals, run.scaling, o.batch_size, shuffle=True)
    val_loader = None
    if val is not None:
        val_loader = tensor_loader(CrystalSet.load(val), run.scaling, o.batch_size, shuffle=False)
    module = DiffusionModule(config.to_dict())
    if init_model is not None:
        module.unet.load_state_dict(init_model.unet.state_dict())
        module.ema.module.load_state_dict(init_model.unet.state_dict())
    scaling = run.scaling
    return fit(run, module, loader, max_iterations=o.max_steps, checkpoint_every=o.checkpoint_every,
               log_every=o.log_every, precision=o.precision, samples_per_iteration=o.batch_size,
               export=lambda m, d, p: export_model(m, scaling, d, p), devices=devices,
               accelerator=accelerator, progress=progress, max_minutes=max_minutes,
               val_loader=val_loader, gradient_clip_val=o.grad_clip or None)
