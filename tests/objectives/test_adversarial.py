from __future__ import annotations

import pytest
import torch

from crysgen.objectives.adversarial import (
    bce_loss,
    gradient_penalty,
    wasserstein_critic_loss,
    wasserstein_estimate,
)


def _linear_critic(scale: float):
    w = torch.randn(1, 4, 8, 8)
    w = scale * w / w.norm()  # the gradient of x -> <w, x> is w everywhere: norm = scale
    return lambda x: (x * w).flatten(1).sum(1)


def test_gradient_penalty_is_zero_for_a_1_lipschitz_critic():
    torch.manual_seed(0)
    real, fake = torch.rand(6, 4, 8, 8), torch.rand(6, 4, 8, 8)
    gp = gradient_penalty(_linear_critic(1.0), real, fake)
    assert float(gp) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("scale", [0.5, 2.0, 3.0])
def test_gradient_penalty_is_positive_otherwise(scale):
    torch.manual_seed(0)
    real, fake = torch.rand(6, 4, 8, 8), torch.rand(6, 4, 8, 8)
    gp = gradient_penalty(_linear_critic(scale), real, fake)
    assert float(gp) == pytest.approx((scale - 1.0) ** 2, rel=1e-5)


def test_gradient_penalty_reaches_the_critic_weights():
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Tanh(),
                                 torch.nn.Linear(8, 1), torch.nn.Flatten(0))
    gp = gradient_penalty(critic, torch.rand(5, 4, 2, 2), torch.rand(5, 4, 2, 2),
                          u=torch.full((5,), 0.5))
    gp.backward()
    assert float(gp.detach()) > 0 and critic[1].weight.grad.abs().sum() > 0


def test_bce_and_wasserstein_signs():
    confident_real = torch.full((4,), 8.0)
    assert float(bce_loss(confident_real, real=True)) < 1e-3
    assert float(bce_loss(confident_real, real=False)) > 7.0
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([-1.0, 1.0])
    assert float(wasserstein_estimate(real, fake)) == 3.0
    assert float(wasserstein_critic_loss(real, fake)) == -3.0  # the critic minimises it
