"""DDPM training objective for CrysTens tensors, on diffusers' noise schedulers.

Tensors in [0, 1] are mapped to [-1, 1]; a timestep t ~ U{0..T-1} and noise eps ~ N(0, I) give
``x_t = scheduler.add_noise(x0, eps, t)``; the network predicts eps, v or x0 (``prediction``)
and the loss is the mean squared error to that target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from crysgen.errors import CrysgenError

if TYPE_CHECKING:
    import torch
    from diffusers import DDPMScheduler

Prediction = Literal["eps", "v", "x0"]
Schedule = Literal["cosine", "linear"]
_PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
_BETA_SCHEDULES = {"cosine": "squaredcos_cap_v2", "linear": "linear"}


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and prediction target.

    Attributes:
        prediction: what the network predicts: noise ("eps"), velocity ("v") or the clean
            tensor ("x0").
        schedule: beta schedule ("cosine" as in Imagen, or "linear").
        timesteps: number of training timesteps T.
    """

    prediction: Prediction = "v"
    schedule: Schedule = "cosine"
    timesteps: int = 1000

    def __post_init__(self) -> None:
        if self.prediction not in _PREDICTION_TYPES:
            raise CrysgenError(f"diffusion.prediction must be one of {', '.join(_PREDICTION_TYPES)}")
        if self.schedule not in _BETA_SCHEDULES:
            raise CrysgenError(f"diffusion.schedule must be one of {', '.join(_BETA_SCHEDULES)}")
        if self.timesteps < 2:
            raise CrysgenError("diffusion.timesteps must be at least 2")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    def scheduler(self) -> DDPMScheduler:
        """The training (and 1000-step sampling) scheduler."""
        from diffusers import DDPMScheduler

        return DDPMScheduler(
            num_train_timesteps=self.timesteps,
            beta_schedule=_BETA_SCHEDULES[self.schedule],
            prediction_type=_PREDICTION_TYPES[self.prediction],
            clip_sample=True,
            clip_sample_range=1.0,
        )


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

    Returns:
        Scalar loss.
    """
    import torch
    import torch.nn.functional as F

    b = x0.shape[0]
    gen_device = generator.device if generator is not None else x0.device
    noise = torch.randn(x0.shape, generator=generator, device=gen_device).to(x0.device, x0.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator,
                      device=gen_device).to(x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(x0, noise, t)
    else:
        target = x0
    inp = x_t if cond is None else torch.cat([x_t, cond], dim=1)
    pred = model(inp, t, class_labels=class_labels).sample
    return F.mse_loss(pred.float(), target.float())
