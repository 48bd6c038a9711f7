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

The speed options of :class:`~crysgen.training.config.AdversarialOptimConfig` (channels-last
memory format, ``torch.compile``, fused Adam, WGAN-GP micro-batches) change how an update is
computed, not what: ``tests/training/test_adversarial_speed.py`` holds each to the eager
whole-batch update.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch import nn
from torch.nn.utils import parametrize

from crysgen.errors import CrysgenError
from crysgen.models.adversarial import AdversarialBundle, build_critic, build_generator
from crysgen.objectives.adversarial import (
    bce_loss,
    gradient_penalty,
    wasserstein_critic_loss,
    wasserstein_estimate,
    wasserstein_generator_loss,
)
from crysgen.representations.crystens import CrysTensScaling
from crysgen.training.config import AdversarialTrainConfig
from crysgen.training.runs import checkpoint_data, fit, open_run, read_checkpoint, tensor_loader

if TYPE_CHECKING:
    from lightning.pytorch.core.optimizer import LightningOptimizer


Forward = Callable[[torch.Tensor], torch.Tensor]
"""A network's forward: the module itself, or its ``torch.compile`` wrapper."""


RECOMPILE_LIMIT = 128
"""Compiled variants per code object that :func:`compiled` allows (every layer shape of both
networks, with and without grad)."""


def compiled(net: nn.Module, mode: str | None) -> Forward:
    """``net`` itself (mode None) or ``torch.compile(net, mode=mode)``.

    The weight parametrisations (spectral norm) stay outside the compiled graphs: Inductor's
    graph keeps the power-iteration vectors themselves (not their copies, as eager does) for
    the backward pass, so a second forward before it (the critic's fake batch, the gradient
    penalty's eager pass) updated them in place and the backward failed ("modified by an
    inplace operation"). Eager parametrisations compute the same weights; the layers that use
    them stay compiled.

    Those graph breaks leave one compiled frame per layer call, and the frames of one layer class
    (the 21 ``ChannelLayerNorm`` of the WGAN-GP, each of its own shape, with and without grad)
    share one code object, which dynamo recompiles at most ``recompile_limit`` times (8 by
    default) before running the rest eagerly; the limit is raised to :data:`RECOMPILE_LIMIT`.
    """
    if mode is None:
        return net
    dynamo = torch._dynamo.config
    dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
    dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT)
    for chain in net.modules():
        if isinstance(chain, parametrize.ParametrizationList):  # a weight's parametrisations
            for p in chain:
                p.forward = torch.compiler.disable(p.forward)
    return torch.compile(net, mode=mode)


def adam(params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float], eps: float, *,
         fused: bool) -> torch.optim.Adam:
    """Adam; with ``fused``, its fused kernels where the parameters' device has them.

    Falls back to the default implementation (with a warning) where ``fused=True`` is refused.
    """
    params = list(params)
    if fused:
        try:
            return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, fused=True)
        except RuntimeError as exc:
            warnings.warn(f"fused Adam is not supported here ({exc}); using the default Adam",
                          stacklevel=2)
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)


def channels_last(net: nn.Module) -> nn.Module:
    """``net`` with its 5-D weights (Conv3d, ConvTranspose3d) in ``channels_last_3d`` format.

    A weight with a single input or output channel (the GAN generator's first transposed
    convolution, 1 -> 256 channels, and its last convolution) stays contiguous: for such a weight
    Inductor's fake convolution backward predicts a channels-last gradient where cuDNN returns a
    contiguous one, and the compiled step fails its stride check (seen on an H200 in
    ``benchmarks/results/adversarial_step_speed_gan_compile_log.json``; PyTorch issue 197517).
    """
    # Module.to takes memory_format at run time; its type stubs do not list it
    net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    for p in net.parameters():
        if p.dim() == 5 and 1 in p.shape[:2]:
            p.data = p.data.contiguous()
    return net


def match_state_layout(optimizer: torch.optim.Optimizer) -> int:
    """Give each state tensor of ``optimizer`` its parameter's strides (values unchanged).

    ``Optimizer.load_state_dict`` keeps the strides the state was saved with, so a checkpoint
    written under another memory-format rule (a weight channels-last then, contiguous now) leaves
    moments laid out unlike their parameters, and fused Adam refuses them on CUDA ("must have same
    dtype, device, and layout"; a WGAN-GP resume failed so on an H200).

    Returns:
        How many state tensors were rewritten.
    """
    changed = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
                    changed += 1
    return changed


class PowerIterationReplay:
    """Rewinds the spectral-norm power-iteration vectors of networks to their state at creation.

    In training mode every forward of a spectrally normalised layer runs one power iteration
    (updating its ``_u`` and ``_v`` buffers) before it divides the weight by σ. Rewinding before
    each micro-batch's forwards makes every micro-batch run the same iterations from the same
    state as the whole batch does, so it sees the same σ; after the last micro-batch the buffers
    hold what the whole-batch update would leave.

    Args:
        nets: the networks (their spectral-norm parametrisations are found by their buffers).
    """

    def __init__(self, *nets: nn.Module) -> None:
        self.buffers = [b for net in nets for name, b in net.named_buffers()
                        if name.rsplit(".", 1)[-1] in ("_u", "_v")]
        self.start = [b.clone() for b in self.buffers]

    @torch.no_grad()
    def rewind(self) -> None:
        """Set every power-iteration vector back to its state at creation."""
        for b, s in zip(self.buffers, self.start, strict=True):
            b.copy_(s)


class AdversarialModule(L.LightningModule):
    """Generator + discriminator (GAN) or critic (WGAN-GP), trained with manual optimisation."""

    critic_batches: torch.Tensor  # a registered buffer
    _gen: Forward  # the generator, or its torch.compile wrapper
    _critic: Forward  # the critic, or its torch.compile wrapper

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg = AdversarialTrainConfig.from_dict(config)
        self.automatic_optimization = False
        self.generator = build_generator(self.cfg.net)
        self.critic = build_critic(self.cfg.net)
        if self.cfg.optim.channels_last:
            channels_last(self.generator)
            channels_last(self.critic)
        # real batches consumed (one per critic update); saved with the checkpoint, so a resumed
        # WGAN run keeps its place in the n_critic cycle
        self.register_buffer("critic_batches", torch.zeros((), dtype=torch.long))
        # compiled forwards kept outside the module tree, so state_dict keys stay plain
        mode = self.cfg.optim.compile_mode
        object.__setattr__(self, "_gen", compiled(self.generator, mode))
        object.__setattr__(self, "_critic", compiled(self.critic, mode))

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
        if self.cfg.optim.channels_last:
            real = real.contiguous(memory_format=torch.channels_last_3d)
        if self.cfg.net.kind == "gan":
            self._gan_iteration(real)
        else:
            self._wgan_step(real)

    def _micro_batches(self, n: int) -> int:
        """Micro-batch size for a batch of ``n`` (``n`` itself when micro-batching is off)."""
        m = self.cfg.optim.micro_batch
        return m if 0 < m < n else n

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
        values = self.gan_update(real, opt_g, opt_d)
        self.critic_batches += 1
        self._log(values)

    def gan_update(self, real: torch.Tensor, opt_g: Any, opt_d: Any) -> dict[str, torch.Tensor]:
        """One vanilla-GAN iteration (the authors' three optimiser steps).

        A discriminator step on the real batch, one on a fake batch, then a generator step.

        Args:
            real: real tensors (B, 1, 4, 64, 64) in [0, 1].
            opt_g: the generator's optimiser.
            opt_d: the discriminator's optimiser.

        Returns:
            The losses and the discriminator's mean probabilities (scalars), by log name.
        """
        b = len(real)
        d_real = self._critic(real)
        loss_real = bce_loss(d_real, real=True)
        self._step(opt_d, loss_real)
        with torch.no_grad():
            fake = self._gen(self._noise(b))
        d_fake = self._critic(fake)
        loss_fake = bce_loss(d_fake, real=False)
        self._step(opt_d, loss_fake)
        loss_g = bce_loss(self._critic(self._gen(self._noise(b))), real=True)
        self._step(opt_g, loss_g)
        return {"d_loss_real": loss_real, "d_loss_fake": loss_fake, "g_loss": loss_g,
                "d_real_prob": torch.sigmoid(d_real.float()).mean(),
                "d_fake_prob": torch.sigmoid(d_fake.float()).mean()}

    def _wgan_step(self, real: torch.Tensor) -> None:
        opt_g, opt_c = self._optimizers()
        loss_c, gp, w = self.critic_update(real, opt_c)
        self.critic_batches += 1
        if int(self.critic_batches) % self.cfg.optim.n_critic:
            return
        loss_g = self.generator_update(len(real), opt_g)
        self._log({"critic_loss": loss_c, "gradient_penalty": gp, "g_loss": loss_g,
                   "wasserstein_estimate": w})

    def critic_update(self, real: torch.Tensor, opt_c: Any) -> tuple[torch.Tensor, ...]:
        """One WGAN-GP critic update on a real batch (B, 1, 4, 64, 64), in micro-batches if set.

        Args:
            real: real tensors (B, 1, 4, 64, 64) in [0, 1].
            opt_c: the critic's optimiser.

        Returns:
            The critic loss, the gradient penalty and the Wasserstein estimate (scalars).
        """
        m = self._micro_batches(len(real))
        if m < len(real):
            return self._critic_update_micro(real, opt_c, m)
        return self._critic_update(real, opt_c)

    def generator_update(self, b: int, opt_g: Any) -> torch.Tensor:
        """One WGAN-GP generator update on ``b`` noise vectors, in micro-batches if set; its loss."""
        m = self._micro_batches(b)
        return self._generator_update_micro(b, opt_g, m) if m < b else self._generator_update(b, opt_g)

    def _critic_update(self, real: torch.Tensor, opt_c: Any) -> tuple[torch.Tensor, ...]:
        """One critic update on the whole batch (B, 1, 4, 64, 64); (loss, penalty, W estimate)."""
        with torch.no_grad():
            fake = self._gen(self._noise(len(real)))
        s_real, s_fake = self._critic(real), self._critic(fake)
        # eager critic: a compiled graph has no double backward
        gp = gradient_penalty(self.critic, real, fake)
        loss_c = wasserstein_critic_loss(s_real, s_fake) + self.cfg.optim.gp_weight * gp
        self._step(opt_c, loss_c)
        return loss_c, gp, wasserstein_estimate(s_real, s_fake)

    def _critic_update_micro(self, real: torch.Tensor, opt_c: Any, m: int) -> tuple[torch.Tensor, ...]:
        """:meth:`_critic_update` in micro-batches of ``m``, gradients accumulated.

        The noise (B, latent) and the penalty's mixing weights u (B,) are drawn for the whole
        batch, as the whole-batch update draws them; each micro-batch's losses are weighted by its
        share of the batch, so the summed gradients and losses are the whole batch's means.
        Returns the detached (loss, penalty, W estimate) of the whole batch.
        """
        b = len(real)
        z = self._noise(b)
        u = torch.rand(b).to(real.device)  # as gradient_penalty draws it
        g_replay, c_replay = PowerIterationReplay(self.generator), PowerIterationReplay(self.critic)
        totals = torch.zeros(3, device=real.device)
        opt_c.zero_grad(set_to_none=True)
        for r, zi, ui in zip(real.split(m), z.split(m), u.split(m), strict=True):
            share = len(r) / b
            g_replay.rewind()
            with torch.no_grad():
                fake = self._gen(zi)
            c_replay.rewind()
            s_real, s_fake = self._critic(r), self._critic(fake)
            gp = gradient_penalty(self.critic, r, fake, ui)
            loss = wasserstein_critic_loss(s_real, s_fake) + self.cfg.optim.gp_weight * gp
            self.manual_backward(loss * share)
            parts = (loss, gp, wasserstein_estimate(s_real, s_fake))
            totals += share * torch.stack([p.detach().float() for p in parts])
        opt_c.step()
        return tuple(totals.unbind())

    def _generator_update(self, b: int, opt_g: Any) -> torch.Tensor:
        """One generator update on ``b`` noise vectors at once; its loss."""
        loss_g = wasserstein_generator_loss(self._critic(self._gen(self._noise(b))))
        self._step(opt_g, loss_g)
        return loss_g

    def _generator_update_micro(self, b: int, opt_g: Any, m: int) -> torch.Tensor:
        """One generator update over ``b`` noise vectors in micro-batches of ``m``; its loss."""
        z = self._noise(b)
        replay = PowerIterationReplay(self.generator, self.critic)
        total = torch.zeros((), device=z.device)
        opt_g.zero_grad(set_to_none=True)
        for zi in z.split(m):
            replay.rewind()
            loss = wasserstein_generator_loss(self._critic(self._gen(zi)))
            self.manual_backward(loss * (len(zi) / b))
            total += loss.detach() * (len(zi) / b)
        opt_g.step()
        return total

    def _log(self, values: dict[str, torch.Tensor]) -> None:
        """Log once per iteration (Lightning keeps every ``log_every``-th) with its iteration."""
        it = int(self.trainer.global_step) // self.steps_per_iteration
        self.log_dict({k: v.detach().float() for k, v in values.items()}, on_step=True,
                      prog_bar=False)
        self.log("iteration", float(it), on_step=True)
        self.log("g_loss_bar", values["g_loss"].detach().float(), prog_bar=True, logger=False)

    def on_train_start(self) -> None:
        """After a resume has restored the optimisers: their moments laid out like the weights."""
        for opt in self.trainer.optimizers:
            match_state_layout(opt)

    def configure_optimizers(self) -> Any:
        """Adam for each network, with the authors' learning rate and betas (fused if asked)."""
        o = self.cfg.optim
        return [adam(net.parameters(), o.lr, o.betas, o.eps, fused=o.fused)
                for net in (self.generator, self.critic)]


def export_model(module: AdversarialModule, scaling: CrysTensScaling, data: dict[str, Any],
                 out: Path) -> Path:
    """Save the module's generator as a model directory."""
    return AdversarialBundle(module.generator, module.cfg.net, scaling, data).save_pretrained(out)


def export_checkpoint(run: str | Path, out: str | Path, *, step: int | None = None) -> Path:
    """Export the generator of one of a GAN / WGAN-GP run's checkpoints as a model directory.

    Args:
        run: run directory of `crysgen train gan|wgan`.
        out: model directory to write.
        step: the checkpoint ``checkpoints/stepNNNNNNN.ckpt`` to export (None: ``last.ckpt``).

    Raises:
        CrysgenError: if the run or the checkpoint does not exist.
    """
    state = read_checkpoint(run, step)
    config = state["hyper_parameters"]["config"]
    # eager: exporting runs no forward, so compiled wrappers would only cost their set-up
    module = AdversarialModule(config | {"optim": config.get("optim", {}) | {"compile": False}})
    module.load_state_dict(state["state_dict"])
    iteration = int(state["global_step"]) // module.steps_per_iteration  # generator updates
    data = checkpoint_data(run, iteration)
    return export_model(module, CrysTensScaling.load(Path(run) / "scaling.json"), data, Path(out))


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
               accelerator=accelerator, progress=progress, max_minutes=max_minutes,
               partial_losses=True)  # discriminator / critic steps leave the generator unused
