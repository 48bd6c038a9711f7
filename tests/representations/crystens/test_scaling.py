from __future__ import annotations

import json

import numpy as np
import pytest

from crysgen import CrysgenError, CrystalSet
from crysgen.representations.crystens import CrysTensScaling
from crysgen.representations.crystens.scaling import FEATURES
from tests.conftest import load_cif


def test_paper_preset_has_the_seed_ranges():
    s = CrysTensScaling.paper()
    assert set(s.ranges) == set(FEATURES)
    assert s.ranges["Z"] == (1.0, 99.0) and s.ranges["c"] == (2.168, 116.195)
    assert s.max_z == 99
    assert s.scale(np.array(0.0), "dir") == pytest.approx(0.5)


def test_fit_on_a_training_set(hand_built):
    s = CrysTensScaling.fit(hand_built)
    assert s.ranges["Z"] == (3.0, 38.0)  # Li .. Sr
    np.testing.assert_allclose(s.ranges["a"], (3.25, 11.0))
    lo, hi = s.ranges["dir"]
    assert lo == -hi and 0.5 < hi < 1
    assert s.element_counts[8] == 3 + 2 + 1 + 52 // 3 + 1  # O sites: SrTiO3, ZnO, LiFePO, P1
    assert s.scale(np.array(s.ranges["a"]), "a").tolist() == [0.0, 1.0]


def test_constant_feature_is_widened_so_it_stays_nonzero():
    cs = CrystalSet.from_structures([load_cif("NaCl"), load_cif("SrTiO3")])
    s = CrysTensScaling.fit(cs)
    assert s.ranges["alpha"] == (0.0, 180.0)
    assert s.scale(np.array(90.0), "alpha") == pytest.approx(0.5)


def test_json_roundtrip(tmp_path, hand_built):
    s = CrysTensScaling.fit(hand_built)
    back = CrysTensScaling.load(s.save(tmp_path / "scaling.json"))
    assert back == s
    assert CrysTensScaling.load("paper") == CrysTensScaling.paper()


def test_bad_scaling_files(tmp_path):
    with pytest.raises(CrysgenError, match="no such scaling"):
        CrysTensScaling.load(tmp_path / "none.json")
    p = tmp_path / "bad.json"
    p.write_text("{oops")
    with pytest.raises(CrysgenError, match="not valid JSON"):
        CrysTensScaling.load(p)
    p.write_text(json.dumps({"format": "other"}))
    with pytest.raises(CrysgenError, match="not a CrysTens scaling"):
        CrysTensScaling.load(p)
    d = CrysTensScaling.paper().to_dict()
    d["ranges"]["a"] = {"min": 5.0, "max": 1.0}
    with pytest.raises(CrysgenError, match="invalid"):
        CrysTensScaling.from_dict(d)


def test_priors_for_the_auto_decoder(hand_built):
    s = CrysTensScaling.fit(hand_built)
    assert s.num_elements_counts == {2: 3, 3: 1, 4: 1}  # NaCl, ZnO, MgO-P1 | SrTiO3 | LiFePO
    lp = s.num_elements_log_prior()
    assert np.isneginf(lp[0]) and lp[2] > lp[3] == lp[4] > lp[5]
    lz = s.element_log_prior()
    assert len(lz) == s.max_z + 1 and lz[12] == lz.max()  # Mg: 34 of 73 sites
