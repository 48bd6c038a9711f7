from __future__ import annotations

from pymatgen.core import Lattice, Structure

from crysgen.evaluation.validity import structurally_valid
from tests.conftest import load_cif


def test_real_crystals_are_valid():
    assert structurally_valid(load_cif("NaCl")) and structurally_valid(load_cif("triclinic_LiFePO"))


def test_overlapping_atoms_and_flat_cells_are_invalid():
    close = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.1, 0, 0]])  # 0.4 Å apart
    assert not structurally_valid(close)
    assert structurally_valid(Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.2, 0, 0]]))
    flat = Structure(Lattice.from_parameters(0.01, 3, 3, 90, 90, 90), ["Na"], [[0, 0, 0]])
    assert not structurally_valid(flat)
