from __future__ import annotations

import numpy as np
import pytest
import spglib

from crysgen import CrysgenError
from crysgen.representations.symmetry import (
    lattice_matrix,
    site_symmetry,
    symmetrize,
    trivial_symmetry,
)
from tests.conftest import load_cif


def _parts(name):
    st = load_cif(name)
    return np.array(st.atomic_numbers), np.array(st.frac_coords), np.array(st.lattice.parameters)


def _space_group(z, frac, lattice, symprec=1e-3):
    data = spglib.get_symmetry_dataset((lattice_matrix(lattice), np.mod(frac, 1), z), symprec=symprec)
    return data.number if data is not None else 0


@pytest.mark.parametrize(("name", "number", "ops"), [("ZnO_wurtzite", 186, 12), ("SrTiO3", 221, 48),
                                                     ("NaCl", 225, 192), ("triclinic_LiFePO", 1, 1)])
def test_site_symmetry_finds_the_group_and_permutes_sites_within_elements(name, number, ops):
    z, frac, lat = _parts(name)
    sym = site_symmetry(z, frac, lat)
    assert (sym.space_group, sym.num_ops, sym.num_sites) == (number, ops, len(z))
    assert (sym.rotations[0] == np.eye(3)).all() and np.allclose(sym.translations[0], 0)
    for img in sym.images:
        assert sorted(img.tolist()) == list(range(len(z)))  # a permutation
        assert (z[img] == z).all()  # of sites of one element
    for r, t, img in zip(sym.rotations, sym.translations, sym.images, strict=True):
        d = frac @ r.T + t - frac[img]
        assert np.abs(d - np.round(d)).max() < 1e-6  # R x_i + t is site images[g, i]


def test_orbits_are_the_wyckoff_sets():
    z, frac, lat = _parts("NaCl")  # conventional cell: 4 Na on one orbit, 4 Cl on another
    orbits = site_symmetry(z, frac, lat).orbits()
    assert len(set(orbits.tolist())) == 2
    assert all(len(set(z[orbits == o].tolist())) == 1 for o in set(orbits.tolist()))


@pytest.mark.parametrize("name", ["ZnO_wurtzite", "SrTiO3", "NaCl"])
def test_symmetrize_puts_a_perturbed_crystal_back_on_its_group(name):
    z, frac, lat = _parts(name)
    sym = site_symmetry(z, frac, lat)
    rng = np.random.default_rng(0)
    noisy_f = frac + rng.normal(0, 0.03, frac.shape)
    noisy_l = lat + np.r_[rng.normal(0, 0.1, 3), rng.normal(0, 2.0, 3)]
    assert _space_group(z, noisy_f, noisy_l) != sym.space_group
    f, lt = symmetrize(noisy_f, noisy_l, sym)
    assert _space_group(z, f, lt) == sym.space_group  # at a tolerance of 0.001 Å
    assert (f >= 0).all() and (f < 1).all()
    f2, l2 = symmetrize(f, lt, sym)  # a projection: once is enough
    d = f2 - f
    assert np.abs(d - np.round(d)).max() < 1e-9 and np.allclose(l2, lt)


def test_symmetrize_moves_sites_only_as_far_as_the_noise():
    z, frac, lat = _parts("ZnO_wurtzite")
    sym = site_symmetry(z, frac, lat)
    noisy = frac + np.random.default_rng(1).normal(0, 0.01, frac.shape)
    f, _ = symmetrize(noisy, lat, sym)
    d = f - frac
    d -= np.round(d)
    assert np.abs(d).max() < 0.05  # back near the true sites (up to a shift along the polar c axis)
    assert np.abs(d[:, :2]).max() < 1e-6  # wurtzite fixes x and y of every site exactly


def test_reindexed_symmetry_is_the_same_symmetry_of_renumbered_sites():
    z, frac, lat = _parts("SrTiO3")
    sym = site_symmetry(z, frac, lat)
    order = np.array([3, 0, 4, 1, 2])
    noisy = frac + np.random.default_rng(2).normal(0, 0.02, frac.shape)
    f, _ = symmetrize(noisy, lat, sym)
    g, _ = symmetrize(noisy[order], lat, sym.reindexed(order))
    assert np.allclose(g, f[order])
    with pytest.raises(CrysgenError, match="permutation"):
        sym.reindexed(np.array([0, 0, 1, 2, 3]))


def test_trivial_symmetry_changes_nothing_and_wrong_sizes_are_refused():
    frac = np.random.default_rng(3).random((3, 3))
    f, lt = symmetrize(frac, np.array([3.0, 4.0, 5.0, 80.0, 90.0, 100.0]), trivial_symmetry(3))
    assert np.allclose(f, frac) and np.allclose(lt, [3.0, 4.0, 5.0, 80.0, 90.0, 100.0])
    with pytest.raises(CrysgenError, match="4 sites given for a symmetry of 3"):
        symmetrize(np.zeros((4, 3)), np.array([3.0, 3, 3, 90, 90, 90]), trivial_symmetry(3))


def test_symmetrize_keeps_each_orbit_on_its_wyckoff_position():
    """Three O of a perovskite placed near its Sr stay three sites (on their 3d position), not one point."""
    z, frac, lat = _parts("SrTiO3")
    sym = site_symmetry(z, frac, lat)
    near_sr = frac.copy()
    o = np.flatnonzero(z == 8)
    near_sr[o] = frac[z == 38][0] + np.random.default_rng(4).normal(0, 0.02, (len(o), 3))
    f, _ = symmetrize(near_sr, lat, sym)
    d = f[o] - frac[o]
    assert np.abs(d - np.round(d)).max() < 1e-9  # back on the template's O sites
