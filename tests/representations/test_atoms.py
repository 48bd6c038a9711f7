from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.representations.atoms import (
    AtomSetSpec,
    decode,
    element_code_table,
    encode,
    nearest_elements,
    nearest_elements_at_most,
    niggli_reduce,
    num_elements,
    parse_formula,
)
from tests.conftest import load_cif


@pytest.fixture(scope="module")
def crystals() -> CrystalSet:
    names = ["NaCl", "SrTiO3", "ZnO_wurtzite", "triclinic_LiFePO"]
    return CrystalSet.from_structures([load_cif(n) for n in names], ids=names)


def test_element_codes_are_unique_and_keep_columns_together():
    table = element_code_table()[1:]
    assert len({tuple(r) for r in table}) == len(table)  # every element its own code
    assert np.all(table.sum(1) == 2)  # one period + one column
    # Na and K share their column (half the code); Na and its neighbour Mg share only the period
    na, k, mg = element_code_table()[[11, 19, 12]]
    assert (na * k).sum() == 1 and (na * mg).sum() == 1 and np.abs(na - k).sum() == 2
    assert np.abs(element_code_table()[57] - element_code_table()[58]).sum() == 2  # La != Ce


@pytest.mark.parametrize("code", ["lengths_angles", "cholesky"])
def test_round_trip_keeps_every_crystal(crystals, code):
    spec = AtomSetSpec.fit(crystals, max_atoms=32, lattice_code=code)
    sets = encode(crystals, spec)
    assert sets.types.shape == (4, 32, 39) and sets.frac.shape == (4, 32, 3) and sets.lattice.shape == (4, 6)
    assert sets.mask.sum() == crystals.num_sites.sum()
    res = decode(sets, spec, ids=list(crystals.ids))
    assert not res.failures
    np.testing.assert_allclose(res.crystals.lattice, crystals.lattice, rtol=1e-5)
    sm = StructureMatcher()
    for i in range(len(crystals)):
        a, b = crystals.to_structure(i), res.crystals.to_structure(i)
        assert a.composition == b.composition and sm.fit(a, b)


def test_cholesky_code_is_log_diagonal_and_shears_of_the_metric_factor(crystals):
    red = niggli_reduce(crystals)
    spec = AtomSetSpec.fit(red, lattice_code="cholesky")
    raw = encode(red, spec).lattice * np.asarray(spec.lattice_std) + np.asarray(spec.lattice_mean)
    for i in range(len(red)):
        m = red.to_structure(i).lattice.matrix
        chol = np.linalg.cholesky(m @ m.T)  # rows: the cell turned so that a lies along x
        k = red.num_sites[i]
        np.testing.assert_allclose(np.exp(raw[i, :3]) * k ** (1 / 3), np.diag(chol), rtol=1e-5)
        np.testing.assert_allclose(raw[i, 3:], [chol[1, 0] / chol[0, 0], chol[2, 0] / chol[0, 0],
                                                chol[2, 1] / chol[1, 1]], atol=1e-5)
    assert np.all(np.abs(raw[:, 3:]) <= 0.5 + 1e-6)  # a Niggli cell's shears
    # any six numbers are a cell: standard-normal features all decode
    rng = np.random.default_rng(0)
    sets = encode(red, spec)
    noisy = replace(sets, lattice=rng.normal(size=sets.lattice.shape).astype(np.float32))
    assert not decode(noisy, spec).failures


def test_lattice_codes_are_checked_and_old_specs_read_as_lengths_and_angles(crystals, tmp_path):
    with pytest.raises(CrysgenError, match="unknown lattice code 'polar'"):
        AtomSetSpec.fit(crystals, lattice_code="polar")
    spec = AtomSetSpec.fit(crystals)
    assert spec.lattice_code == "lengths_angles"
    path = spec.save(tmp_path / "atoms.json")
    import json

    old = json.loads(path.read_text())
    del old["lattice_code"]  # written before the field existed
    path.write_text(json.dumps(old))
    assert AtomSetSpec.load(path) == spec
    assert AtomSetSpec.fit(crystals, lattice_code="cholesky").refit(crystals).lattice_code == "cholesky"


def test_noisy_codes_snap_to_the_right_elements(crystals):
    spec = AtomSetSpec.fit(crystals)
    sets = encode(crystals, spec)
    noisy = sets.types + np.random.default_rng(0).normal(0, 0.15, sets.types.shape).astype(np.float32)
    z = nearest_elements(noisy, spec.elements, spec) * sets.mask
    assert np.array_equal(z, sets.atomic_numbers)


def test_decode_with_given_elements_keeps_them(crystals):
    spec = AtomSetSpec.fit(crystals)
    sets = encode(crystals, spec)
    sets.types[:] = 0.0  # codes carry nothing: the given elements must win
    res = decode(sets, spec, atomic_numbers=sets.atomic_numbers)
    assert np.array_equal(res.crystals.atomic_numbers[:, :20], crystals.atomic_numbers[:, :20])


def test_decode_gives_reasons_not_exceptions(crystals):
    spec = AtomSetSpec.fit(crystals)
    sets = encode(crystals, spec)
    sets.lattice[0, 0] = 50.0  # a length of e^(50 σ): no real cell
    sets.frac[1, 0, 0] = np.nan
    sets.mask[2] = False
    res = decode(sets, spec)
    reasons = dict(res.failures)
    assert set(reasons) == {0, 1, 2}
    assert reasons[0].startswith("impossible_lattice") and reasons[1].startswith("not_finite")
    assert reasons[2].startswith("no_atoms")
    assert list(res.index) == [3]


def test_niggli_reduction_keeps_the_crystal():
    from pymatgen.core import Lattice, Structure

    s = Structure(Lattice.from_parameters(4, 5, 6, 90, 90, 90), ["Na", "Cl"], [[0, 0, 0], [0.3, 0.2, 0.6]])
    basis = np.array([[1, 0, 0], [1, 1, 0], [0, 2, 1]])  # unimodular: the same lattice, skewed cell
    skewed = Structure(Lattice(basis @ s.lattice.matrix), s.species, s.cart_coords,
                       coords_are_cartesian=True)
    assert max(skewed.lattice.abc) > 10
    cs = CrystalSet.from_structures([skewed], ids=["x"])
    red = niggli_reduce(cs)
    assert sorted(red.lattice[0, :3]) == pytest.approx([4, 5, 6], abs=1e-6)
    assert StructureMatcher().fit(red.to_structure(0), s)


def test_parse_formula_errors():
    assert parse_formula("Fe2O3") == {26: 2, 8: 3}
    for bad in ("Xx2O", "Fe0.5O", "", "Fe2O3)"):
        with pytest.raises(CrysgenError):
            parse_formula(bad)


def test_size_histogram_counts_sites_and_distinct_elements(crystals):
    assert num_elements(np.array([[8, 26, 8, 0], [0, 0, 0, 0], [3, 26, 15, 8]])).tolist() == [2, 0, 4]
    spec = AtomSetSpec.fit(crystals)
    counts = np.array(spec.size_counts)
    assert counts.sum(1).tolist() == spec.num_atoms_counts  # its margin is the sites histogram
    expected = {(int(n), int(k)) for n, k in zip(crystals.num_sites, num_elements(crystals.atomic_numbers),
                                                 strict=True)}
    assert {tuple(ix) for ix in np.argwhere(counts)} == expected


def test_refit_keeps_the_encoding_and_takes_the_new_data_s_sizes_and_elements(crystals):
    small = crystals.subset(np.flatnonzero(crystals.num_sites <= 5))
    base = AtomSetSpec.fit(small)
    spec = base.refit(crystals)
    own = AtomSetSpec.fit(crystals)
    encoding = ("code_mean", "type_sigma", "lattice_mean", "lattice_std")
    assert {k: getattr(spec, k) for k in encoding} == {k: getattr(base, k) for k in encoding}
    assert {k: getattr(spec, k) for k in encoding} != {k: getattr(own, k) for k in encoding}
    assert spec.max_atoms == own.max_atoms > base.max_atoms
    assert (spec.elements, spec.num_atoms_counts, spec.size_counts) == (
        own.elements, own.num_atoms_counts, own.size_counts)
    assert base.refit(crystals, 12).max_atoms == 12
    with pytest.raises(CrysgenError, match="more than"):
        base.refit(crystals, 1)


def test_element_limit_folds_a_stray_site_into_the_kept_elements(crystals):
    spec = AtomSetSpec.fit(crystals)
    sets = encode(crystals, spec)
    codes = spec.codes()
    i = crystals.ids.tolist().index("SrTiO3")
    o_sites = np.flatnonzero(sets.atomic_numbers[i] == 8)
    types = sets.types.copy()
    types[i, o_sites[0]] = codes[11] + 0.05  # one O site strays to (near) Na: four elements
    free = nearest_elements(types, spec.elements, spec) * sets.mask
    assert set(free[i][sets.mask[i]].tolist()) == {8, 11, 22, 38}
    limit = num_elements(sets.atomic_numbers)
    z = nearest_elements_at_most(types, sets.mask, spec.elements, spec, limit)
    # the two elements of one site each that fit exactly (Sr, Ti) are kept over the stray Na
    assert set(z[i][sets.mask[i]].tolist()) == {8, 22, 38}
    others = np.arange(len(z)) != i
    assert np.array_equal(z[others], free[others])  # samples within their limit: unchanged
    assert np.array_equal(nearest_elements_at_most(types, sets.mask, spec.elements, spec, limit * 0), free)
    assert np.array_equal(nearest_elements_at_most(types, sets.mask, spec.elements, spec, limit + 1), free)
    res = decode(replace(sets, types=types), spec, max_elements=limit)
    assert (num_elements(res.crystals.atomic_numbers) <= limit[res.index]).all()
