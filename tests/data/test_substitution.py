from __future__ import annotations

import numpy as np
import pytest
from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionProbability
from pymatgen.core import Composition, Element, Species

from crysgen import CrysgenError
from crysgen.data.substitution import substitute


def _rows(*formulas: str, sites: int = 8) -> np.ndarray:
    z = np.zeros((len(formulas), sites), np.int64)
    for i, f in enumerate(formulas):
        zs = sorted(el.Z for el, c in Composition(f).items() for _ in range(int(c)))
        z[i, : len(zs)] = zs
    return z


def _formula(row: np.ndarray) -> str:
    counts = {Element.from_Z(int(k)): int((row == k).sum()) for k in np.unique(row[row > 0])}
    return Composition(counts).formula


def test_one_species_changes_for_one_of_the_same_oxidation_state():
    z = _rows(*["NaCl"] * 40)
    res = substitute(z, seed=0)
    assert res.changed.all() and res.by_common_states == 0
    for row, name in zip(res.atomic_numbers, res.substitutions, strict=True):
        comp = Composition(_formula(row))
        assert comp.num_atoms == 2 and len(comp) == 2
        old, new = name.split("→")
        assert old in ("Na", "Cl") and new not in ("Na", "Cl") and Element(new) in comp
        kept = "Cl" if old == "Na" else "Na"
        assert Element(kept) in comp  # exactly one species replaced
        state = 1 if old == "Na" else -1  # the new species keeps the charge: the cell stays neutral
        assert Species(new, state) in SubstitutionProbability().species
        nz = row[row > 0]
        assert (np.diff(nz) >= 0).all() and (row[len(nz):] == 0).all()  # sorted, padding kept at the end
    assert len(set(res.substitutions)) > 3  # drawn, not always the most likely one


def test_allowed_and_avoid_narrow_the_choice():
    z = _rows("NaCl", "NaCl")
    only_k = substitute(z, allowed={19}, seed=1)  # K
    assert [_formula(r) for r in only_k.atomic_numbers] == ["K1 Cl1"] * 2
    not_kcl = substitute(z, allowed={19, 35}, avoid={"KCl"}, seed=1)  # K, Br
    assert [_formula(r) for r in not_kcl.atomic_numbers] == ["Na1 Br1"] * 2
    none_left = substitute(z, allowed={19}, avoid={"KCl"}, seed=1)
    assert not none_left.changed.any() and none_left.substitutions == ["", ""]
    np.testing.assert_array_equal(none_left.atomic_numbers, z)


def test_an_intermetallic_takes_common_oxidation_states():
    res = substitute(_rows("Fe3Al", "Fe3Al", "Fe3Al"), seed=0)
    assert res.changed.all() and res.by_common_states == 3
    for row in res.atomic_numbers:
        assert Composition(_formula(row)).num_atoms == 4


def test_the_draw_is_seeded():
    z = _rows(*["SrTiO3", "LiFePO4", "ZnO", "NaCl"] * 10, sites=12)
    a, b, c = substitute(z, seed=3), substitute(z, seed=3), substitute(z, seed=4)
    np.testing.assert_array_equal(a.atomic_numbers, b.atomic_numbers)
    assert a.substitutions != c.substitutions


def test_bad_atomic_numbers_are_refused():
    with pytest.raises(CrysgenError, match="atomic numbers"):
        substitute(np.array([[11, 200]]))
