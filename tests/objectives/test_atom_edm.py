from __future__ import annotations

import numpy as np
import pytest
import torch

from crysgen.crystal_set import CrystalSet
from crysgen.models.atom_transformer import AtomTransformer
from crysgen.objectives.atom_edm import (
    AtomEDMConfig,
    Constants,
    Parts,
    current_cell,
    denoise,
    edm_loss,
    lattice_metric,
    metric_features,
    permute_axes,
    wrap_centered,
)
from crysgen.representations.atoms import AtomSetSpec, decode, encode, niggli_reduce
from tests.conftest import load_cif


def _encoded():
    """NaCl, SrTiO3 and wurtzite encoded with S = 8: (spec, sets)."""
    names = ("NaCl", "SrTiO3", "ZnO_wurtzite")
    cs = CrystalSet.from_structures([load_cif(n) for n in names], ids=list(names))
    spec = AtomSetSpec.fit(cs, max_atoms=8)
    return spec, encode(cs, spec)


def _batch():
    spec, sets = _encoded()
    x0 = Parts(torch.from_numpy(sets.types), torch.from_numpy(sets.frac), torch.from_numpy(sets.lattice))
    return x0, torch.from_numpy(sets.mask), Constants.from_spec(spec)


def test_tiny_model_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    x0, mask, consts = _batch()
    net = AtomTransformer(type_dim=39, d_model=32, n_layers=2, n_heads=4, edge_hidden=16)
    cfg = AtomEDMConfig()

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(edm_loss(net, x0, mask, cfg, consts, generator=torch.Generator().manual_seed(7))[0])

    before = fixed_loss()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(150):
        loss, _ = edm_loss(net, x0, mask, cfg, consts, generator=torch.Generator().manual_seed(step % 8))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_loss() < 0.6 * before


def test_a_displacement_head_moves_the_denoised_coordinates_by_its_own_size_at_every_noise_level():
    """The head's displacement (fractional units) enters D unscaled: denoise passes 1 / c_out(σ)."""
    x0, mask, consts = _batch()
    net = AtomTransformer(type_dim=39, d_model=32, n_layers=2, n_heads=4, edge_hidden=16,
                          displacement_head=True, head_width=8).eval()
    with torch.no_grad():
        net.displace.out.bias.fill_(1.0)  # every pair weight 1; the other outputs start at zero
    cfg = AtomEDMConfig()
    b = len(mask)
    want = torch.zeros_like(x0.frac)
    for k in range(b):
        real = torch.nonzero(mask[k]).flatten()
        for i in real:
            d = x0.frac[k, real] - x0.frac[k, i]
            want[k, i] = (d - torch.round(d)).sum(0) / len(real)
    for sigma in (0.002, 0.05, 2.0):
        with torch.no_grad():
            d = denoise(net, x0, torch.full((b,), sigma), mask, torch.ones(b, dtype=torch.bool), cfg, consts)
        torch.testing.assert_close((d.frac - x0.frac)[mask], want[mask], atol=1e-5, rtol=1e-4)


def test_an_exact_denoiser_has_zero_loss_terms_for_coordinates():
    """With F = the EDM target, D(x_t) is the clean crystal: the coordinate part moves along the
    shortest periodic displacement, so wrapped coordinates come back exactly."""
    x0, mask, consts = _batch()
    cfg = AtomEDMConfig()
    sigma = torch.full((3,), 0.3)
    noisy = torch.remainder(x0.frac + 0.3 * torch.randn_like(x0.frac), 1.0)

    class Oracle(torch.nn.Module):
        def forward(self, types, frac, lattice, mask, c_noise, given, cell, coord_gain=None):
            c_out = 0.3 * cfg.sigma_data_coords / (0.3**2 + cfg.sigma_data_coords**2) ** 0.5
            return torch.zeros_like(types), wrap_centered(x0.frac - frac) / c_out, torch.zeros_like(lattice)

    d = denoise(Oracle(), Parts(x0.types, noisy, x0.lattice), sigma, mask, torch.zeros(3, dtype=torch.bool),
                cfg, consts)
    err = wrap_centered(d.frac - x0.frac)[mask]
    assert err.abs().max() < 1e-5


def test_a_one_element_dataset_trains_with_finite_loss():
    """carbon_24-like data: every site is the same element, so the centred codes do not vary; the
    types' σ_data must stay positive or the EDM weights divide by zero (NaN from the first step)."""
    torch.manual_seed(0)
    from pymatgen.core import Lattice, Structure

    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])
    cs = CrystalSet.from_structures([si, si.copy().scale_lattice(si.volume * 1.2)], ids=["a", "b"])
    spec = AtomSetSpec.fit(cs, max_atoms=8)
    assert spec.type_sigma > 0
    sets = encode(cs, spec)
    x0 = Parts(torch.from_numpy(sets.types), torch.from_numpy(sets.frac), torch.from_numpy(sets.lattice))
    net = AtomTransformer(type_dim=39, d_model=16, n_layers=1, n_heads=2, edge_hidden=8)
    loss, _ = edm_loss(net, x0, torch.from_numpy(sets.mask), AtomEDMConfig(), Constants.from_spec(spec),
                       generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def _reduced_three(code: str):
    """A triclinic, a hexagonal and a cubic crystal in their Niggli cells, encoded with lattice
    ``code``: (crystals, spec, sets, constants)."""
    names = ("triclinic_LiFePO", "ZnO_wurtzite", "SrTiO3")
    cs = niggli_reduce(CrystalSet.from_structures([load_cif(n) for n in names], ids=list(names)))
    spec = AtomSetSpec.fit(cs, lattice_code=code)
    sets = encode(cs, spec)
    return cs, spec, sets, Constants.from_spec(spec)


@pytest.mark.parametrize("code", ["lengths_angles", "cholesky"])
def test_cells_and_metrics_of_the_lattice_features_are_the_crystals(code):
    cs, _, sets, consts = _reduced_three(code)
    feats, mask = torch.from_numpy(sets.lattice), torch.from_numpy(sets.mask)
    log_n = mask.sum(1).double().log()[:, None] / 3
    metric = lattice_metric(feats, consts, log_n)
    cell = current_cell(feats, mask, consts).double()
    for i in range(len(cs)):
        m = cs.to_structure(i).lattice.matrix
        np.testing.assert_allclose(metric[i].numpy(), m @ m.T, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose((cell[i] @ cell[i].T).numpy(), m @ m.T, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(metric_features(metric, consts, log_n).numpy(), sets.lattice, atol=1e-5)
    # a cell that no crystal is stays finite: wild features give a finite cell of positive volume
    wild = torch.tensor([[40.0, -40.0, 3.0, 25.0, -30.0, 9.0]] * 3)
    det = torch.linalg.det(current_cell(wild, mask, consts).double())
    assert torch.isfinite(det).all() and (det.abs() > 0).all()


@pytest.mark.parametrize("code", ["lengths_angles", "cholesky"])
def test_permuted_axes_give_the_same_crystal_or_its_mirror_image(code):
    import itertools
    from dataclasses import replace

    import numpy as np

    cs, spec, sets, consts = _reduced_three(code)

    def fingerprint(s):
        """Volume per crystal and its sorted periodic distances (blind to a mirror and to the axis order)."""
        out = decode(s, spec, atomic_numbers=sets.atomic_numbers).crystals
        return [(st.volume, np.sort(st.distance_matrix.ravel())) for st in out.to_structures()]

    want = fingerprint(sets)
    frac0, lattice0, pad = (torch.from_numpy(a) for a in (sets.frac, sets.lattice, ~sets.mask))
    for order in itertools.permutations(range(3)):
        frac, lattice = permute_axes(frac0, lattice0, consts, torch.tensor([order] * len(cs)))
        assert not frac[pad].any()  # padding rows stay zero
        got = fingerprint(replace(sets, frac=frac.numpy(), lattice=lattice.numpy()))
        for (v0, d0), (v1, d1) in zip(want, got, strict=True):
            assert v1 == pytest.approx(v0, rel=1e-4) and np.allclose(d0, d1, atol=1e-3), order
    # the random draw really reorders: over many crystals every order of the axes turns up
    many = torch.zeros(600, 1, 3)
    many[:, 0] = torch.tensor([0.1, 0.2, 0.3])
    seen = {tuple(r) for r in permute_axes(many, torch.zeros(600, 6), consts)[0][:, 0].tolist()}
    assert len({tuple(round(x, 3) for x in r) for r in seen}) == 6


@pytest.mark.parametrize("field", ["s_churn", "anneal_rho", "anneal_rho_lattice"])
def test_config_refuses_negative_or_nan_sampler_settings(field):
    from crysgen import CrysgenError

    AtomEDMConfig(**{field: 0.0})  # 0 is off, and allowed
    for bad in (-1.0, float("nan")):
        with pytest.raises(CrysgenError, match=f"edm.{field} must be 0"):
            AtomEDMConfig(**{field: bad})


def test_crystal_weights_count_real_sites_or_give_every_crystal_one():
    from crysgen.objectives.atom_edm import crystal_weights

    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    assert crystal_weights(mask, "site").tolist() == [2.0, 4.0, 1.0]
    assert crystal_weights(mask, "crystal").tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="unknown"):
        crystal_weights(mask, "atom")


def test_site_weighting_weighs_each_crystals_coordinate_loss_by_its_sites(monkeypatch):
    """Total (coordinates only) = Σ n_k L_k / Σ n_k under "site", the plain mean under "crystal",
    with L_k each crystal's own per-site loss (read by weighting one crystal at a time); the
    reported part is the per-crystal mean under both."""
    from dataclasses import replace

    import crysgen.objectives.atom_edm as ae

    x0, mask, consts = _batch()
    sizes = mask.sum(1).float()
    assert len(set(sizes.tolist())) > 1  # the check needs crystals of different sizes
    torch.manual_seed(0)
    net = AtomTransformer(type_dim=39, d_model=16, n_layers=1, n_heads=2, edge_hidden=8).eval()
    cfg = AtomEDMConfig(weights=(0.0, 1.0, 0.0), csp_fraction=0.0)

    def loss(c: AtomEDMConfig) -> tuple[float, float]:
        with torch.no_grad():
            total, parts = edm_loss(net, x0, mask, c, consts, generator=torch.Generator().manual_seed(3))
        return float(total), float(parts["loss_coords"])

    real = ae.crystal_weights
    per_crystal = []
    for k in range(len(mask)):  # one-hot weights: the total is crystal k's own loss
        monkeypatch.setattr(ae, "crystal_weights", lambda m, w, k=k: torch.eye(len(m))[k])
        per_crystal.append(loss(cfg)[0])
    monkeypatch.setattr(ae, "crystal_weights", real)
    lk = torch.tensor(per_crystal)
    by_crystal, part_c = loss(cfg)
    by_site, part_s = loss(replace(cfg, site_weighting="site"))
    by_sqrt, part_q = loss(replace(cfg, site_weighting="sqrt"))
    assert by_crystal == pytest.approx(float(lk.mean()), rel=1e-5)
    assert by_site == pytest.approx(float((lk * sizes).sum() / sizes.sum()), rel=1e-5)
    root = sizes.sqrt()
    assert by_sqrt == pytest.approx(float((lk * root).sum() / root.sum()), rel=1e-5)
    assert part_q == pytest.approx(by_crystal, rel=1e-5)
    assert abs(by_site - by_crystal) > 1e-3 * by_crystal  # the weighting changes the objective
    assert part_c == pytest.approx(by_crystal, rel=1e-5) and part_s == pytest.approx(by_crystal, rel=1e-5)


def test_an_unknown_site_weighting_is_refused_with_the_choices():
    from crysgen.errors import CrysgenError

    with pytest.raises(CrysgenError, match="crystal, sqrt, site"):
        AtomEDMConfig(site_weighting="atom")


def _as_sets(parts: Parts, mask: torch.Tensor):
    from crysgen.representations.atoms import AtomSets

    m = mask.numpy()
    return AtomSets(parts.types.numpy(), parts.frac.numpy(), parts.lattice.numpy(), m,
                    np.zeros(m.shape, np.int64))


def test_empty_sites_decode_back_to_the_same_crystals():
    """Empty tokens carry no element's code and the per-token lattice describes the same cell:
    decoding with ``empty_sites`` gives back each crystal (elements, positions, cell)."""
    from crysgen.objectives.atom_edm import add_empty_sites

    spec, sets = _encoded()
    x0, mask, consts = _batch()
    empty = torch.tensor([2, 0, 3])
    gen = torch.Generator().manual_seed(0)
    parts, tokens = add_empty_sites(x0, mask, empty, consts, extra=4, generator=gen)
    assert tokens.shape == (3, 12) and tokens.sum(1).tolist() == (mask.sum(1) + empty).tolist()
    assert torch.equal(tokens[:, :8] & mask, mask)  # real sites stay where they were
    plain = decode(sets, spec).crystals
    back = decode(_as_sets(parts, tokens), spec, empty_sites=True).crystals
    assert back.num_sites.tolist() == plain.num_sites.tolist()
    np.testing.assert_array_equal(back.atomic_numbers[:, :8], plain.atomic_numbers)
    assert not back.atomic_numbers[:, 8:].any()
    np.testing.assert_allclose(back.frac_coords[:, :8], plain.frac_coords, atol=1e-6)
    np.testing.assert_allclose(back.lattice, plain.lattice, rtol=1e-5)
    # read without empty sites, the same tokens give other crystals: the flag matters
    other = decode(_as_sets(parts, tokens), spec).crystals
    assert other.num_sites.tolist() != plain.num_sites.tolist()
    with pytest.raises(ValueError, match="cannot hold"):
        add_empty_sites(x0, mask, empty, consts, extra=2)


def test_the_loss_gives_empty_sites_to_de_novo_crystals_only(monkeypatch):
    import crysgen.objectives.atom_edm as ae

    x0, mask, consts = _batch()
    seen = []
    real = ae.add_empty_sites

    def spy(x, m, empty, c, **kw):
        seen.append((empty.clone(), kw["extra"]))
        return real(x, m, empty, c, **kw)

    monkeypatch.setattr(ae, "add_empty_sites", spy)
    net = AtomTransformer(type_dim=39, d_model=16, n_layers=1, n_heads=2, edge_hidden=8).eval()
    for frac in (0.0, 1.0):
        cfg = AtomEDMConfig(empty_sites=3, csp_fraction=frac)
        gens = [torch.Generator().manual_seed(k) for k in range(12)]
        total = torch.stack([edm_loss(net, x0, mask, cfg, consts, generator=g)[0] for g in gens])
        assert torch.isfinite(total).all()
    drawn = torch.cat([e for e, _ in seen[:12]])
    assert {int(v) for v in drawn} == {0, 1, 2, 3} and all(x == 3 for _, x in seen)
    assert all(int(e.max()) == 0 for e, _ in seen[12:])  # given compositions keep their atoms
    seen.clear()
    edm_loss(net, x0, mask, AtomEDMConfig(), consts, generator=torch.Generator().manual_seed(0))
    assert not seen


@pytest.mark.parametrize("value", [-1, 1.5])
def test_a_bad_number_of_empty_sites_is_refused(value):
    from crysgen.errors import CrysgenError

    with pytest.raises(CrysgenError, match="empty_sites"):
        AtomEDMConfig(empty_sites=value)
