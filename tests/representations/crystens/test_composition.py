"""The composition's part of a CrysTens tensor, and decoding with a given composition."""

from __future__ import annotations

import numpy as np
import pytest

from crysgen import CrysgenError
from crysgen.crystal_set import CrystalSet
from crysgen.representations.crystens import CrysTensScaling, DecodeOptions, decode, encode
from crysgen.representations.crystens.composition import known_region
from crysgen.representations.crystens.layout import CrysTensLayout

LAYOUTS = [CrysTensLayout(), CrysTensLayout(sites=52, element_code=True)]


@pytest.mark.parametrize("layout", LAYOUTS, ids=["paper", "codes"])
def test_the_known_region_is_what_encode_writes_there(hand_built, layout):
    scaling = CrysTensScaling.fit(hand_built, layout=layout)
    tensors = encode(hand_built, scaling)
    values, mask = known_region(hand_built.atomic_numbers, scaling)
    np.testing.assert_array_equal(values[mask], tensors[mask])
    np.testing.assert_array_equal(values[~mask], 0)
    o = layout.site_offset
    for i, a in enumerate(hand_built.num_sites):  # the Z strips of present sites are in it ...
        assert mask[i, :, o:o + a, 0].all() and mask[i, :, 0, o:o + a].all()
        assert not mask[i, :, o:o + a, 1:4].any()  # ... their coordinates are not
        assert mask[i, :, o + a:, :].all()  # empty rows are


@pytest.mark.parametrize("mode", ["auto", "faithful"])
def test_a_decode_given_a_composition_returns_exactly_it(hand_built, mode):
    """Noise that makes both decoders misread elements (and atom counts) cannot change them."""
    scaling = CrysTensScaling.fit(hand_built)
    rng = np.random.default_rng(0)
    tensors = encode(hand_built, scaling)
    noisy = tensors + rng.normal(0, 0.05, tensors.shape).astype(np.float32)
    free = decode(noisy, scaling, DecodeOptions(mode=mode))
    misread = sum(not np.array_equal(np.sort(free.crystals.atomic_numbers[j]),
                                     np.sort(hand_built.atomic_numbers[i]))
                  for j, i in enumerate(free.index))
    assert misread + len(free.failures) > 0  # the test needs noise the decoder alone cannot undo
    res = decode(noisy, scaling, DecodeOptions(mode=mode), atomic_numbers=hand_built.atomic_numbers)
    assert not res.failures
    np.testing.assert_array_equal(res.crystals.atomic_numbers, hand_built.atomic_numbers)
    np.testing.assert_array_equal(res.crystals.num_sites, hand_built.num_sites)


@pytest.mark.parametrize("mode", ["auto", "faithful"])
def test_a_given_composition_keeps_repeated_sites(hand_built, mode):
    """Without a composition, an exact repeat is merged; with one, every site stays."""
    one = hand_built.subset([0])
    z, f = one.atomic_numbers.copy(), one.frac_coords.copy()
    a = int(one.num_sites[0])
    z[0, a], f[0, a] = z[0, 0], f[0, 0]  # site 0 twice
    twice = CrystalSet(z, f, one.lattice, one.space_group, one.num_sites + 1, one.ids)
    scaling = CrysTensScaling.fit(hand_built)
    tensors = encode(twice, scaling)
    assert decode(tensors, scaling, DecodeOptions(mode=mode)).crystals.num_sites[0] == a
    res = decode(tensors, scaling, DecodeOptions(mode=mode), atomic_numbers=twice.atomic_numbers)
    assert res.crystals.num_sites[0] == a + 1


def test_compositions_the_layout_cannot_hold_are_refused(hand_built):
    scaling = CrysTensScaling.fit(hand_built.subset([0, 1]), layout=CrysTensLayout(sites=8))  # NaCl, SrTiO3
    tensors = np.zeros((1, *scaling.layout.shape()), np.float32)
    with pytest.raises(CrysgenError, match="at most 8"):
        known_region(np.full((1, 9), 11), scaling)
    with pytest.raises(CrysgenError, match=r"Z = 92 lie outside this model's atomic-number range"):
        known_region(np.array([[11, 92]]), scaling)
    with pytest.raises(CrysgenError, match="no gaps"):
        known_region(np.array([[11, 0, 17]]), scaling)
    with pytest.raises(CrysgenError, match="no sites"):
        known_region(np.zeros((1, 3), int), scaling)
    with pytest.raises(CrysgenError, match="2 compositions for 1 tensors"):
        decode(tensors, scaling, atomic_numbers=np.full((2, 2), 11))
