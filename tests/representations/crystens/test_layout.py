"""CrysTens layouts: any number of site rows S, and element codes in the header strips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crysgen import CrysgenError, CrystalSet
from crysgen.representations.crystens import CrysTensScaling, DecodeOptions, decode, encode
from crysgen.representations.crystens.layout import CrysTensLayout
from crysgen.representations.elements import element_code_table


def _small(hand_built: CrystalSet) -> CrystalSet:
    return hand_built.subset(slice(0, 4))  # NaCl, SrTiO3, ZnO, LiFePO (the 52-site cell left out)


def _same_elements(a: CrystalSet, i: int, b: CrystalSet, j: int) -> bool:
    za = np.sort(a.atomic_numbers[i, : a.num_sites[i]])
    zb = np.sort(b.atomic_numbers[j, : b.num_sites[j]])
    return np.array_equal(za, zb)


@pytest.mark.parametrize("sites", [32, 52])
@pytest.mark.parametrize("element_code", [False, True])
def test_round_trip_is_exact_at_any_size(hand_built, sites, element_code):
    crystals = hand_built if sites >= 52 else _small(hand_built)
    layout = CrysTensLayout(sites=sites, element_code=element_code)
    scaling = CrysTensScaling.fit(crystals, layout=layout)
    t = encode(crystals, scaling)
    side = (22 if element_code else 12) + sites
    assert t.shape == (len(crystals), 4, side, side) and layout.size == side
    for mode in ("auto", "faithful"):
        res = decode(t, scaling, DecodeOptions(mode=mode))
        assert not res.failures
        assert res.crystals.max_sites == sites
        assert res.diagnostics["num_atoms"].tolist() == crystals.num_sites.tolist()
    res = decode(t, scaling)
    np.testing.assert_array_equal(res.crystals.atomic_numbers, crystals.with_max_sites(sites).atomic_numbers)
    np.testing.assert_allclose(res.crystals.lattice, crystals.lattice, atol=1e-4)
    d = res.crystals.frac_coords - crystals.with_max_sites(sites).frac_coords
    assert np.abs(d - np.rint(d)).max() < 1e-4


def test_element_code_rows_follow_the_documented_layout(hand_built):
    """Entry c of site s's code is at row 12 + c // 4, layer c % 4, column 22 + s (and transposed)."""
    scaling = CrysTensScaling.fit(_small(hand_built), layout=CrysTensLayout(sites=32, element_code=True))
    t = encode(_small(hand_built), scaling)[1]  # SrTiO3: Sr, Ti, O, O, O
    table = element_code_table()
    for s, z in enumerate(hand_built.atomic_numbers[1, :5]):
        code = np.array([t[c % 4, 12 + c // 4, 22 + s] for c in range(39)])
        np.testing.assert_array_equal(code, table[z])
        np.testing.assert_array_equal(t[:, 12:22, 22 + s].T.ravel()[:39], table[z])
        np.testing.assert_array_equal(t[:, 22 + s, 12:22].T.ravel()[:39], table[z])
    assert not t[:, 12:22, 27:].any() and not t[3, 21, :].any()  # empty sites and the 40th slot
    np.testing.assert_array_equal(t[:, :12, :12], 0)  # the paper's corner is untouched


def test_noise_snaps_to_the_right_element_where_z_alone_does_not(hand_built):
    """At noise 0.01 the paper's Z (range 1-99, one atomic number ~ 0.01) misreads elements;
    the element codes do not (two codes are >= sqrt(2) apart)."""
    crystals = hand_built
    scaling = CrysTensScaling.paper(CrysTensLayout(element_code=True))  # any element 1-99 allowed
    rng = np.random.default_rng(0)
    t = encode(crystals, scaling)
    t += rng.normal(0.0, 0.01, t.shape).astype(np.float32)
    coded = decode(t, scaling)
    by_z = decode(t, scaling, DecodeOptions(elements="round"))
    assert not coded.failures and not by_z.failures
    assert all(_same_elements(coded.crystals, j, crystals, int(i)) for j, i in enumerate(coded.index))
    wrong_z = sum(not _same_elements(by_z.crystals, j, crystals, int(i)) for j, i in enumerate(by_z.index))
    assert wrong_z >= 2


def test_a_crystal_larger_than_the_layout_is_a_clear_error(hand_built):
    with pytest.raises(CrysgenError, match="at most 32 sites; 1 crystal"):
        CrysTensScaling.fit(hand_built, layout=CrysTensLayout(sites=32))
    scaling = CrysTensScaling.fit(_small(hand_built), layout=CrysTensLayout(sites=32))
    with pytest.raises(CrysgenError, match="--max-sites 32"):
        encode(hand_built, scaling)
    with pytest.raises(CrysgenError, match=r"shape \(N, 4, 44, 44\)"):
        decode(np.zeros((1, 4, 64, 64), np.float32), scaling)
    with pytest.raises(CrysgenError, match="positive integer"):
        CrysTensLayout(sites=0)


def test_layout_travels_in_the_scaling_file_and_old_files_are_the_papers(hand_built, tmp_path):
    layout = CrysTensLayout(sites=32, element_code=True)
    path = CrysTensScaling.fit(_small(hand_built), layout=layout).save(tmp_path / "s.json")
    assert CrysTensScaling.load(path).layout == layout
    data = json.loads(path.read_text())
    del data["layout"]  # a file written before layouts existed
    assert CrysTensScaling.from_dict(data).layout == CrysTensLayout(sites=52, element_code=False)
    assert CrysTensLayout.fitting(hand_built.num_sites).sites == 52
