from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from crysgen.crystal_set import CrystalSet
from crysgen.objectives.atom_edm import Constants, Parts
from crysgen.pipelines.collisions import colliding_sites, periodic_distances
from crysgen.representations.atoms import AtomSetSpec, encode
from tests.conftest import load_cif

NAMES = ("NaCl", "SrTiO3", "ZnO_wurtzite", "triclinic_LiFePO")


@pytest.fixture(scope="module")
def structures() -> list[Structure]:
    return [load_cif(n) for n in NAMES]


def test_periodic_distances_are_pymatgens_minimum_image_distances(structures):
    for s in structures:
        frac = torch.as_tensor(s.frac_coords % 1.0, dtype=torch.float64)[None]
        cell = torch.as_tensor(s.lattice.matrix, dtype=torch.float64)[None]
        d = periodic_distances(frac, cell)[0].numpy()
        np.testing.assert_allclose(d, s.distance_matrix, atol=1e-6, err_msg=s.composition.reduced_formula)


def test_a_sheared_cell_still_gives_the_nearest_image():
    # two sites 0.3 Å apart only through the image one cell along a of a strongly sheared cell
    s = Structure(Lattice.from_parameters(4.0, 4.0, 5.0, 90, 90, 30), ["Na", "Na"],
                  [[0.0, 0.0, 0.0], [0.975, 0.0, 0.0]])
    d = periodic_distances(torch.as_tensor(s.frac_coords)[None], torch.as_tensor(s.lattice.matrix)[None])
    assert float(d[0, 0, 1]) == pytest.approx(s.distance_matrix[0, 1], abs=1e-6)
    assert float(d[0, 0, 1]) < 0.5


def _encoded(structures: list[Structure]) -> tuple[Parts, torch.Tensor, Constants]:
    """The structures as the sampler holds them (lattice features of the spec they fit)."""
    crystals = CrystalSet.from_structures(structures)
    spec = AtomSetSpec.fit(crystals, max_atoms=30)
    sets = encode(crystals, spec)
    x = Parts(torch.as_tensor(sets.types), torch.as_tensor(sets.frac), torch.as_tensor(sets.lattice))
    return x, torch.as_tensor(sets.mask), Constants.from_spec(spec)


def test_colliding_sites_marks_the_later_site_of_each_close_pair(structures):
    x, mask, consts = _encoded(structures)
    assert not colliding_sites(x, mask, consts).any()  # real crystals: every pair ≥ 0.5 Å apart
    # NaCl's nearest Na-Cl distance is 2.8 Å: the lattice features are read in Å
    nacl = load_cif("NaCl")
    nearest = min(nacl.distance_matrix[np.triu_indices(len(nacl), 1)])
    assert colliding_sites(x, mask, consts, cutoff=nearest + 0.05)[0].any()
    assert not colliding_sites(x, mask, consts, cutoff=nearest - 0.05)[0].any()
    moved = x.frac.clone()
    moved[1, 3] = (moved[1, 1] + 0.01) % 1.0  # SrTiO3's site 3 onto its site 1 (0.04 Å away)
    hit = colliding_sites(Parts(x.types, moved, x.lattice), mask, consts)
    assert hit[1].nonzero().flatten().tolist() == [3]
    assert not hit[[0, 2, 3]].any()
    real = mask.clone()
    real[1, 3] = False  # not an atom (e.g. an empty site): no collision
    assert not colliding_sites(Parts(x.types, moved, x.lattice), mask, consts, real=real).any()
