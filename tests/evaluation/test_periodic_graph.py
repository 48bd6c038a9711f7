from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from crysgen.evaluation.chgnet_batch import _forward, forward_batch
from crysgen.evaluation.periodic_graph import chgnet_batch_graph, neighbor_pairs, undirected_bonds
from tests.conftest import load_cif


def _crystals() -> list[Structure]:
    """Perturbed, strained cells: small and large, triclinic, with atoms outside [0, 1)."""
    out = []
    for k, name in enumerate(("NaCl", "triclinic_LiFePO", "ZnO_wurtzite", "SrTiO3")):
        s = load_cif(name)
        s.perturb(0.1, min_distance=0.01, seed=k)
        s.apply_strain([0.03, -0.02, 0.01])
        if k % 2:  # unwrapped coordinates: images must refer to them as given
            s.translate_sites(list(range(len(s))), [1.7, -2.2, 0.4], frac_coords=True, to_unit_cell=False)
        out.append(s)
    out.append(Structure(Lattice.cubic(12.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]))  # isolated
    return out


def _batch(crystals):
    n = torch.tensor([len(s) for s in crystals])
    frac = torch.tensor(np.concatenate([s.frac_coords for s in crystals]))
    lattice = torch.tensor(np.stack([s.lattice.matrix for s in crystals]))
    z = torch.tensor(np.concatenate([[sp.Z for sp in s.species] for s in crystals]))
    return chgnet_batch_graph(z, frac, lattice, n)


def test_graph_holds_exactly_chgnets_bonds_and_angles(chgnet_cpu):
    crystals = _crystals()
    g = _batch(crystals)
    offsets = np.cumsum([0, *[len(s) for s in crystals]])
    owner_of_bond = g["owner"][g["atom_graph"][:, 0].long()].numpy()
    owner_of_angle = g["owner"][g["bond_graph"][:, 0].long()].numpy()
    for k, s in enumerate(crystals):
        ref = chgnet_cpu.graph_converter(s)
        ours = g["atom_graph"].numpy()[owner_of_bond == k] - offsets[k]
        image = g["image"].numpy()[owner_of_bond == k].astype(int)
        ref_bonds = np.hstack([ref.atom_graph.numpy().reshape(-1, 2),
                               ref.neighbor_image.numpy().reshape(-1, 3).astype(int)])
        want = set(map(tuple, ref_bonds.tolist()))
        got = set(map(tuple, np.hstack([ours, image]).tolist()))
        assert got == want and len(ours) == len(got)
        assert int((owner_of_angle == k).sum()) == len(ref.bond_graph)
    assert len(g["atom_graph"]) > 100 and len(g["bond_graph"]) > 100  # something to compare
    # each angle joins two distinct bonds leaving its atom, and bonds pair with their reverse
    bg = g["bond_graph"].long()
    ag = g["atom_graph"].long()
    assert (bg[:, 2] != bg[:, 4]).all()
    assert (ag[bg[:, 2], 0] == bg[:, 0]).all() and (ag[bg[:, 4], 0] == bg[:, 0]).all()
    d2u, u2d = g["d2u"].long(), g["u2d"].long()
    assert (d2u[u2d] == torch.arange(len(u2d))).all() and len(d2u) == 2 * len(u2d)


def test_chgnet_on_the_batched_graph_gives_its_own_energies_forces_and_stress(chgnet_cpu):
    crystals = _crystals()
    e_ref, f_ref, s_ref, _ = _forward(chgnet_cpu, [chgnet_cpu.graph_converter(s) for s in crystals], "cpu")
    g = _batch(crystals)
    e, f, s, n_atoms = forward_batch(chgnet_cpu, {k: v for k, v in g.items() if k != "n_atoms"}, g["n_atoms"])
    assert n_atoms == [len(c) for c in crystals]
    np.testing.assert_allclose(e.numpy(), e_ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(f.numpy(), f_ref.numpy(), atol=2e-4)
    np.testing.assert_allclose(s.numpy(), s_ref.numpy(), atol=2e-3)
    assert f_ref.abs().max() > 0.05  # perturbed: forces worth comparing


def test_neighbour_search_in_small_chunks_equals_one_pass():
    crystals = _crystals()
    n = torch.tensor([len(s) for s in crystals])
    frac = torch.tensor(np.concatenate([s.frac_coords for s in crystals]))
    lattice = torch.tensor(np.stack([s.lattice.matrix for s in crystals]))
    whole = neighbor_pairs(frac, lattice, n, 6.0)
    chunked = neighbor_pairs(frac, lattice, n, 6.0, max_candidates=1)  # one crystal per chunk
    for a, b in zip(whole, chunked, strict=True):
        assert torch.equal(a, b)


def test_a_bond_without_its_reverse_is_refused():
    center, neighbor = torch.tensor([0, 1, 0]), torch.tensor([1, 0, 1])
    image = torch.tensor([[0, 0, 0], [0, 0, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="not symmetric"):
        undirected_bonds(center, neighbor, image)
