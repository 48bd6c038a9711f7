from __future__ import annotations

import pytest

from crysgen import CrystalSet
from tests.conftest import load_cif

NAMES = ["NaCl", "SrTiO3", "ZnO_wurtzite", "triclinic_LiFePO", "P1_52_sites"]


@pytest.fixture
def hand_built() -> CrystalSet:
    """Five hand-built crystals: Fm-3m, cubic perovskite, hexagonal, triclinic, 52 sites."""
    return CrystalSet.from_structures([load_cif(n) for n in NAMES], ids=NAMES, max_sites=52,
                                      space_groups=[225, 221, 186, 1, 1])
