from __future__ import annotations

import numpy as np
import pytest
import torch

from crysgen import CrysgenError
from crysgen.models.composition_lm import CompositionLM, CompositionModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(seed: int = 0, elements=(3, 8, 11, 17, 26)) -> CompositionModel:
    torch.manual_seed(seed)
    net = CompositionLM(max_sites=12, max_elements=3, d_model=32, layers=2, heads=4, dropout=0.0)
    return CompositionModel(net.eval(), list(elements), {"name": "t"})


def test_the_network_is_causal():
    net = _model().net
    tokens = torch.randint(3, net.cfg.vocab.size, (4, net.cfg.vocab.length))
    changed = tokens.clone()
    changed[:, 5:] = torch.randint(3, net.cfg.vocab.size, (4, net.cfg.vocab.length - 5))
    with torch.no_grad():
        a, b = net(tokens), net(changed)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-5)
    assert not torch.allclose(a[:, 5:], b[:, 5:], atol=1e-3)


def test_samples_are_seeded_and_keep_to_the_elements_and_sites_asked():
    m = _model()
    a = m.sample(64, max_sites=8, elements={8, 26, 92}, generator=torch.Generator().manual_seed(1))
    b = m.sample(64, max_sites=8, elements={8, 26, 92}, generator=torch.Generator().manual_seed(1))
    assert (a == b).all() and a.shape == (64, 8)
    assert set(np.unique(a)) - {0} <= {8, 26} and (a > 0).sum(axis=1).min() >= 1
    assert len({tuple(r) for r in a}) > 10  # an untrained network spreads its draws
    with pytest.raises(CrysgenError, match="none of the composition model's elements"):
        m.sample(2, elements={92})
    with pytest.raises(CrysgenError, match="1 to 12 sites"):
        m.sample(2, max_sites=13)


def test_save_and_load_keep_the_likelihoods(tmp_path):
    m = _model()
    z = np.array([[8, 8, 26, 0], [3, 17, 0, 0]])
    m.save_pretrained(tmp_path / "exact", half=False)
    m.save_pretrained(tmp_path / "half")  # fp16 weights by default
    exact, half = (CompositionModel.from_pretrained(tmp_path / n) for n in ("exact", "half"))
    assert exact.elements == m.elements and exact.net.cfg == m.net.cfg
    assert np.allclose(exact.nll(z), m.nll(z), atol=1e-5)
    assert np.allclose(half.nll(z), m.nll(z), rtol=1e-2)


def test_the_likelihood_sums_over_the_real_tokens_only():
    m = _model()
    z = np.array([[8, 8, 26, 0]])
    from crysgen.representations.composition_tokens import encode_compositions

    tokens = torch.from_numpy(encode_compositions(z, m.vocab))
    with torch.no_grad():
        logp = torch.log_softmax(m.net(tokens[:, :-1]), dim=-1)[0]
    by_hand = -sum(float(logp[t, tokens[0, t + 1]]) for t in range(5))  # O, 2, Fe, 1, EOS
    assert m.nll(z)[0] == pytest.approx(by_hand, abs=1e-4)


def test_the_bundled_model_writes_chemically_plausible_compositions():
    from crysgen.evaluation.compositional import smact_valid
    from crysgen.pipelines.compositions import BUNDLED_COMPOSITION_MODEL, load_prior

    model = load_prior("bundled")
    assert isinstance(model, CompositionModel)
    assert model.vocab.order == "mendeleev" and model.net.cfg.max_sites == 20
    assert str(BUNDLED_COMPOSITION_MODEL).endswith("composition_mp20")
    z = model.sample(200, generator=torch.Generator().manual_seed(0))
    valid = np.mean([smact_valid([int(v) for v in r if v]) for r in z])
    n_elements = np.array([len(set(r[r > 0])) for r in z])
    # mp_20's training crystals: 90.5 % SMACT-valid, 3.0 elements on average; random compositions of
    # its elements are far from both (a noise sampler fails here)
    assert valid > 0.8, valid
    assert 2.6 < n_elements.mean() < 3.4 and (n_elements == 1).mean() < 0.1


def test_stepping_with_cached_keys_equals_the_whole_prefix():
    net = _model().net
    tokens = torch.randint(3, net.cfg.vocab.size, (5, net.cfg.vocab.length))
    with torch.no_grad():
        full = net(tokens)
        cache: list = []
        stepped = torch.stack([net.step(tokens[:, t], cache) for t in range(tokens.shape[1])], dim=1)
    assert torch.allclose(stepped, full, atol=1e-5)
    assert len(cache) == net.cfg.layers and cache[0][0].shape[2] == tokens.shape[1]
