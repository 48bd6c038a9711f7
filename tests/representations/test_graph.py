from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from crysgen import CrysgenError
from crysgen.representations.graph import GraphOptions, build_graph, collate, gaussian_expand


def nacl() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_nacl_graph_has_the_rock_salt_shells():
    s = nacl()
    g = build_graph(s)
    assert g.neighbor_index.shape == (8, 12) and g.neighbor_distance.shape == (8, 12)
    # 6 nearest neighbours of the other element at a/2, then the same element at a/sqrt(2)
    np.testing.assert_allclose(g.neighbor_distance[:, :6], 5.64 / 2, atol=1e-6)
    np.testing.assert_allclose(g.neighbor_distance[:, 6:], 5.64 / np.sqrt(2), atol=1e-6)
    z = g.atomic_numbers
    assert (z[g.neighbor_index[:, :6]] != z[:, None]).all()
    assert (z[g.neighbor_index[:, 6:]] == z[:, None]).all()


def test_small_radius_pads_like_cgcnn():
    g = build_graph(nacl(), GraphOptions(radius=3.0, max_neighbors=12))
    assert (g.neighbor_distance[:, 6:] == 4.0).all() and (g.neighbor_index[:, 6:] == 0).all()


def test_disordered_structure_is_refused():
    s = Structure(Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}], [[0, 0, 0]])
    with pytest.raises(CrysgenError, match="disordered"):
        build_graph(s)


def test_gaussian_expansion_has_41_centres_peaking_at_the_distance():
    e = gaussian_expand(np.array([[2.0]])).numpy()
    assert e.shape == (1, 1, 41)
    assert e[0, 0].argmax() == 10 and e[0, 0, 10] == pytest.approx(1.0)


def test_collate_shifts_neighbour_indices():
    a, b = build_graph(nacl()), build_graph(nacl())
    batch = collate([a, b])
    assert batch.num_crystals == 2 and len(batch.atomic_numbers) == 16
    assert batch.neighbor_index[8:].min() >= 8
    assert (batch.crystal_index.numpy() == np.repeat([0, 1], 8)).all()
