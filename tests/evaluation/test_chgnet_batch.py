from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from crysgen.evaluation import stability
from crysgen.evaluation.chgnet_batch import predict_efs
from tests.conftest import load_cif


def _crystals() -> list[Structure]:
    """Perturbed, strained crystals of different sizes, plus one whose atoms have no neighbours."""
    out = []
    for k, name in enumerate(("SrTiO3", "NaCl", "SrTiO3")):
        s = load_cif(name)
        if k == 2:
            s.make_supercell([2, 1, 1])
        s.perturb(0.05, min_distance=0.01, seed=k)
        s.apply_strain([0.02, -0.01, 0.03])
        out.append(s)
    out.append(Structure(Lattice.cubic(12.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]))
    return out


def test_batched_prediction_equals_chgnets_own(chgnet_cpu):
    crystals = _crystals()
    graphs = [chgnet_cpu.graph_converter(s) for s in crystals]
    reference = chgnet_cpu.predict_graph(graphs, task="efs", batch_size=16)
    for batch_size in (2, 16):  # across batch boundaries and all in one
        got = predict_efs(chgnet_cpu, graphs, "cpu", batch_size=batch_size)
        assert len(got) == len(crystals)
        for g, r, s in zip(got, reference, crystals, strict=True):
            assert g["f"].shape == (len(s), 3) and g["s"].shape == (3, 3)
            for key, tol in (("e", 1e-5), ("f", 1e-4), ("s", 1e-3)):
                np.testing.assert_allclose(g[key], r[key], atol=tol)
    assert np.abs(reference[0]["f"]).max() > 0.05  # perturbed cells: forces worth comparing
    np.testing.assert_array_equal(got[-1]["f"], 0.0)  # isolated atoms: no force, no stress
    np.testing.assert_array_equal(got[-1]["s"], 0.0)


def test_stress_keeps_its_sign_for_a_left_handed_cell(chgnet_cpu):
    right = load_cif("NaCl")
    right.apply_strain(0.03)
    left = Structure(Lattice(right.lattice.matrix[[1, 0, 2]]), right.species,
                     right.frac_coords[:, [1, 0, 2]])
    assert np.linalg.det(left.lattice.matrix) < 0
    r, lft = predict_efs(chgnet_cpu, [chgnet_cpu.graph_converter(s) for s in (right, left)], "cpu")
    assert r["e"] == pytest.approx(lft["e"], abs=1e-5)
    # a stretched cell pulls back (positive, tensile stress in CHGNet's and ASE's sign) either
    # way; CHGNet's own predict_graph flips the sign for a left-handed lattice (signed volume)
    assert np.trace(r["s"]) > 1.0
    np.testing.assert_allclose(np.diag(lft["s"]), np.diag(r["s"])[[1, 0, 2]], atol=1e-3)


def test_energies_without_gradients_equal_chgnets_own(chgnet_cpu):
    from crysgen.evaluation.chgnet_batch import predict_energies
    from crysgen.evaluation.potentials import static_energies

    crystals = _crystals()
    graphs = [chgnet_cpu.graph_converter(s) for s in crystals]
    reference = [float(r["e"]) for r in chgnet_cpu.predict_graph(graphs, task="e", batch_size=16)]
    for batch_size in (3, 16):  # across a batch boundary and all in one
        got = predict_energies(chgnet_cpu, graphs, "cpu", batch_size)
        np.testing.assert_allclose(got, reference, atol=1e-5)
    np.testing.assert_allclose(static_energies(crystals, "chgnet", batch_size=3), reference, atol=1e-5)


WORKER_GRAPH_TOLERANCE = 1e-7
"""eV/atom. Graphs built in worker processes are the same tensors (checked exactly), so the
energies are those of the same forward passes; the tolerance only allows for float32 rounding
that a different thread count could bring. A graph of another crystal moves the energy by
> 0.1 eV/atom, a lost angle or bond by > 1e-3."""


def test_graphs_built_in_workers_give_the_same_graphs_and_energies(chgnet_cpu):
    from crysgen.evaluation.chgnet_batch import GRAPH_TENSORS, build_graphs
    from crysgen.evaluation.potentials import chgnet_energies

    crystals = _crystals()  # 5, 2, 10 and 2 atoms, the last with isolated atoms
    try:
        for response in ("error", "ignore"):  # the workers' converter takes the model's setting
            chgnet_cpu.graph_converter.set_isolated_atom_response(response)
            serial = build_graphs(crystals, chgnet_cpu.graph_converter, workers=1)
            parallel = build_graphs(crystals, chgnet_cpu.graph_converter, workers=2)
            assert (parallel[-1] is None) == (response == "error") == (serial[-1] is None)
            for g1, g2 in zip(serial, parallel, strict=True):
                if g1 is None:
                    continue
                for key in GRAPH_TENSORS:
                    assert getattr(g1, key).dtype == getattr(g2, key).dtype
                    np.testing.assert_array_equal(getattr(g1, key).detach().numpy(),
                                                  getattr(g2, key).detach().numpy())
            one = chgnet_energies(crystals, "cpu", 3, workers=1)
            two = chgnet_energies(crystals, "cpu", 3, workers=2)
            assert np.isnan(two[-1]) == (response == "error") and np.isfinite(two[:-1]).all()
            np.testing.assert_allclose(two, one, atol=WORKER_GRAPH_TOLERANCE, equal_nan=True)
    finally:
        chgnet_cpu.graph_converter.set_isolated_atom_response("ignore")  # as the fixture left it


def test_reference_energies_with_graphs_from_workers_equal_those_from_one_process(chgnet_cpu, tmp_path):
    from crysgen.crystal_set import CrystalSet

    cs = CrystalSet.from_structures(_crystals()[:3], max_sites=52)
    one = stability.reference_energies(cs, cache_dir=tmp_path / "one", progress=False, workers=1,
                                       batch_size=2)
    two = stability.reference_energies(cs, cache_dir=tmp_path / "two", progress=False, workers=2,
                                       batch_size=2)
    assert np.isfinite(one).all() and len(set(np.round(one, 3))) == 3
    np.testing.assert_allclose(two, one, atol=WORKER_GRAPH_TOLERANCE)
