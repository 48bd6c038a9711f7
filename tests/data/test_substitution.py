from __future__ import annotations

import numpy as np
import pytest
from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionProbability
from pymatgen.core import Composition, Element, Species

from crysgen import CrysgenError
from crysgen.data.substitution import substitute, tilted


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


def test_tilted_keeps_the_draw_closest_to_p_with_mean_change_zero():
    p = np.array([0.5, 0.3, 0.2])
    delta = np.array([0.4, 0.1, -0.2])  # p's mean change is +0.19
    w = tilted(p, delta)
    assert w.sum() == pytest.approx(1) and (w > 0).all()
    assert w @ delta == pytest.approx(0, abs=1e-8)
    # the exponential tilt: log(w / p) is affine in delta
    ratio = np.log(w / p)
    slope = (ratio[0] - ratio[1]) / (delta[0] - delta[1])
    assert ratio[2] - ratio[1] == pytest.approx(slope * (delta[2] - delta[1]))
    assert tilted(p, -delta) @ delta == pytest.approx(0, abs=1e-8)  # either direction
    # balanced already: unchanged
    np.testing.assert_allclose(tilted(np.array([0.5, 0.5]), np.array([-0.1, 0.1])), [0.5, 0.5])


def test_tilted_without_a_sign_change_takes_the_smallest_change():
    np.testing.assert_allclose(tilted(np.array([0.2, 0.5, 0.3]), np.array([0.3, 0.1, 0.1])),
                               [0, 0.625, 0.375])
    np.testing.assert_allclose(tilted(np.array([0.2, 0.8]), np.array([-0.3, -0.5])), [1, 0])


def test_mass_balanced_substitution_keeps_the_formula_mass_on_average():
    from pymatgen.core import Composition as C

    z = _rows(*["NaCl", "SrTiO3", "ZnO", "LiFePO4", "MgAl2O4", "CaF2", "KBr", "Fe3Al"] * 40, sites=14)
    plain = substitute(z, seed=0)
    balanced = substitute(z, draw="mass-balanced", seed=0)
    for res in (plain, balanced):  # the recorded change is the rows' own
        for before, after, change in zip(z, res.atomic_numbers, res.log_mass_change, strict=True):
            want = np.log(C(_formula(after)).weight / C(_formula(before)).weight)
            assert change == pytest.approx(want, abs=1e-6)
    assert balanced.changed.all() and plain.changed.all()
    assert plain.log_mass_change.mean() > 0.08  # the data-mined draw favours heavier ions
    assert abs(balanced.log_mass_change.mean()) < 0.03
    assert 0.3 < (balanced.log_mass_change < 0).mean() < 0.7  # lighter as often as heavier
    assert len(set(balanced.substitutions)) > 10  # still a draw


def test_an_unknown_balance_is_refused():
    with pytest.raises(CrysgenError, match="draw must be one of probability, mass-balanced"):
        substitute(_rows("NaCl"), draw="volume")


def test_a_seeded_draw_does_not_depend_on_the_interpreter_s_string_hashing():
    import os
    import subprocess
    import sys

    code = ("from crysgen.data.substitution import substitute; import numpy as np; "
            "z = np.array([[11, 17, 0, 0], [8, 22, 38, 0], [9, 9, 20, 0], [8, 30, 0, 0]] * 5); "
            "print(' '.join(substitute(z, draw='mass-balanced', seed=0).substitutions))")
    runs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        runs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True).stdout)
    assert len(runs) == 1 and "→" in runs.pop()
