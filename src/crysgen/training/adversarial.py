"""`crysgen train gan|wgan`: Lightning training of the paper's adversarial baselines.

One iteration is one generator update, as in the authors' Keras loops (seed code §3.1–3.2):

* GAN: a discriminator update on a real batch (label 1), a second one on a generated batch
  (label 0), then a generator update on fresh noise through the discriminator (label 1): three
  optimiser steps. Each iteration reads one real batch.
* WGAN-GP: ``n_critic`` critic updates, each on a fresh real batch and fresh noise, with the
  gradient penalty (weight λ) on random interpolates; then one generator update:
  ``n_critic + 1`` optimiser steps.

Lightning's manual optimisation runs these; its ``global_step`` counts optimiser steps, so
checkpoint files are named after optimiser steps while ``max_steps``, ``checkpoint_every``, the
logs (``iteration`` column), ``train_summary.json`` and exported models count iterations.
The run directory is described in :mod:`crysgen.training.runs`; ``model/`` holds the generator.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from crysgen.errors import CrysgenError
from crysgen.models.adversarial import build_critic, build_generator
from crysgen.objectives.adversarial import (
    bce_loss,
    gradient_penalty,
    wasserstein_critic_loss,
    wasserstein_estimate,
    wasserstein_generator_loss,
)
from crysgen.pipelines.adversarial import AdversarialModel
from crysgen.representations.crystens import CrysTensScaling
from crysgen.training.config import AdversarialTrainConfig
from crysgen.training.runs import fit, open_run, tensor_loader

if TYPE_CHECKING:
    from lightning.pytorch.core.optimizer import LightningOptimizer


class AdversarialModule(L.LightningModule):
    """Generator + discriminator (GAN) or critic (WGAN-GP), trained with manual optimisation."""

    critic_batches: torch.Tensor  # a registered buffer

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg = AdversarialTrainConfig.from_dict(config)
        self.automatic_optimization = False
        self.generator = build_generator(self.cfg.net)
        self.critic = build_critic(self.cfg.net)
        # real batches consumed (one per critic update); saved with the checkpoint, so a resumed
        # WGAN run keeps its place in the n_critic cycle
        self.register_buffer("critic_batches", torch.zeros((), dtype=torch.long))

    @property
    def steps_per_iteration(self) -> int:
        """Optimiser steps per generator update."""
        return 3 if self.cfg.net.kind == "gan" else self.cfg.optim.n_critic + 1

    def iteration(self, trainer: L.Trainer) -> int:
        """Generator updates done."""
        return int(trainer.global_step) // self.steps_per_iteration

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.net.latent_dim, device=self.device)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        """One GAN iteration, or one WGAN-GP critic update (plus the generator's every n_critic)."""
        real = batch.unsqueeze(1)  # (B, 1, 4, 64, 64): the Keras (64, 64, 4, 1) volume
        if self.cfg.net.kind == "gan":
            self._gan_iteration(real)
        else:
            self._wgan_step(real)

    def _optimizers(self) -> tuple[LightningOptimizer, LightningOptimizer]:
        """The generator's and the critic's optimisers (Lightning gives several as a list)."""
        opts = self.optimizers()
        assert isinstance(opts, list)  # configure_optimizers returns two
        opt_g, opt_c = opts
        return opt_g, opt_c

    def _step(self, opt: Any, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()

    def _gan_iteration(self, real: torch.Tensor) -> None:
        opt_g, opt_d = self._optimizers()
        b = len(real)
        d_real = self.critic(real)
        loss_real = bce_loss(d_real, real=True)
        self._step(opt_d, loss_real)
        with torch.no_grad():
            fake = self.generator(self._noise(b))
        d_fake = self.critic(fake)
        loss_fake = bce_loss(d_fake, real=False)
        self._step(opt_d, loss_fake)
        loss_g = bce_loss(self.critic(self.generator(self._noise(b))), real=True)
        self._step(opt_g, loss_g)
        self.critic_batches += 1
        self._log({"d_loss_real": loss_real, "d_loss_fake": loss_fake, "g_loss": loss_g,
                   "d_real_prob": torch.sigmoid(d_real.float()).mean(),
                   "d_fake_prob": torch.sigmoid(d_fake.float()).mean()})

    def _wgan_step(self, real: torch.Tensor) -> None:
        opt_g, opt_c = self._optimizers()
        o = self.cfg.optim
        with torch.no_grad():
            fake = self.generator(self._noise(len(real)))
        s_real, s_fake = self.critic(real), self.critic(fake)
        gp = gradient_penalty(self.critic, real, fake)
        loss_c = wasserstein_critic_loss(s_real, s_fake) + o.gp_weight * gp
        self._step(opt_c, loss_c)
        self.critic_batches += 1
        if int(self.critic_batches) % o.n_critic:
            return
        loss_g = wasserstein_generator_loss(self.critic(self.generator(self._noise(len(real)))))
        self._step(opt_g, loss_g)
        self._log({"critic_loss": loss_c, "gradient_penalty": gp, "g_loss": loss_g,
                   "wasserstein_estimate": wasserstein_estimate(s_real, s_fake)})

    def _log(self, values: dict[str, torch.Tensor]) -> None:
        """Log once per iteration (Lightning keeps every ``log_every``-th) with its iteration."""
        it = int(self.trainer.global_step) // self.steps_per_iteration
        self.log_dict({k: v.detach().float() for k, v in values.items()}, on_step=True,
                      prog_bar=False)
        self.log("iteration", float(it), on_step=True)
        self.log("g_loss_bar", values["g_loss"].detach().float(), prog_bar=True, logger=False)

    def configure_optimizers(self) -> Any:
        """Adam for each network, with the authors' learning rate and betas."""
        o = self.cfg.optim

        def adam(params: Any) -> torch.optim.Adam:
            return torch.optim.Adam(params, lr=o.lr, betas=o.betas, eps=o.eps)

        return [adam(self.generator.parameters()), adam(self.critic.parameters())]


def export_model(module: AdversarialModule, scaling: CrysTensScaling, data: dict[str, Any],
                 out: Path) -> Path:
    """Save the module's generator as a model directory."""
    return AdversarialModel(module.generator, module.cfg.net, scaling, data).save_pretrained(out)


def train_adversarial(
    data: str | Path,
    out: str | Path,
    *,
    kind: str | None = None,
    config: AdversarialTrainConfig | None = None,
    max_steps: int | None = None,
    devices: int = 1,
    resume: bool = False,
    accelerator: str = "auto",
    progress: bool = True,
    max_minutes: float | None = None,
) -> Path:
    """Train a CrysTens GAN or WGAN-GP; returns the exported model directory.

    Args:
        data: training CrystalSet (.npz).
        out: run directory.
        kind: "gan" or "wgan"; with ``config`` None, the authors' settings for it; otherwise
            it must match ``config.net.kind`` (and the saved config on resume).
        config: run settings; on resume the saved config is used.
        max_steps: overrides ``config.optim.max_steps`` (generator updates).
        devices: GPUs (DDP when > 1) or CPU processes.
        resume: continue from ``out/checkpoints/last.ckpt``.
        accelerator: Lightning accelerator ("auto", "cpu", "gpu").
        progress: show the progress bar.
        max_minutes: stop (checkpoint and export) after this wall time.

    Raises:
        CrysgenError: for a missing file, a kind that does not match the config, or resume
            without a checkpoint.
    """
    if config is None and kind is not None and not resume:
        config = AdversarialTrainConfig.default(kind)

    def same_kind(c: AdversarialTrainConfig) -> None:
        if kind is not None and c.net.kind != kind:
            raise CrysgenError(f"this is a {kind!r} run but its config says kind {c.net.kind!r}")

    run = open_run(data, out, config, AdversarialTrainConfig, resume=resume, max_steps=max_steps,
                   validate=same_kind)
    o = run.config.optim
    L.seed_everything(o.seed, workers=True)
    loader = tensor_loader(run.crystals, run.scaling, o.batch_size, shuffle=True)
    module = AdversarialModule(run.config.to_dict())
    k = module.steps_per_iteration
    scaling = run.scaling
    # checkpoints hold the state after the iteration's updates, which is what resume needs
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    return fit(run, module, loader, max_iterations=o.max_steps, checkpoint_every=o.checkpoint_every,
               log_every=o.log_every, precision=o.precision, steps_per_iteration=k,
               batches_per_iteration=o.n_critic,
               samples_per_iteration=o.batch_size * o.n_critic,
               export=lambda m, d, p: export_model(m, scaling, d, p), devices=devices,
               accelerator=accelerator, progress=progress, max_minutes=max_minutes)
