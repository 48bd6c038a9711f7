"""EDM training objective of the CrysTens denoiser (Karras et al. 2022), on diffusers' EDM scheduler.

The preconditioning is the scheduler's own (``EDMEulerScheduler.precondition_inputs``,
``precondition_noise``, ``precondition_outputs``), so training and sampling
(``EDMEulerScheduler`` / ``EDMDPMSolverMultistepScheduler``) use the same c_in, c_noise, c_skip
and c_out by construction:

    D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x, c_noise(σ)),
    c_skip = σ_d² / (σ² + σ_d²),  c_out = σ σ_d / √(σ² + σ_d²),  c_in = 1 / √(σ² + σ_d²),
    c_noise = ln(σ) / 4.

Training draws ln σ ~ N(P_mean, P_std²) per tensor and minimises
λ(σ) |D(x0 + σ n; σ) − x0|² with λ = (σ² + σ_d²) / (σ σ_d)², which gives every σ unit
weight on the network's output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crysgen.objectives.diffusion import weighted_mean

if TYPE_CHECKING:
    import torch


def edm_denoise(model: torch.nn.Module, scheduler: Any, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The preconditioned denoiser D(x; σ).

    Args:
        model: the UNet (called as ``model(c_in x, c_noise).sample``).
        scheduler: an EDM scheduler of diffusers (its σ_data and preconditioning).
        x: noisy tensors (B, C, H, W), in the units of the [-1, 1] data.
        sigma: (B,) noise levels σ > 0.

    Returns:
        (B, C, H, W) float32 estimate of the clean tensors.
    """
    s = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
    inp = scheduler.precondition_inputs(x, s)
    c_noise = scheduler.precondition_noise(sigma.to(x.dtype))
    out = model(inp, c_noise).sample
    return scheduler.precondition_outputs(x.float(), out.float(), s.float())


def edm_loss(
    model: torch.nn.Module,
    scheduler: Any,
    x0: torch.Tensor,
    *,
    p_mean: float,
    p_std: float,
    weight: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """EDM loss of one batch of clean tensors in [-1, 1], (B, C, H, W).

    Args:
        model: the UNet.
        scheduler: an EDM scheduler (σ_data, preconditioning).
        x0: clean tensors in [-1, 1].
        p_mean: mean of ln σ.
        p_std: std of ln σ.
        weight: (H, W) loss weight per entry; None: the plain mean.
        generator: random source of σ and the noise (a CPU generator keeps it device-independent).

    Returns:
        Scalar loss.
    """
    import torch

    gen_device = generator.device if generator is not None else x0.device
    b = x0.shape[0]
    sigma = (torch.randn(b, generator=generator, device=gen_device) * p_std + p_mean).exp().to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=gen_device).to(x0.device, x0.dtype)
    x_t = x0 + sigma.reshape(-1, 1, 1, 1) * noise
    denoised = edm_denoise(model, scheduler, x_t, sigma)
    sd = float(scheduler.config.sigma_data)
    lam = (sigma**2 + sd**2) / (sigma * sd) ** 2
    return weighted_mean(lam.reshape(-1, 1, 1, 1) * (denoised - x0.float()) ** 2, weight)
