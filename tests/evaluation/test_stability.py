from __future__ import annotations

import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from crysgen.crystal_set import CrystalSet
from crysgen.evaluation import stability
from crysgen.evaluation.stability import (
    ReferenceHull,
    displacement_rmsd,
    reference_energies,
    relax,
    relax_batch,
    stability_rates,
)
from tests.conftest import load_cif


def test_relaxing_strained_nacl_lowers_its_energy():
    strained = load_cif("NaCl")
    strained.apply_strain(0.05)
    r = relax(strained)
    assert r.reason is None and r.converged
    assert r.energy_per_atom < r.initial_energy_per_atom - 0.005
    # the cell shrinks back towards rock salt's 5.6-5.7 Å
    assert r.structure.volume < strained.volume
    assert 5.4 < r.structure.lattice.a < 5.9


def test_a_broken_structure_gets_a_reason_not_a_crash():
    flat = Structure(Lattice([[4, 0, 0], [0, 4, 0], [0, 0, 1e-9]]), ["Na", "Cl"],
                     [[0, 0, 0], [0.5, 0.5, 0.5]])
    r = relax(flat)
    assert r.reason and r.energy_per_atom is None
    assert r.row()["relax_reason"] == r.reason


def test_an_impossibly_dense_cell_is_refused_but_the_densest_real_ones_are_not():
    # the voxel VAE's shrunken cells: 2 atoms in 4 Å³; diamond (5.7 Å³/atom) must still relax
    dense = Structure(Lattice.cubic(4 ** (1 / 3)), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    r = relax_batch([dense], stability.RelaxOptions(steps=1))[0]
    assert r.reason and r.reason.startswith("degenerate cell") and r.steps == 0
    diamond = Structure(Lattice.cubic(3.567), ["C"] * 8,
                        [[0, 0, 0], [0.25, 0.25, 0.25], [0.5, 0.5, 0], [0.75, 0.75, 0.25],
                         [0.5, 0, 0.5], [0.75, 0.25, 0.75], [0, 0.5, 0.5], [0.25, 0.75, 0.75]])
    assert diamond.volume / len(diamond) < 6
    r = relax_batch([diamond], stability.RelaxOptions(steps=1))[0]
    assert r.reason is None and r.energy_per_atom is not None


def test_time_limit_stops_with_a_reason():
    s = load_cif("triclinic_LiFePO")
    s.perturb(0.2, 0.1)
    r = relax(s, stability.RelaxOptions(time_limit_s=0.0, fmax=1e-4))
    assert r.reason and "time limit" in r.reason and not r.converged
    assert r.energy_per_atom is not None  # the energy where it stopped is kept


@pytest.mark.slow
def test_batched_relaxation_matches_one_at_a_time_and_keeps_reasons():
    strained = load_cif("NaCl")
    strained.apply_strain(0.05)
    perturbed = load_cif("NaCl")
    perturbed.apply_strain(-0.03)
    perturbed.perturb(0.05)
    flat = Structure(Lattice([[4, 0, 0], [0, 4, 0], [0, 0, 1e-9]]), ["Na", "Cl"],
                     [[0, 0, 0], [0.5, 0.5, 0.5]])
    options = stability.RelaxOptions(steps=40)
    batch = relax_batch([strained, flat, perturbed], options)
    assert len(batch) == 3
    assert batch[1].reason and "degenerate" in batch[1].reason and batch[1].energy_per_atom is None
    for got, s in zip((batch[0], batch[2]), (strained, perturbed), strict=True):
        alone = relax(s, options)
        assert got.reason == alone.reason and got.steps == alone.steps and got.converged == alone.converged
        assert got.energy_per_atom == pytest.approx(alone.energy_per_atom, abs=2e-3)
        assert got.rmsd == pytest.approx(alone.rmsd, abs=2e-2)
    assert batch[0].converged and batch[0].energy_per_atom < batch[0].initial_energy_per_atom - 0.005


def test_inference_grads_give_chgnets_own_forces_and_stress_and_restore_autograd():
    import torch

    s = load_cif("SrTiO3")
    s.perturb(0.05)
    s.apply_strain(0.02)
    model = stability.load_chgnet("cpu")
    graph = model.graph_converter(s)
    reference = model.predict_graph(graph, task="efs")
    original = torch.autograd.grad
    with stability.inference_grads():
        assert torch.autograd.grad is not original
        fast = model.predict_graph(graph, task="efs")
    assert torch.autograd.grad is original
    assert np.abs(reference["f"]).max() > 0.05  # a perturbed cell: forces worth comparing
    for key, tol in (("e", 1e-5), ("f", 1e-4), ("s", 1e-3)):
        np.testing.assert_allclose(fast[key], reference[key], atol=tol)


def test_displacement_rmsd_known_values():
    s = load_cif("NaCl")
    shifted = s.copy()
    shifted.translate_sites(range(len(s)), [0.1, 0.0, 0.0])  # rigid translation: not a change
    assert displacement_rmsd(s, shifted) == pytest.approx(0.0, abs=1e-9)
    moved = s.copy()
    moved.translate_sites([0], [0.9, 0.9, 0.9], frac_coords=False)  # wraps fine, one atom moves
    d = np.sqrt(3 * 0.9 ** 2)
    n = len(s)  # after removing the mean, one atom moved by d(1 - 1/n), the others by d/n
    expected = np.sqrt(((d * (1 - 1 / n)) ** 2 + (n - 1) * (d / n) ** 2) / n)
    assert displacement_rmsd(s, moved) == pytest.approx(expected, rel=1e-6)


def _hull(formulas, energies, terminals):
    return ReferenceHull(formulas, np.array(energies, float),
                         {k: {"energy_per_atom": v, "source": "test"} for k, v in terminals.items()})


def test_energy_above_hull_by_hand():
    hull = _hull([{"Na": 1, "Cl": 1}], [-2.0], {"Na": -1.0, "Cl": -1.0})
    nacl = load_cif("NaCl")  # 8 atoms, Na4Cl4
    out = hull.e_above_hull([nacl, nacl, nacl], [-2.0, -1.9, -2.5])
    assert [round(e, 6) for e, _ in out] == [0.0, 0.1, -0.5]
    # Na3Cl: halfway between Na (-1) and NaCl (-2) along the hull is -1.5 eV/atom at x_Cl = 0.25
    na3cl = Structure(Lattice.cubic(5), ["Na", "Na", "Na", "Cl"],
                      [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    (e, reason), = hull.e_above_hull([na3cl], [-1.2])
    assert reason is None and e == pytest.approx(0.3)


def test_hull_linear_program_agrees_with_pymatgen_phase_diagram():
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition

    rng = np.random.default_rng(0)
    els = ["Li", "Fe", "P", "O"]
    formulas = [{x: float(c) for x, c in zip(els, rng.integers(0, 4, 4), strict=True) if c}
                for _ in range(40)]
    formulas = [f for f in formulas if len(f) >= 2]
    energies = list(-3 + rng.normal(0, 0.5, len(formulas)))
    terminals = {x: float(-1 - rng.random()) for x in els}
    hull = _hull(formulas, energies, terminals)
    pd = PhaseDiagram([PDEntry(Composition({x: 1}), e) for x, e in terminals.items()]
                      + [PDEntry(Composition(f), e * sum(f.values()))
                         for f, e in zip(formulas, energies, strict=True)])
    probes = [Structure(Lattice.cubic(6), sp, rng.random((len(sp), 3)))
              for sp in (["Li", "Fe", "P", "O", "O", "O", "O"], ["Fe", "O", "O"], ["Li", "P", "P"],
                         ["Li", "Fe", "Fe", "O", "O", "O"])]
    e_probe = list(-2.5 + rng.normal(0, 0.5, len(probes)))
    ours = hull.e_above_hull(probes, e_probe)
    for s, e, (ehull, reason) in zip(probes, e_probe, ours, strict=True):
        _, ref = pd.get_decomp_and_e_above_hull(PDEntry(s.composition, e * len(s)), allow_negative=True)
        assert reason is None and ehull == pytest.approx(ref, abs=1e-6)


def test_missing_reference_and_missing_energy_are_reasons():
    hull = _hull([], [], {"Na": -1.0, "Cl": float("nan")})
    nacl = load_cif("NaCl")
    (e1, r1), (e2, r2) = hull.e_above_hull([nacl, nacl], [-2.0, None])
    assert e1 is None and "no elemental reference for Cl" in r1
    assert e2 is None and r2 == "no relaxed energy"


def test_a_sample_whose_energy_is_a_blow_up_gets_a_reason_not_an_e_hull():
    hull = _hull([{"Na": 1, "Cl": 1}], [-2.0], {"Na": -1.0, "Cl": -1.0})
    nacl = load_cif("NaCl")
    out = hull.e_above_hull([nacl, nacl, nacl], [1.4e11, -1.5e10, -2.1])
    assert [e for e, _ in out[:2]] == [None, None]
    assert all("implausible energy" in r for _, r in out[:2])
    assert out[2][0] == pytest.approx(-0.1) and out[2][1] is None  # a plausible one still placed


def test_stability_rates_count_over_all_samples():
    e = np.array([-0.2, 0.0, 0.05, 0.3, np.nan])
    un = np.array([True, False, True, True, True])
    rates = stability_rates(e, un, n=5)
    assert rates["stable_0p1"] == pytest.approx(3 / 5) and rates["stable_0"] == pytest.approx(2 / 5)
    assert rates["sun_0p1"] == pytest.approx(2 / 5) and rates["sun_0"] == pytest.approx(1 / 5)
    assert "sun_0" not in stability_rates(e, None, n=5)


def test_unconverged_and_implausibly_low_structures_are_not_stable():
    e = np.array([-3.0, -0.2, 0.05, 0.05, 0.3])
    converged = np.array([True, True, False, True, True])
    rates = stability_rates(e, np.ones(5, bool), n=5, converged=converged)
    assert rates["stable_0p1"] == pytest.approx(2 / 5)  # -0.2 and the converged 0.05
    assert rates["stable_0"] == pytest.approx(1 / 5)
    assert rates["excluded_implausible"] == 1
    assert rates["excluded_unconverged_0p1"] == 1 and rates["excluded_unconverged_0"] == 0


def test_reference_energies_are_cached_by_data(tmp_path, monkeypatch):
    cs = CrystalSet.from_structures([load_cif("NaCl"), load_cif("SrTiO3")], max_sites=52)
    first = reference_energies(cs, cache_dir=tmp_path, progress=False)
    assert first.shape == (2,) and np.isfinite(first).all()
    assert -4.5 < first[0] < -3.0  # CHGNet: about -3.7 eV/atom for rock salt NaCl

    def no_model(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(stability, "load_chgnet", no_model)
    np.testing.assert_array_equal(reference_energies(cs, cache_dir=tmp_path, progress=False), first)


def test_evaluate_with_stability_writes_per_structure_columns(tmp_path):
    from crysgen.evaluation.suite import EvalOptions, evaluate

    names = ["NaCl", "SrTiO3", "ZnO_wurtzite"]
    cs = CrystalSet.from_structures([load_cif(n) for n in names], ids=names, max_sites=52)
    samples = cs.save(tmp_path / "samples.npz")
    train = CrystalSet.from_structures([load_cif("NaCl")], max_sites=52).save(tmp_path / "train.npz")
    # terminal energies given in the cache (relaxing every elemental candidate takes minutes)
    cache = stability.elements_cache_path(tmp_path / "cache", "chgnet",
                                          stability.RelaxOptions(steps=20))
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({x: {"fcc": -1.0} for x in ["Na", "Cl", "Sr", "Ti", "O", "Zn"]}))
    ev = evaluate(samples, train, samples, EvalOptions(metrics=("validity", "novelty", "stability"),
                                                       cache_dir=str(tmp_path / "cache"),
                                                       relax_steps=20), progress=False)
    for row in ev.rows:
        assert row["energy_per_atom"] < 0 and row["e_above_hull_eV_atom"] != ""
    # the samples are in the reference: none may sit above its own hull
    assert all(float(r["e_above_hull_eV_atom"]) <= 1e-3 + 0.05 for r in ev.rows)
    m = ev.metrics
    assert m["stable_e_hull_le_0.1"]["value"] == 1.0 and m["stable_e_hull_le_0.1"]["n"] == 3
    assert m["sun_e_hull_le_0.1"]["value"] == pytest.approx(2 / 3)  # NaCl is in train: not novel
    assert m["hull_reference"]["terminals"]["Na"] == "ase fcc"


# ---------------------------------------------------------------- cold start: terminals and caches
BATCH_VS_ALONE_TOLERANCE = 1e-4
"""eV/atom. The lockstep batch and a lone relaxation run the same FIRE steps on the same CHGNet
model; only float32 rounding of the batched forward differs (measured on these cells: at most
3e-6 eV/atom after 3-5 steps). A candidate relaxed without its cell (the wrong flag) differs by
0.3-0.6 eV/atom, a different number of steps by > 1e-3."""


def _two_candidates(symbol):
    """A cell-relaxed fcc Cu and a fixed-box Si dimer: the two kinds the batch mixes."""
    keep = {"Cu": "fcc", "Si": "dimer"}[symbol]
    return [c for c in _ORIGINAL_CANDIDATES(symbol) if c[0] == keep]


_ORIGINAL_CANDIDATES = stability._candidates


@pytest.mark.slow
def test_batched_terminal_candidates_match_one_by_one_relaxations(tmp_path, monkeypatch):
    from pymatgen.io.ase import AseAtomsAdaptor

    monkeypatch.setattr(stability, "_candidates", _two_candidates)
    calls = []
    original = stability.relax_batch

    def counting(structures, options, **kw):
        calls.append(len(structures))
        return original(structures, options, **kw)

    monkeypatch.setattr(stability, "relax_batch", counting)
    options = stability.RelaxOptions(steps=3)
    got = stability.relaxed_candidates({"Cu", "Si"}, options=options, cache_dir=tmp_path, progress=False)
    assert calls == [2]  # both elements' candidates in one lockstep batch, not one by one
    for sym, (label, atoms, cell) in (("Cu", _two_candidates("Cu")[0]), ("Si", _two_candidates("Si")[0])):
        alone = relax(AseAtomsAdaptor.get_structure(atoms), options, relax_cell=cell)
        assert got[sym][label]["energy_per_atom"] == pytest.approx(alone.energy_per_atom,
                                                                   abs=BATCH_VS_ALONE_TOLERANCE)
        assert got[sym][label]["structure"] is not None


def _fake_batch(calls):
    """A stand-in for relax_batch whose energy says how many steps it was given (no CHGNet)."""
    from crysgen.evaluation.stability import Relaxation

    def fake(structures, options, relax_cell=True, on_done=None):  # reports nothing as it goes
        calls.append(options.steps)
        return [Relaxation(-1.0, -float(options.steps), 0.0, options.steps, True, 0.0, s)
                for s in structures]

    return fake


def test_a_short_relaxation_run_does_not_poison_a_later_full_one(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(stability, "relax_batch", _fake_batch(calls))
    short = stability.relaxed_candidates({"Cu"}, options=stability.RelaxOptions(steps=20),
                                         cache_dir=tmp_path, progress=False)
    full = stability.relaxed_candidates({"Cu"}, options=stability.RelaxOptions(steps=500),
                                        cache_dir=tmp_path, progress=False)
    assert calls == [20, 500]  # the full run relaxed again instead of reading the short run's file
    assert {v["energy_per_atom"] for v in short["Cu"].values()} == {-20.0}
    assert {v["energy_per_atom"] for v in full["Cu"].values()} == {-500.0}
    again = stability.relaxed_candidates({"Cu"}, options=stability.RelaxOptions(steps=500),
                                         cache_dir=tmp_path, progress=False)
    assert calls == [20, 500]  # the same settings read the cache
    assert {v["energy_per_atom"] for v in again["Cu"].values()} == {-500.0}


def test_cache_keys_change_with_every_setting_that_changes_the_energies(tmp_path, monkeypatch):
    from crysgen.evaluation import potentials

    base = stability.RelaxOptions()
    path = stability.elements_cache_path(tmp_path, "chgnet", base)
    changed = [stability.RelaxOptions(steps=20), stability.RelaxOptions(fmax=0.05),
               stability.RelaxOptions(time_limit_s=30.0), stability.RelaxOptions(max_volume_ratio=3.0)]
    paths = {stability.elements_cache_path(tmp_path, "chgnet", o) for o in changed}
    assert path not in paths and len(paths) == len(changed)
    # device and batch size change only speed and float noise: the same file
    assert stability.elements_cache_path(tmp_path, "chgnet",
                                         stability.RelaxOptions(device="cuda", batch_size=8)) == path
    monkeypatch.setattr(stability, "TERMINALS_VERSION", stability.TERMINALS_VERSION + 1)
    assert stability.elements_cache_path(tmp_path, "chgnet", base) != path
    monkeypatch.undo()
    # another version of the potential: other terminal and reference-energy caches
    cs = CrystalSet.from_structures([load_cif("NaCl")], max_sites=52)
    key = stability._cache_key(cs, "chgnet")
    real = potentials.potential_id
    monkeypatch.setattr(potentials, "potential_id", lambda name: real(name) + ".post1")
    assert stability.elements_cache_path(tmp_path, "chgnet", base) != path
    assert stability._cache_key(cs, "chgnet") != key


@pytest.mark.parametrize("content", ['{"Cu": {"fcc": {"energy_per_atom": -3.7', "[1, 2]",
                                     '{"Cu": "fcc"}', '{"Cu": {"fcc": {"structure": null}}}',
                                     '{"Cu": {"fcc": {"energy_per_atom": -3.7, "structure": 5}}}'])
def test_a_corrupt_elements_cache_is_recomputed_with_a_warning(tmp_path, monkeypatch, capsys, content):
    calls = []
    monkeypatch.setattr(stability, "relax_batch", _fake_batch(calls))
    options = stability.RelaxOptions(steps=7)
    path = stability.elements_cache_path(tmp_path, "chgnet", options)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    got = stability.relaxed_candidates({"Cu"}, options=options, cache_dir=tmp_path, progress=False)
    assert calls == [7] and {v["energy_per_atom"] for v in got["Cu"].values()} == {-7.0}
    assert f"cache file {path}" in capsys.readouterr().err
    assert json.loads(path.read_text())["Cu"]["fcc"]["energy_per_atom"] == -7.0  # rewritten whole


def test_a_corrupt_reference_energy_cache_is_recomputed_with_a_warning(tmp_path, capsys):
    cs = CrystalSet.from_structures([load_cif("NaCl")], max_sites=52)
    first = reference_energies(cs, cache_dir=tmp_path, progress=False)
    path = tmp_path / "hull" / f"{stability._cache_key(cs)}.npz"
    whole = path.read_bytes()
    for damaged in (whole[: len(whole) // 2], b"not a zip file"):  # a truncated zip: BadZipFile
        path.write_bytes(damaged)
        np.testing.assert_allclose(reference_energies(cs, cache_dir=tmp_path, progress=False), first,
                                   atol=1e-6)
        assert "cannot be read" in capsys.readouterr().err
        with np.load(path) as z:  # overwritten with a good file
            np.testing.assert_allclose(z["energy_per_atom"], first, atol=1e-6)
    stability.write_npz_atomic(path, {"energy_per_atom": np.zeros(3)})  # another data set's size
    np.testing.assert_allclose(reference_energies(cs, cache_dir=tmp_path, progress=False), first, atol=1e-6)
    assert "holds (3,) energies for 1 crystals" in capsys.readouterr().err


class _Interrupted(Exception):
    """Stands for a KeyboardInterrupt or a killed job in the middle of the batch."""


def test_an_interrupted_terminal_run_keeps_the_elements_it_finished(tmp_path, monkeypatch):
    """Cu's candidates converge at the first step, Si's never do; the run stops at step 3.

    A stand-in for CHGNet (no model): zero forces and stress for Cu, a constant force on Si.
    """
    class _Converter:
        def set_isolated_atom_response(self, response):
            pass

    class _Model:
        graph_converter = _Converter()

    calls = []
    stop_at = {"call": 3}

    def fake_predict(model, atoms_list, device, batch_size=64):
        calls.append(len(atoms_list))
        if len(calls) == stop_at["call"]:
            raise _Interrupted
        out = []
        for atoms in atoms_list:
            f = np.zeros((len(atoms), 3))
            if set(atoms.get_chemical_symbols()) == {"Si"}:
                f[:, 0] = 1.0
            out.append({"e": np.array(-1.0), "f": f, "s": np.zeros((3, 3))})
        return out

    monkeypatch.setattr(stability, "load_chgnet", lambda device="cpu": _Model())
    monkeypatch.setattr(stability, "_predict_batch", fake_predict)
    options = stability.RelaxOptions(steps=5)  # Si runs out of steps after the interruption
    with pytest.raises(_Interrupted):
        stability.relaxed_candidates({"Cu", "Si"}, options=options, cache_dir=tmp_path, progress=False)
    n_cu = len(stability._candidates("Cu"))
    assert calls[0] == n_cu + len(stability._candidates("Si")) and calls[1] < calls[0]
    path = stability.elements_cache_path(tmp_path, "chgnet", options)
    saved = json.loads(path.read_text())
    assert set(saved) == {"Cu"}  # Cu finished and was saved; Si, unfinished, is not in the file
    assert len(saved["Cu"]) == n_cu and all(v["structure"] for v in saved["Cu"].values())
    # the next run relaxes only Si's candidates and keeps Cu's
    calls.clear()
    stop_at["call"] = 0  # no interruption
    got = stability.relaxed_candidates({"Cu", "Si"}, options=options, cache_dir=tmp_path, progress=False)
    assert calls[0] == len(stability._candidates("Si")) and len(calls) == options.steps + 1
    assert set(json.loads(path.read_text())) == {"Cu", "Si"} and len(got["Si"]) > 0


def test_mean_e_hull_leaves_out_a_potentials_hole():
    """A blown-up energy (a potential's hole) is left out of the mean and median, and counted."""
    from crysgen.evaluation.suite import rate_with

    class Hull:  # places the structures at fixed energies above the hull
        def __init__(self):
            self.formulas = [{"Na": 1, "Cl": 1}]
            self.terminals = {"Na": {"source": "data"}, "Cl": {"source": "data"}}
            self.dropped_implausible = 2

        def e_above_hull(self, structures, energies):
            return [(e, None) for e in energies]

    energies = [0.0, 0.2, 1.0, -1.5e10, None]
    rows = [{} for _ in energies]
    e_hull, out = rate_with("chgnet", Hull(), [None] * 5, energies, rows, 5, np.ones(5, bool), None)
    assert out["mean_e_above_hull"]["value"] == pytest.approx(0.4)
    assert out["median_e_above_hull"]["value"] == pytest.approx(0.2)
    assert out["mean_e_above_hull"]["n"] == 3 and out["mean_e_above_hull"]["excluded_implausible"] == 1
    assert "implausible" in rows[3]["e_above_hull_reason"]
    assert out["stable_e_hull_le_0.1"]["value"] == pytest.approx(1 / 5)
    assert e_hull[3] == -1.5e10 and np.isnan(e_hull[4])  # the per-sample values stay as placed
    assert out["hull_reference"]["dropped_implausible"] == 2


def test_a_potentials_hole_never_enters_the_hull(monkeypatch):
    """A reference crystal or elemental terminal with an impossible energy is left out."""
    nacl = CrystalSet.from_structures([
        Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(Lattice.cubic(4.3), ["Na"], [[0, 0, 0]]),
        Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0]])])
    monkeypatch.setattr(stability, "reference_energies", lambda cs, **kw: np.array([-3.5, -1.5e10, -3.2]))
    monkeypatch.setattr(stability, "relaxed_candidates", lambda symbols, **kw: {
        s: {"fcc": {"energy_per_atom": -1.3 if s == "Na" else -1.8}} for s in symbols})
    hull = ReferenceHull.build([nacl], {"Na", "Cl"}, progress=False)
    assert hull.dropped_implausible == 1 and len(hull.formulas) == 2  # the Na crystal's -1.5e10 is out
    assert hull.terminals["Na"] == {"energy_per_atom": -1.3, "source": "ase fcc"}  # not the hole
    terminals = stability.elemental_references({"Na"}, {"Na": -1.5e10}, progress=False)
    assert terminals["Na"] == {"energy_per_atom": -1.3, "source": "ase fcc"}  # a hole as data terminal
