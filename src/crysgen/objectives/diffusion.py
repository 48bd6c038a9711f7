"""Training objectives of the CrysTens denoiser, on diffusers' schedulers: DDPM and EDM.

Tensors in [0, 1] are mapped to [-1, 1]. ``objective: ddpm`` (the default): a timestep
t ~ U{0..T-1} and noise eps ~ N(0, I) give ``x_t = scheduler.add_noise(x0, eps, t)``; the network
predicts eps, v or x0 (``prediction``) and the loss is the mean squared error to that target.
``objective: edm`` (Karras et al. 2022): see :mod:`crysgen.objectives.diffusion_edm`.

Either loss can weigh the regions of the tensor differently (``region_weights``: the attribute
strips, the element-code strips, the pair block and the always-zero corner; see
:func:`crysgen.representations.crystens.layout.region_map`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# the objective's settings are the model's (saved in config.json): they live with the model
from crysgen.models.diffusion import DiffusionConfig as DiffusionConfig

if TYPE_CHECKING:
    import torch
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler


def weighted_mean(err: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``err`` (B, C, H, W) with per-entry weights (H, W) (None: the plain mean).

    Normalised by the weights' sum, so uniform weights give the plain mean.
    """
    if weight is None:
        return err.mean()
    w = weight.to(err.device, err.dtype)
    return (err * w).sum() / (w.sum() * err.shape[0] * err.shape[1])


def to_model_range(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return x01 * 2 - 1


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1) / 2).clamp(0, 1)


def diffusion_loss(
    model: torch.nn.Module,
    scheduler: DDPMScheduler,
    x0: torch.Tensor,
    *,
    cond: torch.Tensor | None = None,
    class_labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error of the network's prediction at a random timestep.

    Args:
        model: a diffusers UNet2DModel (called as ``model(x, t).sample``).
        scheduler: the training scheduler (its ``prediction_type`` sets the target).
        x0: clean tensors in [-1, 1], (B, C, H, W).
        cond: extra input channels (B, C', H, W) concatenated to x_t (cascade SR stage).
        class_labels: (B,) integers for the network's class embedding (the SR stage's
            conditioning noise level).
        generator: random source for t and the noise.
        weight: (H, W) loss weight per entry (:meth:`DiffusionConfig.weight_map`); None: plain MSE.

    Returns:
        Scalar loss.
    """
    import torch

    b = x0.shape[0]
    gen_device = generator.device if generator is not None else x0.device
    noise = torch.randn(x0.shape, generator=generator, device=gen_device).to(x0.device, x0.dtype)
    t = torch.randint(0, scheduler.config["num_train_timesteps"], (b,), generator=generator,
                      device=gen_device).to(x0.device)
    # diffusers annotates timesteps as torch.IntTensor (a legacy type); any integer tensor works
    x_t = scheduler.add_noise(x0, noise, t)  # type: ignore[arg-type]
    kind = scheduler.config["prediction_type"]
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(x0, noise, t)  # type: ignore[arg-type]  # as add_noise
    else:
        target = x0
    inp = x_t if cond is None else torch.cat([x_t, cond], dim=1)
    pred = model(inp, t, class_labels=class_labels).sample
    return weighted_mean((pred.float() - target.float()) ** 2, weight)
