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

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from crysgen.errors import CrysgenError
from crysgen.representations.crystens.layout import REGIONS, CrysTensLayout, region_map

if TYPE_CHECKING:
    import torch
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

Prediction = Literal["eps", "v", "x0"]
Schedule = Literal["cosine", "linear"]
Objective = Literal["ddpm", "edm"]
OBJECTIVES: tuple[Objective, ...] = ("ddpm", "edm")
_PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
_BETA_SCHEDULES = {"cosine": "squaredcos_cap_v2", "linear": "linear"}


@dataclass(frozen=True)
class DiffusionConfig:
    """Training objective, noise schedule and prediction target.

    Attributes:
        prediction: DDPM: what the network predicts: noise ("eps"), velocity ("v") or the clean
            tensor ("x0"). EDM has one parametrisation (its preconditioning) and ignores it.
        schedule: DDPM beta schedule ("cosine" as in Imagen, or "linear").
        timesteps: DDPM training timesteps T.
        objective: "ddpm" (the default; models saved before objectives existed) or "edm".
        sigma_data: EDM: σ_data of the tensors in [-1, 1].
        p_mean: EDM: mean of ln σ during training.
        p_std: EDM: std of ln σ during training.
        sigma_min: EDM: smallest σ of the sampling schedule.
        sigma_max: EDM: largest σ of the sampling schedule.
        rho: EDM: Karras schedule exponent.
        region_weights: loss weight per tensor region (keys among :data:`REGIONS`, missing
            ones 1); None: the plain mean over the tensor.
    """

    prediction: Prediction = "v"
    schedule: Schedule = "cosine"
    timesteps: int = 1000
    objective: Objective = "ddpm"
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    region_weights: dict[str, float] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.prediction not in _PREDICTION_TYPES:
            raise CrysgenError(f"diffusion.prediction must be one of {', '.join(_PREDICTION_TYPES)}")
        if self.schedule not in _BETA_SCHEDULES:
            raise CrysgenError(f"diffusion.schedule must be one of {', '.join(_BETA_SCHEDULES)}")
        if self.timesteps < 2:
            raise CrysgenError("diffusion.timesteps must be at least 2")
        if self.objective not in OBJECTIVES:
            raise CrysgenError(f"diffusion.objective must be one of {', '.join(OBJECTIVES)}, "
                               f"got {self.objective!r}")
        if not (0 < self.sigma_min < self.sigma_max and self.sigma_data > 0 and self.p_std > 0
                and self.rho > 0):
            raise CrysgenError("diffusion: need 0 < sigma_min < sigma_max and positive sigma_data, "
                               "p_std and rho")
        if self.region_weights is not None:
            w = dict(self.region_weights)
            bad = set(w) - set(REGIONS)
            if bad:
                raise CrysgenError(f"unknown diffusion.region_weights key(s) {', '.join(sorted(bad))}; "
                                   f"choose among {', '.join(REGIONS)}")
            if (not all(isinstance(v, int | float) and v >= 0 for v in w.values())
                    or not any(w.get(r, 1.0) for r in REGIONS)):
                raise CrysgenError("diffusion.region_weights must be non-negative numbers, not all 0")
            object.__setattr__(self, "region_weights", {k: float(v) for k, v in sorted(w.items())})

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    def scheduler(self) -> Any:
        """The training scheduler: DDPM's ``DDPMScheduler`` or EDM's ``EDMEulerScheduler``."""
        if self.objective == "edm":
            from diffusers import EDMEulerScheduler

            return EDMEulerScheduler(sigma_min=self.sigma_min, sigma_max=self.sigma_max,
                                     sigma_data=self.sigma_data, rho=self.rho, prediction_type="epsilon")
        from diffusers import DDPMScheduler

        return DDPMScheduler(
            num_train_timesteps=self.timesteps,
            beta_schedule=_BETA_SCHEDULES[self.schedule],
            prediction_type=_PREDICTION_TYPES[self.prediction],
            clip_sample=True,
            clip_sample_range=1.0,
        )

    def weight_map(self, layout: CrysTensLayout) -> np.ndarray | None:
        """float32 (size, size) loss weight of every tensor entry, or None (plain mean)."""
        if self.region_weights is None:
            return None
        per_region = np.array([self.region_weights.get(r, 1.0) for r in REGIONS], np.float32)
        return per_region[region_map(layout)]


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
