"""The second potential (SevenNet-0): static energies, cache keys, ``--potential both``, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.evaluation import potentials, stability
from crysgen.evaluation.potentials import static_energies
from tests.conftest import load_cif

MP2020_CL_CORRECTION = -0.614
"""eV per Cl anion: pymatgen's MP2020Compatibility.yaml. CHGNet learned MPtrj's corrected energies,
SevenNet-0 the raw ones, so the two differ in a chloride by this much per Cl atom."""
TOLERANCE = 0.15
"""eV/atom. Both potentials are fits to the same MPtrj PBE(+U) data, with errors against DFT of
~0.03-0.05 eV/atom (Matbench Discovery energy MAE 0.048 SevenNet-0, 0.063 CHGNet); on crystals as
plain as rock salt and diamond Si they agree to ~0.1 eV/atom once the anion correction is put back
(measured: Si 0.088, NaCl 0.024 eV/atom)."""


def silicon() -> Structure:
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])


def test_sevennet_energies_of_nacl_and_si_are_finite_and_close_to_chgnets():
    pytest.importorskip("sevenn")
    structures = [load_cif("NaCl"), silicon()]
    seven = static_energies(structures, "sevennet")
    chg = static_energies(structures, "chgnet")
    assert np.isfinite(seven).all() and np.isfinite(chg).all()
    n_cl = sum(site.specie.symbol == "Cl" for site in structures[0]) / len(structures[0])
    assert abs(seven[0] + MP2020_CL_CORRECTION * n_cl - chg[0]) < TOLERANCE
    assert abs(seven[1] - chg[1]) < TOLERANCE
    assert -5.6 < seven[1] < -5.2  # PBE diamond Si: -5.42 eV/atom
    # batched = one at a time, and the order of a batch is kept
    one = [static_energies([s], "sevennet")[0] for s in structures[::-1]]
    np.testing.assert_allclose(one, seven[::-1], atol=1e-5)
    # graphs built in worker processes: the same energies, in input order
    og = Structure(Lattice.cubic(5.0), ["Og"], [[0, 0, 0]])
    mixed = [structures[1], og, structures[0], structures[0]]
    np.testing.assert_allclose(static_energies(mixed, "sevennet", workers=2),
                               [seven[1], np.nan, seven[0], seven[0]], atol=1e-5)


def test_an_element_sevennet_does_not_know_gets_nan_not_a_crash():
    pytest.importorskip("sevenn")
    og = Structure(Lattice.cubic(5.0), ["Og"], [[0, 0, 0]])
    e = static_energies([og, silicon()], "sevennet")
    assert np.isnan(e[0]) and np.isfinite(e[1])


def test_cache_keys_differ_between_potentials_and_relaxation_settings(tmp_path):
    pytest.importorskip("sevenn")
    cs = CrystalSet.from_structures([load_cif("NaCl")], max_sites=52)
    assert stability._cache_key(cs, "chgnet") != stability._cache_key(cs, "sevennet")
    assert "sevennet" in stability._cache_key(cs, "sevennet")
    full, short = stability.RelaxOptions(), stability.RelaxOptions(steps=20)
    tight = stability.RelaxOptions(fmax=0.02)
    paths = {stability.elements_cache_path(tmp_path, p, o)
             for p in ("chgnet", "sevennet") for o in (full, short, tight)}
    assert len(paths) == 6
    # device and batch size do not change the energies: same file
    assert (stability.elements_cache_path(tmp_path, "chgnet", full)
            == stability.elements_cache_path(tmp_path, "chgnet",
                                             stability.RelaxOptions(device="cuda", batch_size=8)))


def test_reference_energies_are_cached_per_potential_and_a_corrupt_cache_is_recomputed(
        tmp_path, monkeypatch):
    pytest.importorskip("sevenn")
    cs = CrystalSet.from_structures([load_cif("NaCl"), silicon()], max_sites=52)
    chg = stability.reference_energies(cs, cache_dir=tmp_path, progress=False)
    seven = stability.reference_energies(cs, cache_dir=tmp_path, progress=False, potential="sevennet")
    assert np.abs(seven - chg).max() > 0.05  # not CHGNet's cache read back (NaCl differs by 0.28)

    def no_model(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(potentials, "load_sevennet", no_model)
    np.testing.assert_array_equal(
        stability.reference_energies(cs, cache_dir=tmp_path, progress=False, potential="sevennet"), seven)
    monkeypatch.undo()
    path = tmp_path / "hull" / f"{stability._cache_key(cs, 'sevennet')}.npz"
    path.write_bytes(b"not a zip file")
    np.testing.assert_allclose(
        stability.reference_energies(cs, cache_dir=tmp_path, progress=False, potential="sevennet"),
        seven, atol=1e-6)


def _tiny_evaluation(tmp_path):
    names = ["NaCl", "SrTiO3", "ZnO_wurtzite"]
    cs = CrystalSet.from_structures([load_cif(n) for n in names], ids=names, max_sites=52)
    samples = cs.save(tmp_path / "samples.npz")
    train = CrystalSet.from_structures([load_cif("NaCl")], max_sites=52).save(tmp_path / "train.npz")
    # terminal energies given in the caches (relaxing every elemental candidate takes minutes)
    ro = stability.RelaxOptions(steps=20)
    for pot in ("chgnet", "sevennet"):
        cache = stability.elements_cache_path(tmp_path / "cache", pot, ro)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({x: {"fcc": -1.0} for x in ["Na", "Cl", "Sr", "Ti", "O", "Zn"]}))
    return samples, train


def test_potential_both_writes_both_columns_agreement_and_a_report_that_can_be_rescored(tmp_path):
    pytest.importorskip("sevenn")
    import csv

    from crysgen.evaluation.suite import EvalOptions, evaluate, rescore_report, write_report

    samples, train = _tiny_evaluation(tmp_path)
    options = EvalOptions(metrics=("validity", "novelty", "stability"), cache_dir=str(tmp_path / "cache"),
                          relax_steps=20, potential="both")
    ev = evaluate(samples, train, samples, options, progress=False)
    for row in ev.rows:
        assert row["e_above_hull_eV_atom"] != "" and row["e_above_hull_sevennet_eV_atom"] != ""
        # the samples are in the reference: under either potential none sits far above its hull
        assert float(row["e_above_hull_sevennet_eV_atom"]) <= 0.1
        assert row["energy_per_atom_sevennet"] < 0
    m = ev.metrics
    for key in ("stable_e_hull_le_0.1", "stable_e_hull_le_0", "sun_e_hull_le_0.1", "sun_e_hull_le_0"):
        assert key in m and f"{key}_sevennet" in m
    assert m["stable_e_hull_le_0.1_sevennet"]["value"] == 1.0
    assert m["sun_e_hull_le_0.1_sevennet"]["value"] == pytest.approx(2 / 3)  # NaCl is in train
    assert "SevenNet-0" in m["hull_reference_sevennet"]["potential"]
    agree = m["stable_agreement_0.1"]
    assert agree["n"] == 3 and sum(agree["confusion"].values()) == 3
    assert agree["value"] == (agree["confusion"]["both_stable"] + agree["confusion"]["neither"]) / 3
    assert m["e_hull_spearman"]["n"] == 3 and -1 <= m["e_hull_spearman"]["value"] <= 1

    report = tmp_path / "report"
    write_report(ev, report, title="t", options=options)
    header = (report / "structures.csv").read_text().splitlines()[0].split(",")
    assert "e_above_hull_eV_atom" in header and "e_above_hull_sevennet_eV_atom" in header
    saved = json.loads((report / "metrics.json").read_text())["metrics"]
    assert "stable_agreement_0.1" in saved and "stable_e_hull_le_0_sevennet" in saved
    assert (report / "relaxed.extxyz").is_file()

    # re-score the saved report: SevenNet's columns come back from the relaxed structures alone
    with (report / "structures.csv").open(newline="") as f:
        before = [float(r["e_above_hull_sevennet_eV_atom"]) for r in csv.DictReader(f)]
    for r in ev.rows:
        del r["e_above_hull_sevennet_eV_atom"], r["energy_per_atom_sevennet"]
    from crysgen.evaluation.suite import write_rows

    write_rows(report / "structures.csv", ev.rows)
    new = rescore_report(report, train, samples, potential="sevennet", progress=False)
    with (report / "structures.csv").open(newline="") as f:
        after = [float(r["e_above_hull_sevennet_eV_atom"]) for r in csv.DictReader(f)]
    np.testing.assert_allclose(after, before, atol=1e-4)
    assert new["stable_agreement_0.1"]["confusion"] == agree["confusion"]


def test_agreement_by_hand():
    e1 = np.array([0.0, 0.05, 0.3, 0.5, np.nan])
    e2 = np.array([0.02, 0.2, 0.05, 0.6, 0.0])
    a = stability.agreement(e1, e2)
    assert a["n"] == 4
    assert (a["both_stable"], a["first_only"], a["second_only"], a["neither"]) == (1, 1, 1, 1)
    assert a["agree"] == 0.5
    assert a["spearman"] == pytest.approx(0.8)  # ranks (1,2,3,4) vs (1,3,2,4): 1 - 6·2/(4·15)
    # an unconverged relaxation is stable under neither
    a = stability.agreement(e1, e2, converged=np.array([False, True, True, True, True]))
    assert (a["both_stable"], a["neither"]) == (0, 2)


def test_an_unknown_potential_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    from crysgen import cli
    from crysgen.evaluation import suite

    def no_work(*a, **k):
        raise AssertionError("no work may start")

    monkeypatch.setattr(suite, "load_inputs", no_work)
    monkeypatch.setattr(suite, "relax_all", no_work)
    samples, train = _tiny_evaluation(tmp_path)
    out = tmp_path / "out"
    args = ["evaluate", str(samples), "--train", str(train), "--reference", str(samples),
            "--out", str(out), "--quiet"]
    assert cli.main([*args, "--potential", "mace"]) == 2
    assert "--potential must be one of chgnet, sevennet, both" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(CrysgenError, match="--potential"):
        suite.EvalOptions(potential="m3gnet")
    with pytest.raises(CrysgenError, match="--potential"):
        potentials.check_potential("SevenNet")
    # the second potential's package missing: refused before any work, with the install line
    monkeypatch.setattr(potentials.importlib.util, "find_spec",
                        lambda name: None if name == "sevenn" else object())
    assert cli.main([*args, "--potential", "both"]) == 2
    assert "pip install 'crysgen[potentials]'" in capsys.readouterr().err
    assert not out.exists()


# -------------------------------------------- the batch loop both potentials' static energies share
def _forward(calls, bad=(), batch_fails=False):
    """A forward pass giving 10 * item; a batch of several fails when it holds a ``bad`` item (or
    always, ``batch_fails``), and a ``bad`` item fails alone too."""

    def forward(chunk):
        calls.append(list(chunk))
        if any(x in bad for x in chunk) or (batch_fails and len(chunk) > 1):
            raise RuntimeError("CUDA out of memory")
        return np.array([10.0 * x for x in chunk])

    return forward


def test_a_failed_batch_goes_one_at_a_time_in_order():
    from crysgen.evaluation.potentials import forward_in_batches

    calls = []
    got = forward_in_batches(_forward(calls, batch_fails=True), [1, 2, 3, 4, 5], batch_size=2)
    np.testing.assert_array_equal(got, [10, 20, 30, 40, 50])
    assert calls == [[1, 2], [1], [2], [3, 4], [3], [4], [5]]


def test_one_failing_item_costs_only_itself():
    from crysgen.evaluation.potentials import forward_in_batches

    calls = []
    got = forward_in_batches(_forward(calls, bad={4}), [1, 2, 3, 4, 5, 6, 7], batch_size=3)
    np.testing.assert_array_equal(got, [10, 20, 30, np.nan, 50, 60, 70])  # NaN only for item 4
    assert calls == [[1, 2, 3], [4, 5, 6], [4], [5], [6], [7]]  # only its batch went one by one
    assert forward_in_batches(_forward([]), [], batch_size=3).shape == (0,)
