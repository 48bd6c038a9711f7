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


@pytest.mark.parametrize("method", V.LATTICE_READBACKS)
def test_lattice_read_back_is_exact_on_clean_grids_and_after_rotation(method):
    s = Structure(Lattice.orthorhombic(4.0, 5.0, 6.5), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    grids = V.encode(_set([s]))
    assert V.read_lattice(grids.inputs[:, 1:], method=method)[0] == pytest.approx([4.0, 5.0, 6.5], abs=1e-6)
    for rotation in (((0, 1),), ((0, 2), (1, 2)), ((1, 2), (1, 2), (0, 1))):
        turned = V.rotate(grids.inputs, rotation)
        expected = V.rotated_lengths([4.0, 5.0, 6.5], rotation)
        assert V.read_lattice(turned[:, 1:], method=method)[0] == pytest.approx(expected, abs=1e-6)
    assert V.rotated_lengths([4.0, 5.0, 6.5], ((0, 1),)).tolist() == [5.0, 4.0, 6.5]
    assert np.isnan(V.read_lattice(np.full_like(grids.inputs[:, 1:], np.nan), method=method)).all()


@pytest.mark.parametrize("method", V.LATTICE_READBACKS)
def test_lattice_read_back_recovers_known_lattices_from_noisy_grids(method):
    """Per-voxel noise of 0.3 Å costs under 0.01 Å: the fit uses every voxel."""
    lengths = np.array([[3.7, 3.7, 3.7], [4.0, 5.0, 6.5], [9.0, 3.2, 5.5]])
    clean = V.coordinate_channels(lengths)
    noisy = clean + np.random.default_rng(0).normal(0, 0.3, clean.shape)
    assert V.read_lattice(noisy, method=method) == pytest.approx(lengths, abs=0.01)


def test_level_read_back_survives_a_decoder_unsure_of_the_orientation():
    """A blend of a channel's ramp running both ways (what an MSE decoder outputs when it cannot tell
    a rotated grid's orientation) keeps its mean: the level read-back is exact, the slope shrinks."""
    lengths = np.array([[4.0, 5.0, 6.5]])
    clean = V.coordinate_channels(lengths)
    reversed_ = clean[:, :, ::-1, ::-1, ::-1]  # every channel's ramp reversed along its own axis
    blend = 0.7 * clean + 0.3 * reversed_
    assert V.read_lattice(blend, method="level")[0] == pytest.approx(lengths[0], abs=1e-6)
    assert V.read_lattice(blend, method="slope")[0] == pytest.approx(0.4 * lengths[0], abs=1e-6)


def test_slope_read_back_ignores_a_leak_into_another_axis():
    s = Structure(Lattice.orthorhombic(4.0, 5.0, 6.5), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    grids = V.encode(_set([s]))
    # a decoded-looking grid whose channel 1 leaks into axis 0: channel 0 still gets axis 0
    mixed = grids.inputs[:, 1:].copy()
    mixed[:, 1] += 1.5 * (mixed[:, 0] - mixed[:, 0].mean())  # steeper along axis 0 than along its own axis 1
    for method in V.LATTICE_READBACKS:
        assert V.read_lattice(mixed, method=method)[0] == pytest.approx([4.0, 5.0, 6.5], abs=1e-5)
    with pytest.raises(CrysgenError, match="read-back must be one of"):
        V.read_lattice(mixed, method="maxmin")


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
