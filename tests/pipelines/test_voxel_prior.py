from __future__ import annotations

import numpy as np
import pytest

from crysgen.errors import CrysgenError
from crysgen.pipelines.voxel import LatentPrior


def test_posterior_matched_prior_recovers_the_aggregate_posterior(tmp_path):
    """μ ~ N(m, A Aᵀ) with posterior variance s²: the prior is N(m, A Aᵀ + diag(s²)), saved and loaded."""
    rng = np.random.default_rng(0)
    m = np.array([3.0, -2.0, 0.5])
    a = np.array([[1.0, 0.0, 0.0], [0.8, 0.3, 0.0], [0.0, 0.0, 0.1]])
    mu = m + rng.normal(size=(20000, 3)) @ a.T
    logvar = np.log(np.full((20000, 3), [0.04, 0.01, 0.0025]))
    prior = LatentPrior.fit(mu, logvar)
    prior = LatentPrior.load(prior.save(tmp_path / "p.npz"))
    z = prior.sample(rng.normal(size=(20000, 3)))
    assert z.mean(0) == pytest.approx(m, abs=0.03)
    assert np.cov(z, rowvar=False) == pytest.approx(a @ a.T + np.diag([0.04, 0.01, 0.0025]), abs=0.03)
    assert prior.n == 20000
    with pytest.raises(CrysgenError, match="at least 2"):
        LatentPrior.fit(mu[:1], logvar[:1])
