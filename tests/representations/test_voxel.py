from __future__ import annotations

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.representations import voxel as V
from crysgen.representations import watershed as W
from tests.conftest import load_cif


def _set(structures):
    return CrystalSet.from_structures(structures)


def test_single_atom_peaks_at_its_voxel_with_integral_z():
    s = Structure(Lattice.cubic(12.0), ["Na"], [[0.5, 0.5, 0.5]])
    cs = _set([s])
    rho = V.density(cs)[0]
    assert np.unravel_index(rho.argmax(), rho.shape) in {(15, 15, 15), (16, 16, 16), (15, 16, 16),
                                                          (16, 15, 15), (15, 15, 16), (16, 16, 15),
                                                          (15, 16, 15), (16, 15, 16)}
    dv = V.voxel_size(cs.lattice[0, :3])
    assert rho.sum() * dv.prod() == pytest.approx(11, rel=0.03)  # Z of Na, electrons


def test_lattice_read_back_is_exact_on_clean_grids_and_after_rotation():
    s = Structure(Lattice.orthorhombic(4.0, 5.0, 6.5), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    grids = V.encode(_set([s]))
    assert V.read_lattice(grids.inputs[:, 1:])[0] == pytest.approx([4.0, 5.0, 6.5], abs=1e-9)
    turned = V.rotate(grids.inputs, ((0, 1),))
    assert V.read_lattice(turned[:, 1:])[0] == pytest.approx([5.0, 4.0, 6.5], abs=1e-9)
    # a decoded-looking grid whose channel 1 leaks into axis 0: channel 0 still gets axis 0
    mixed = grids.inputs[:, 1:].copy()
    mixed[:, 1] += 1.5 * mixed[:, 0]  # steeper along axis 0 than along its own axis 1
    got = V.read_lattice(mixed)[0]
    assert got[0] == pytest.approx(4.0) and got[1] == pytest.approx(5.0) and got[2] == pytest.approx(6.5)
    assert np.isnan(V.read_lattice(np.full_like(mixed, np.nan))).all()


def test_rotation_keeps_all_channels_consistent():
    """Ground-truth maps rotated together decode to the same crystal."""
    cs = _set([load_cif("SrTiO3")])
    g = V.encode(cs)
    rotation = V.random_rotation(np.random.default_rng(3))
    x, species = V.rotate(g.inputs, rotation), V.rotate(g.species, rotation)
    assert (species > 0).sum() == (g.species > 0).sum()
    # the density maximum stays on an occupied voxel
    assert species[0].ravel()[x[0, 0].argmax()] > 0
    res = W.decode(species > 0, species, V.read_lattice(x[:, 1:]))
    assert not res.failures
    assert StructureMatcher().fit(res.crystals.to_structure(0), cs.to_structure(0))


def test_species_map_labels_sites_and_background():
    cs = _set([load_cif("SrTiO3")])
    sp = V.species_map(cs)[0]
    assert set(np.unique(sp)) == {0, 8, 22, 38}
    assert (sp == 0).mean() > 0.3


def test_non_orthogonal_cells_are_refused_with_a_reason():
    cs = _set([load_cif("triclinic_LiFePO")])
    (reason,) = V.unusable_reason(cs)
    assert "not all 90" in reason
    with pytest.raises(CrysgenError, match="cannot be voxelised"):
        V.encode(cs)
