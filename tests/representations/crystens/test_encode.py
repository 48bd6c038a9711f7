from __future__ import annotations

import numpy as np
import pytest

from crysgen import CrysgenError, CrystalSet
from crysgen.representations.crystens import CrysTensScaling, encode
from tests.conftest import load_cif


def _nacl():
    return CrystalSet.from_structures([load_cif("NaCl")], space_groups=[225], max_sites=52)


def test_shape_dtype_and_layout():
    cs = _nacl()
    t = encode(cs, CrysTensScaling.paper())
    assert t.shape == (1, 4, 64, 64) and t.dtype == np.float32
    # header strips are the same in all 4 layers, both as rows and as columns
    for layer in range(1, 4):
        np.testing.assert_array_equal(t[0, layer, :11, 12:], t[0, 0, :11, 12:])
        np.testing.assert_array_equal(t[0, layer, 12:, :11], t[0, 0, 12:, :11])
    np.testing.assert_array_equal(t[0, 0, 12:, :11], t[0, 0, :11, 12:].T)
    # padding row/column 11, the top-left block, empty sites and the diagonal are 0
    assert not t[0, :, 11, :].any() and not t[0, :, :, 11].any() and not t[0, :, :12, :12].any()
    assert not t[0, :, 20:, :].any() and not t[0, :, :, 20:].any()
    assert not t[0, :, np.arange(12, 20), np.arange(12, 20)].any()


def test_exact_values_with_paper_scaling():
    cs = _nacl()
    s = CrysTensScaling.paper()
    t = encode(cs, s)[0].astype(np.float64)
    f = cs.frac_coords[0]
    assert cs.atomic_numbers[0, 0] == 11
    assert t[0, 12, 0] == pytest.approx((11 - 1) / 98, abs=1e-7)
    assert t[2, 0, 16] == pytest.approx((17 - 1) / 98, abs=1e-7)  # Cl at site 4, a column copy
    assert t[3, 12 + 1, 4] == pytest.approx((5.64 - 1.7624) / (42.664 - 1.7624), abs=1e-6)
    assert t[1, 10, 12] == pytest.approx((225 - 1) / 229, abs=1e-6)
    assert t[0, 12 + 2, 1 + 2] == pytest.approx(f[2, 2] / 0.99999, abs=1e-6)  # z of site 2
    i, j = 1, 6
    d = f[i] - f[j]
    assert t[0, 12 + i, 12 + j] == pytest.approx(
        (np.linalg.norm(d) - 0.021379) / (1.65467 - 0.021379), abs=1e-6)
    for k in range(3):
        assert t[1 + k, 12 + i, 12 + j] == pytest.approx((d[k] + 0.99999) / 1.99998, abs=1e-6)
        assert t[1 + k, 12 + j, 12 + i] == pytest.approx((-d[k] + 0.99999) / 1.99998, abs=1e-6)


def test_channel_first_is_a_transpose_not_a_reshape():
    cs = _nacl()
    t = encode(cs, CrysTensScaling.paper())[0]
    hwc = t.transpose(1, 2, 0)
    assert hwc[12, 0, 3] == t[3, 12, 0]
    assert not np.array_equal(t.reshape(64, 64, 4), hwc)


def test_batch_equals_single_and_fitted_scaling_in_unit_range(hand_built):
    s = CrysTensScaling.fit(hand_built)
    batch = encode(hand_built, s, chunk=2)
    for i in range(len(hand_built)):
        np.testing.assert_array_equal(batch[i], encode(hand_built.subset([i]), s)[0])
    assert batch.min() >= -1e-6 and batch.max() <= 1 + 1e-6


def test_more_than_52_sites_is_refused():
    cs = CrystalSet.from_structures([load_cif("P1_53_sites")])
    with pytest.raises(CrysgenError, match="at most 52"):
        encode(cs, CrysTensScaling.paper())
