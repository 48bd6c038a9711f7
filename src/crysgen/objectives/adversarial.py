"""Losses of the two adversarial models (seed code §3.1–3.2), kept beside their networks.

* GAN: binary cross-entropy, real = 1, fake = 0; the generator wants its fakes labelled 1. The
  discriminator returns logits, so the Keras ``sigmoid`` + ``binary_crossentropy`` pair is
  computed as one stable ``binary_cross_entropy_with_logits``.
* WGAN-GP: the Keras code's ``mean(label × score)`` with label −1 for real and +1 for fake, plus
  λ × the gradient penalty ``(‖∇ critic(x̂)‖₂ − 1)²`` on random interpolates
  ``x̂ = u·real + (1 − u)·fake``, u ~ U(0, 1) per sample; the generator minimises
  ``−mean(critic(fake))``. ``mean(critic(real)) − mean(critic(fake))`` is the critic's estimate
  of the Wasserstein distance (logged and plotted).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def bce_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Binary cross-entropy of discriminator logits (N,) against all-real or all-fake labels."""
    target = torch.full_like(logits, 1.0 if real else 0.0, dtype=torch.float32)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def wasserstein_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Critic loss without the penalty: mean(fake) − mean(real) (scores (N,))."""
    return fake_scores.float().mean() - real_scores.float().mean()


def wasserstein_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Generator loss: −mean(critic(fake))."""
    return -fake_scores.float().mean()


def wasserstein_estimate(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The critic's estimate of the Wasserstein-1 distance: mean(real) − mean(fake)."""
    return real_scores.float().mean() - fake_scores.float().mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    u: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean of (‖∇ₓ critic(x̂)‖₂ − 1)² over x̂ = u·real + (1 − u)·fake, in float32.

    Args:
        critic: maps a batch (N, ...) to scores (N,).
        real: real batch (N, ...).
        fake: generated batch of the same shape (detached from the generator).
        u: mixing weights (N,) in [0, 1]; drawn uniformly when None.
        generator: random generator for ``u``.

    Returns:
        A scalar that keeps the graph (``create_graph``), so it can be back-propagated into the
        critic's weights. Autocast is switched off: second-order gradients in bf16 are not safe.
    """
    real, fake = real.float(), fake.detach().float()
    if u is None:
        u = torch.rand(len(real), generator=generator).to(real.device)
    u = u.float().view(-1, *([1] * (real.dim() - 1)))
    x_hat = (u * real + (1 - u) * fake).requires_grad_(True)
    with torch.autocast(device_type=real.device.type, enabled=False):
        scores = critic(x_hat)
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)
    return ((norm - 1.0) ** 2).mean()
