"""The Imagen-style two-stage cascade: the training objective of each stage.

A *base* stage learns CrysTens tensors down-sampled to ``low_res`` × ``low_res`` (area average of
2×2 blocks for 64 -> 32). A *super-resolution* (``sr``) stage learns the full 64×64 tensor given
the low-resolution one, up-sampled back to 64×64 (nearest neighbour, so each conditioning pixel
is exactly the mean of its block) and fed as extra input channels. As in Imagen (Saharia et al.
2022, §2.5), the conditioning is corrupted by the forward diffusion at a random level
``t_aug ~ U{0..aug_max·T}`` during training and at a fixed level ``aug_sample·T`` when sampling;
the SR network sees ``t_aug`` through a second timestep embedding (diffusers'
``class_embed_type="timestep"``), so it learns how much to trust its conditioning.
A *single* stage is the ordinary 64×64 model. Which stage a model is, is its
:class:`~crysgen.models.diffusion.StageConfig` (saved in config.json).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crysgen.errors import CrysgenError
from crysgen.models.diffusion import StageConfig
from crysgen.objectives.diffusion import diffusion_loss

if TYPE_CHECKING:
    import torch
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler


def downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Area (block-mean) down-sampling, (B, C, H, W) -> (B, C, size, size)."""
    import torch.nn.functional as F

    return F.interpolate(x, size=(size, size), mode="area")


def upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour up-sampling, (B, C, h, w) -> (B, C, size, size)."""
    import torch.nn.functional as F

    return F.interpolate(x, size=(size, size), mode="nearest")


def augment_condition(
    low: torch.Tensor,
    scheduler: DDPMScheduler,
    t_aug: torch.Tensor,
    size: int,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noise a low-resolution tensor to level ``t_aug`` and up-sample it: the SR conditioning.

    Args:
        low: (B, C, h, w) in [-1, 1].
        scheduler: the schedule whose forward process corrupts it.
        t_aug: (B,) integer noise levels (0 = almost clean).
        size: output side.
        generator: random source of the noise.

    Returns:
        (B, C, size, size).
    """
    import torch

    gen_device = generator.device if generator is not None else low.device
    noise = torch.randn(low.shape, generator=generator, device=gen_device).to(low.device, low.dtype)
    # diffusers annotates timesteps as torch.IntTensor; any int tensor works
    return upsample(scheduler.add_noise(low, noise, t_aug.to(low.device)), size)  # type: ignore[arg-type]


def stage_loss(
    model: torch.nn.Module,
    scheduler: DDPMScheduler,
    x0: torch.Tensor,
    stage: StageConfig,
    *,
    generator: torch.Generator | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The DDPM loss of one stage on a batch of full-size tensors in [-1, 1], (B, C, 64, 64).

    Single: :func:`~crysgen.objectives.diffusion.diffusion_loss` on ``x0`` (with the per-entry
    loss ``weight``, (H, W), if any; the cascade's stages take none). Base: the same on
    ``downsample(x0)``. SR: on ``x0`` with the noise-augmented, up-sampled ``downsample(x0)`` as
    conditioning and its noise level as class label.
    """
    import torch

    if stage.role == "single":
        return diffusion_loss(model, scheduler, x0, generator=generator, weight=weight)
    if weight is not None:
        raise CrysgenError("per-region loss weights apply to single-stage models only")
    low = downsample(x0, stage.low_res)
    if stage.role == "base":
        return diffusion_loss(model, scheduler, low, generator=generator)
    t_max = stage.aug_timestep(scheduler.config["num_train_timesteps"], stage.aug_max)
    gen_device = generator.device if generator is not None else x0.device
    t_aug = torch.randint(0, t_max + 1, (x0.shape[0],), generator=generator, device=gen_device)
    cond = augment_condition(low, scheduler, t_aug, x0.shape[-1], generator=generator)
    return diffusion_loss(model, scheduler, x0, cond=cond, class_labels=t_aug.to(x0.device),
                          generator=generator)
