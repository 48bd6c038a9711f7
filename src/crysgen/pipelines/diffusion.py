"""CrysTens diffusion: the trained model bundle and the sampling loop (noise -> tensors).

The loop is diffusers' standard one: ``set_timesteps``, then ``scheduler.step`` with the
network's prediction. DDPM (the paper's 1000 steps), DDIM and DPM-Solver++ share the training
scheduler's configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from crysgen.errors import CrysgenError
from crysgen.models.model_dir import load_model_dir, save_model_dir
from crysgen.models.unet2d import UNetConfig, build_unet
from crysgen.objectives.diffusion import DiffusionConfig, to_unit_range
from crysgen.representations.crystens import CrysTensScaling

if TYPE_CHECKING:
    from diffusers import UNet2DModel

Sampler = Literal["ddpm", "ddim", "dpmsolver"]
SAMPLERS: tuple[Sampler, ...] = ("ddpm", "ddim", "dpmsolver")
KIND = "diffusion"


@dataclass
class DiffusionModel:
    """A trained CrysTens diffusion model: denoiser, schedule, scaling, data fingerprint."""

    unet: UNet2DModel
    unet_config: UNetConfig
    diffusion: DiffusionConfig
    scaling: CrysTensScaling
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, unet_config: UNetConfig, diffusion: DiffusionConfig,
               scaling: CrysTensScaling, data: dict[str, Any] | None = None) -> DiffusionModel:
        """A new, untrained model."""
        return cls(build_unet(unet_config), unet_config, diffusion, scaling, dict(data or {}))

    def save_pretrained(self, path: str | Path, *, half: bool = True) -> Path:
        """Write the model directory (see :mod:`crysgen.models.model_dir`)."""
        config = {"unet": self.unet_config.to_dict(), "diffusion": self.diffusion.to_dict()}
        return save_model_dir(path, kind=KIND, config=config, state_dict=self.unet.state_dict(),
                              scaling=self.scaling, data=self.data, half=half)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> DiffusionModel:
        """Load a model directory; needs nothing but that directory."""
        files = load_model_dir(path)
        if files.kind != KIND:
            raise CrysgenError(f"{path} holds a {files.kind!r} model, not a diffusion model")
        model = cls.create(UNetConfig.from_dict(files.config["unet"]),
                           DiffusionConfig(**files.config["diffusion"]), files.scaling, files.data)
        state = {k: v.float() if v.is_floating_point() else v for k, v in files.state_dict.items()}
        model.unet.load_state_dict(state)
        model.unet.eval()
        return model


def make_scheduler(diffusion: DiffusionConfig, sampler: Sampler) -> Any:
    """A diffusers sampling scheduler sharing the training schedule's configuration."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if sampler not in SAMPLERS:
        raise CrysgenError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    config = diffusion.scheduler().config
    if sampler == "ddpm":
        return DDPMScheduler.from_config(config)
    if sampler == "ddim":
        return DDIMScheduler.from_config(config)
    return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")


def sample_tensors(
    model: DiffusionModel,
    n: int,
    *,
    steps: int = 50,
    sampler: Sampler = "ddim",
    seed: int | list[int] = 0,
    device: str = "cpu",
    batch_size: int = 256,
) -> np.ndarray:
    """Draw ``n`` CrysTens tensors.

    Args:
        model: the trained model.
        n: number of tensors.
        steps: sampler steps (DDPM uses its training timesteps when steps >= T).
        sampler: "ddpm", "ddim" or "dpmsolver" (DPM-Solver++).
        seed: seeds a CPU generator for the initial noise and stochastic steps, so results do
            not depend on the device's random stream.
        device: "cpu" or "cuda".
        batch_size: tensors per forward pass.

    Returns:
        float32 (n, 4, 64, 64) in [0, 1].
    """
    import inspect

    import torch

    if steps < 1:
        raise CrysgenError(f"--steps must be at least 1, got {steps}")
    sched = make_scheduler(model.diffusion, sampler)
    gen = torch.Generator("cpu").manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
    # stochastic schedulers draw their noise from the CPU generator (diffusers moves it)
    step_kwargs = {"generator": gen} if "generator" in inspect.signature(sched.step).parameters else {}
    unet = model.unet.to(device).eval()
    size = model.unet_config.sample_size
    shape_c = model.unet_config.channels
    out = []
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        sched.set_timesteps(min(steps, model.diffusion.timesteps))
        x = torch.randn((b, shape_c, size, size), generator=gen).to(device) * sched.init_noise_sigma
        for t in sched.timesteps:
            with torch.no_grad(), torch.autocast(device_type=device.split(":")[0], dtype=dtype,
                                                 enabled=device.startswith("cuda")):
                pred = unet(sched.scale_model_input(x, t), t).sample
            x = sched.step(pred.float(), t, x, **step_kwargs).prev_sample
        out.append(to_unit_range(x).float().cpu().numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, shape_c, size, size), np.float32)
