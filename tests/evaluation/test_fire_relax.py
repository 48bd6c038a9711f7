from __future__ import annotations

import dataclasses
from itertools import product

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from scipy.linalg import expm_frechet

from crysgen.errors import CrysgenError
from crysgen.evaluation import stability
from crysgen.evaluation.fire_relax import expm_frechet_adjoint
from crysgen.evaluation.suite import EvalOptions
from tests.conftest import load_cif


def test_frechet_adjoint_is_the_gradient_ase_builds_from_nine_derivatives():
    rng = np.random.default_rng(0)
    x, g = rng.normal(0, 0.3, (2, 3, 3)), rng.normal(0, 1.0, (2, 3, 3))
    got = expm_frechet_adjoint(torch.tensor(x), torch.tensor(g)).numpy()
    for b in range(2):
        want = np.zeros((3, 3))
        for mu, nu in product(range(3), repeat=2):
            direction = np.zeros((3, 3))
            direction[mu, nu] = 1.0
            want[mu, nu] = np.sum(expm_frechet(x[b], direction, compute_expm=False) * g[b])
        np.testing.assert_allclose(got[b], want, atol=1e-10)


def _strained() -> list[Structure]:
    out = []
    for k, name in enumerate(("NaCl", "triclinic_LiFePO", "ZnO_wurtzite")):
        s = load_cif(name)
        s.perturb(0.12, min_distance=0.02, seed=k)
        s.apply_strain([0.04, -0.03, 0.02])
        out.append(s)
    return out


@pytest.mark.parametrize("steps", [4, 60])
def test_torch_engine_takes_ases_steps(steps):
    crystals = _strained()
    flat = Structure(Lattice([[4, 0, 0], [0, 4, 0], [0, 0, 1e-9]]), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])
    cells = [True, False, True, True]  # one relaxes its positions only
    options = stability.RelaxOptions(steps=steps, batch_size=2)  # several CHGNet passes per step
    structures = [crystals[0], crystals[1], flat, crystals[2]]
    ase = stability.relax_batch(structures, dataclasses.replace(options, engine="ase"),
                                relax_cell=[cells[0], cells[1], True, cells[3]])
    finished: list[int] = []
    ours = stability.relax_batch(structures, dataclasses.replace(options, engine="torch"),
                                 relax_cell=[cells[0], cells[1], True, cells[3]],
                                 on_done=lambda i, r: finished.append(i))
    assert sorted(finished) == [0, 1, 2, 3]
    assert ours[2].reason and "degenerate" in ours[2].reason and ours[2].energy_per_atom is None
    for k in (0, 1, 3):
        a, t = ase[k], ours[k]
        assert (t.steps, t.converged, t.reason) == (a.steps, a.converged, a.reason)
        assert t.energy_per_atom == pytest.approx(a.energy_per_atom, abs=1e-5)
        assert t.initial_energy_per_atom == pytest.approx(a.initial_energy_per_atom, abs=1e-5)
        np.testing.assert_allclose(t.structure.cart_coords, a.structure.cart_coords, atol=1e-3)
        np.testing.assert_allclose(t.structure.lattice.matrix, a.structure.lattice.matrix, atol=1e-4)
        assert t.rmsd == pytest.approx(a.rmsd, abs=1e-4)
    np.testing.assert_allclose(ours[1].structure.lattice.matrix, crystals[1].lattice.matrix)  # cell kept
    assert ours[0].rmsd > 0.01 and ours[0].energy_per_atom < ours[0].initial_energy_per_atom - 1e-3
    if steps == 60:
        assert sum(r.converged for r in ours) >= 2


def test_unknown_engines_are_refused_with_the_choices():
    with pytest.raises(CrysgenError, match="ase, torch"):
        stability.relax_batch([load_cif("NaCl")], stability.RelaxOptions(engine="jax"))
    with pytest.raises(CrysgenError, match="--relax-engine"):
        EvalOptions(relax_engine="jax")
    assert stability.relax_engine(stability.RelaxOptions(device="cuda")) == "torch"
    assert stability.relax_engine(stability.RelaxOptions(device="cpu")) == "ase"


def test_the_suite_relaxes_in_one_batched_call_with_the_torch_engine(monkeypatch):
    from crysgen.evaluation import suite

    monkeypatch.setattr(suite, "_map", lambda *a, **k: pytest.fail("worker processes for the torch engine"))
    crystals = _strained()[:2]
    options = stability.RelaxOptions(steps=2, engine="torch")
    got = suite.relax_all(crystals, options, workers=4, progress=False)
    assert [r.steps for r in got] == [2, 2] and all(r.structure is not None for r in got)
    assert [len(r.structure) for r in got] == [len(s) for s in crystals]  # input order kept


def test_a_pass_that_fails_is_split_until_single_structures_fail_alone(monkeypatch):
    from crysgen.evaluation import chgnet_batch

    crystals = _strained()
    options = stability.RelaxOptions(steps=3, engine="torch", batch_size=4)
    want = stability.relax_batch(crystals, options)
    real = chgnet_batch.forward_batch
    sizes: list[int] = []

    def fragile(model, t, n_atoms, forces=True):  # "out of memory" above one structure, and for NaCl
        sizes.append(len(n_atoms))
        if len(n_atoms) > 1 or n_atoms == [len(crystals[0])]:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(model, t, n_atoms, forces)

    monkeypatch.setattr(chgnet_batch, "forward_batch", fragile)
    got = stability.relax_batch(crystals, options)
    assert 3 in sizes and 2 in sizes  # whole pass, then halves, then single structures
    assert got[0].reason and "out of memory" in got[0].reason and got[0].energy_per_atom is None
    for g, w in zip(got[1:], want[1:], strict=True):
        assert (g.steps, g.converged, g.reason) == (w.steps, w.converged, w.reason)
        # float32 CHGNet: a pass of other structures sums in another order (CI saw 1.4e-6 eV/atom)
        assert g.energy_per_atom == pytest.approx(w.energy_per_atom, abs=1e-5)


def test_each_engine_has_its_own_pass_size_unless_one_is_given():
    from crysgen.evaluation.relaxation import TORCH_PASS, pass_size

    assert pass_size(stability.RelaxOptions()) == stability.FORWARD_BATCH  # auto on the CPU: ase
    assert pass_size(stability.RelaxOptions(device="cuda")) == TORCH_PASS
    assert pass_size(stability.RelaxOptions(engine="torch")) == TORCH_PASS
    assert pass_size(stability.RelaxOptions(device="cuda", batch_size=8)) == 8


def test_static_energies_keep_the_forward_batch_on_either_engine():
    from crysgen.evaluation.relaxation import static_pass_size

    assert static_pass_size(stability.RelaxOptions(device="cuda")) == stability.FORWARD_BATCH
    assert static_pass_size(stability.RelaxOptions(engine="torch")) == stability.FORWARD_BATCH
    assert static_pass_size(stability.RelaxOptions(device="cuda", batch_size=8)) == 8
