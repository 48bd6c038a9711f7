from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crysgen import CrysgenError, CrystalSet
from crysgen.representations.crystens import (
    CrysTensScaling,
    DecodeOptions,
    decode,
    encode,
)
from crysgen.representations.crystens.faithful import symmetrize_block


def _matcher():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher()


def _matches(a: CrystalSet, i: int, b: CrystalSet, j: int) -> bool:
    return _matcher().fit(a.to_structure(i), b.to_structure(j))


def _periodic_close(f1, f2, tol):
    d = f1 - f2
    return np.abs(d - np.rint(d)).max() < tol


@pytest.mark.parametrize("scaling_kind", ["fitted", "paper"])
def test_auto_roundtrip_is_exact(hand_built, scaling_kind):
    s = CrysTensScaling.fit(hand_built) if scaling_kind == "fitted" else CrysTensScaling.paper()
    res = decode(encode(hand_built, s), s, ids=hand_built.ids)
    assert not res.failures and res.index.tolist() == list(range(5))
    out = res.crystals
    np.testing.assert_array_equal(out.atomic_numbers, hand_built.atomic_numbers)
    np.testing.assert_allclose(out.lattice, hand_built.lattice, atol=1e-4)
    assert _periodic_close(out.frac_coords, hand_built.frac_coords, 1e-4)
    assert out.space_group.tolist() == [225, 221, 186, 1, 1]
    assert out.ids.tolist() == hand_built.ids.tolist()
    assert res.diagnostics["num_atoms"].tolist() == [8, 5, 4, 4, 52]
    for i in range(5):
        assert _matches(out, i, hand_built, i)


def test_faithful_roundtrip_and_its_limits(hand_built):
    s = CrysTensScaling.fit(hand_built)
    res = decode(encode(hand_built, s), s, DecodeOptions(mode="faithful"))
    assert not res.failures
    assert res.diagnostics["num_atoms"].tolist() == [8, 5, 4, 4, 52]  # A = 52 is possible
    matched = [_matches(res.crystals, i, hand_built, i) for i in range(5)]
    # <= 3 elements survive the K-means, LiFePO (4 elements) does not; the 52-site P1 cell
    # survives k = 6 only because its coordinates lie within 0.025 of a 4-value grid
    assert matched == [True, True, True, False, True]
    assert len(np.unique(res.crystals.atomic_numbers[3, :4])) == 3


def test_decode_is_invariant_to_site_order(hand_built):
    s = CrysTensScaling.fit(hand_built)
    rng = np.random.default_rng(1)
    shuffled = hand_built.subset(slice(None))
    for i, n in enumerate(hand_built.num_sites):
        p = rng.permutation(int(n))
        shuffled.atomic_numbers[i, :n] = hand_built.atomic_numbers[i, p]
        shuffled.frac_coords[i, :n] = hand_built.frac_coords[i, p]
    a = decode(encode(hand_built, s), s).crystals
    b = decode(encode(shuffled, s), s).crystals
    for i in range(len(hand_built)):
        assert _matches(a, i, b, i) and _matches(b, i, hand_built, i)


def test_small_noise_is_forgiven_and_diagnostics_measure_it(hand_built):
    s = CrysTensScaling.fit(hand_built)
    t = encode(hand_built, s)
    rng = np.random.default_rng(0)
    sigma = 0.003
    noisy = t + rng.normal(0, sigma, t.shape).astype(np.float32)
    clean = decode(t, s)
    res = decode(noisy, s)
    assert not res.failures
    for i in range(5):
        assert _matches(res.crystals, i, hand_built, i)
    np.testing.assert_allclose(clean.diagnostics["var_lattice_params"], 0, atol=1e-10)
    np.testing.assert_allclose(clean.diagnostics["coord_agreement"], 0, atol=1e-6)
    # population variance of the 8A copies of a, b, c ~ (sigma * span)^2
    span = np.mean([s.ranges[k][1] - s.ranges[k][0] for k in "abc"])
    ratio = res.diagnostics["var_lattice_params"].mean() / (sigma * span) ** 2
    assert 0.6 < ratio < 1.4
    assert (res.diagnostics["pairwise_error"] > clean.diagnostics["pairwise_error"]).all()


def test_garbage_gives_reasons_not_exceptions(hand_built):
    s = CrysTensScaling.paper()
    good = encode(hand_built.subset([0]), s)[0]
    nan = good.copy()
    nan[0, 20, 20] = np.nan
    outside = good * 4
    zeros = np.zeros_like(good)
    no_header = good.copy()  # auto: no row carries the per-crystal attributes
    no_header[:, :12, :] = 0
    no_header[:, :, :12] = 0
    no_site0 = good.copy()  # faithful: alpha of site 0 is 0
    no_site0[:, 12, :] = 0
    no_site0[:, :, 12] = 0
    flat = good.copy()
    for k in (7, 8, 9):  # alpha = beta = gamma = 120 degrees: a cell with no volume
        for name in ("alpha", "beta", "gamma")[k - 7 : k - 6]:
            v = s.scale(np.array(120.0), name)
            flat[:, k, 12:20] = v
            flat[:, 12:20, k] = v
    for mode, no_atoms in (("auto", no_header), ("faithful", no_site0)):
        batch = np.stack([good, nan, outside, zeros, no_atoms, flat, good])
        res = decode(batch, s, DecodeOptions(mode=mode))
        reasons = {f.index: f.reason for f in res.failures}
        assert res.index.tolist() == [0, 6]
        assert "NaN" in reasons[1]
        assert "outside [0, 1]" in reasons[2]
        assert "all zeros" in reasons[3]
        assert "no atoms" in reasons[4]
        assert "impossible lattice" in reasons[5]
        assert np.isnan(res.diagnostics["var_lattice_params"][1:6]).all()


def test_wrong_shape_raises():
    with pytest.raises(CrysgenError, match="shape"):
        decode(np.zeros((2, 64, 64, 4)), CrysTensScaling.paper())
    with pytest.raises(CrysgenError, match="decode mode"):
        DecodeOptions(mode="magic")  # type: ignore[arg-type]


def test_single_tensor_is_accepted(hand_built):
    s = CrysTensScaling.paper()
    res = decode(encode(hand_built.subset([1]), s)[0], s)
    assert len(res.crystals) == 1


def test_symmetrize_block_makes_layers_consistent():
    rng = np.random.default_rng(3)
    block = rng.normal(size=(6, 6, 4))
    out = symmetrize_block(block)
    np.testing.assert_allclose(out[..., 0], out[..., 0].T)
    off = ~np.eye(6, dtype=bool)
    for k in (1, 2, 3):
        np.testing.assert_allclose(out[..., k][off], -out[..., k].T[off])
        d = np.diag(block[..., k])
        np.testing.assert_allclose(np.diag(out[..., k]), np.where(d > 0, -d, 0))


def test_symmetry_snapping_restores_exact_symmetry(hand_built):
    s = CrysTensScaling.fit(hand_built)
    t = encode(hand_built.subset([2]), s)
    rng = np.random.default_rng(5)
    noisy = t + rng.normal(0, 0.002, t.shape).astype(np.float32)
    res = decode(noisy, s, DecodeOptions(symprec=0.1))
    assert res.crystals.space_group[0] == 186
    assert _matches(res.crystals, 0, hand_built, 2)


@st.composite
def random_crystals(draw):
    n = draw(st.integers(1, 12))
    a, b, c = (draw(st.floats(3.0, 15.0)) for _ in range(3))
    al, be, ga = (draw(st.floats(65.0, 115.0)) for _ in range(3))
    zs = [draw(st.integers(1, 94)) for _ in range(n)]
    seed = draw(st.integers(0, 2**31 - 1))
    return (a, b, c, al, be, ga), zs, seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_crystals())
def test_property_random_structures_roundtrip(params):
    from pymatgen.core import Lattice, Structure

    lattice, zs, seed = params
    lat = Lattice.from_parameters(*lattice)
    if lat.volume < 10:
        return
    rng = np.random.default_rng(seed)
    frac = rng.uniform(0, 1, (len(zs), 3))
    st_ = Structure(lat, zs, frac)
    cs = CrystalSet.from_structures([st_], max_sites=52)
    s = CrysTensScaling.paper()
    res = decode(encode(cs, s), s)
    assert not res.failures
    out = res.crystals
    np.testing.assert_array_equal(out.atomic_numbers, cs.atomic_numbers)
    np.testing.assert_allclose(out.lattice, cs.lattice, atol=1e-3)
    assert _periodic_close(out.frac_coords[0, : len(zs)], cs.frac_coords[0, : len(zs)], 1e-4)


def test_snap_elements_pools_same_element_sites_under_noise():
    from crysgen.representations.crystens.auto import snap_elements

    with np.errstate(divide="ignore"):
        log_prior = np.log(np.r_[0.0, np.full(94, 1 / 94)])
    truth = np.array([26] * 2 + [8] * 8)
    rng = np.random.default_rng(4)
    sigma = 0.4
    hits_pooled = hits_rounded = 0
    for _ in range(200):
        est = truth + rng.normal(0, sigma, truth.shape)
        hits_pooled += np.array_equal(snap_elements(est, sigma, log_prior), truth)
        hits_rounded += np.array_equal(np.rint(est), truth)
    assert hits_pooled > 160 and hits_rounded < 60
    clean = np.array([7.0000001, 8.0, 8.0, 9.0])
    assert snap_elements(clean, 1e-6, log_prior).tolist() == [7, 8, 8, 9]


@pytest.mark.parametrize("mode", ["auto", "faithful"])
def test_an_empty_batch_decodes_to_an_empty_result(mode):
    res = decode(np.zeros((0, 4, 64, 64), np.float32), CrysTensScaling.paper(), DecodeOptions(mode=mode))
    assert len(res.crystals) == 0 and res.failures == [] and res.n_input == 0
    assert all(len(v) == 0 for v in res.diagnostics.values())


@pytest.mark.parametrize("mode", ["auto", "faithful"])
def test_decoding_runs_with_one_openmp_thread(hand_built, mode, monkeypatch):
    """Faithful decoding's tiny per-crystal k-means with OpenMP's default threads beside torch's
    was over ten times slower on two busy cores; decode limits OpenMP to one thread."""
    import sklearn.cluster  # noqa: F401  (loads the OpenMP runtime k-means uses)
    from threadpoolctl import threadpool_info

    from crysgen.representations.crystens import auto, faithful

    s = CrysTensScaling.paper()
    tensors = encode(hand_built, s)
    seen = []
    real = (auto if mode == "auto" else faithful).decode_batch

    def spy(*args):
        seen.extend(p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp")
        return real(*args)

    monkeypatch.setattr(auto if mode == "auto" else faithful, "decode_batch", spy)
    assert len(decode(tensors, s, DecodeOptions(mode=mode)).crystals) == len(hand_built)
    assert seen and set(seen) == {1}


@pytest.mark.parametrize("mode", ["auto", "faithful"])
def test_tensors_far_from_any_crystal_fail_and_real_ones_pass(perov_csv, mode):
    """Uniform noise used to "decode" with no failure; its 8 copies of every site attribute
    spread as much as random numbers, an encoded crystal's not at all, a noisy one's by about σ."""
    from crysgen.data.prepare import PrepareOptions, prepare_dataset

    real, _ = prepare_dataset(perov_csv, PrepareOptions(limit=40), workers=1, progress=False)
    s = CrysTensScaling.fit(real)
    clean = encode(real, s)
    rng = np.random.default_rng(0)
    noisy = np.where(clean != 0, np.clip(clean + 0.05 * rng.standard_normal(clean.shape), 0, 1), 0)
    uniform = rng.random((4, *clean.shape[1:]))
    opts = DecodeOptions(mode=mode)
    for batch in (clean, noisy):
        res = decode(batch, s, opts)
        assert not [f for f in res.failures if "far from any crystal" in f.reason]
    res = decode(uniform, s, opts)
    assert len(res.crystals) == 0
    assert all("far from any crystal" in f.reason for f in res.failures)
    unchecked = decode(uniform, s, DecodeOptions(mode=mode, max_copy_spread=None))
    assert not [f for f in unchecked.failures if "far from any crystal" in f.reason]


def test_a_copy_spread_limit_must_be_positive():
    with pytest.raises(CrysgenError, match="max_copy_spread"):
        DecodeOptions(max_copy_spread=0.0)
