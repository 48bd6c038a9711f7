from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.operations import SymmOp

from crysgen.cli import main
from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.evaluation.csp import (
    CSPSample,
    cell_agreement,
    load_csp_samples,
    mutual_matches,
    same_cell_shape,
    score_csp,
)
from tests.conftest import load_cif

A = 4.0  # Å, the CsCl-type cells below


def rocksalt() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def cscl_type(shift: float = 0.0, species=("Na", "Cl")) -> Structure:
    """Two sites in a cube of A Å; the second one moved by ``shift`` Å along x."""
    return Structure(Lattice.cubic(A), list(species), [[0, 0, 0], [0.5 + shift / A, 0.5, 0.5]])


def cscl_rms(shift: float) -> float:
    """pymatgen's normalised RMS for ``cscl_type(shift)`` against ``cscl_type()``, by hand.

    The matcher removes the mean translation, so each of the 2 sites is off by shift/2; the
    normalisation is (V/N)^(1/3) = (A³/2)^(1/3).
    """
    return (shift / 2) / (A**3 / 2) ** (1 / 3)


def targets(*structures: Structure, ids: list[str]) -> CrystalSet:
    return CrystalSet.from_structures(list(structures), ids=ids, max_sites=52)


def test_a_rotated_supercell_with_a_shifted_origin_matches_its_target_with_zero_rms():
    t = load_cif("triclinic_LiFePO")
    moved = t * (2, 1, 1)
    moved.apply_operation(SymmOp.from_axis_angle_and_translation([1, 2, 3], 37.0))
    moved = Structure(moved.lattice, moved.species, (moved.frac_coords + np.array([0.13, 0.4, 0.71])) % 1.0)
    res = score_csp([CSPSample("s", "t", moved)], targets(t, ids=["t"]), validity="structural",
                    progress=False)
    assert res.match_rate == 1.0 and res.rmse == pytest.approx(0.0, abs=1e-6)
    assert res.rows[0]["matched"] and res.rows[0]["best_sample"] == "s"


def test_a_wrong_composition_is_a_miss_and_the_rms_follows_the_displacement():
    res = score_csp([CSPSample("kcl", "a", cscl_type(species=("K", "Cl"))),
                     CSPSample("near", "b", cscl_type(0.2))],
                    targets(cscl_type(), cscl_type(), ids=["a", "b"]), validity="structural",
                    metre=False, progress=False)
    rows = {r["id"]: r for r in res.rows}
    assert not rows["a"]["matched"] and rows["a"]["problem"] == "no match"
    assert rows["b"]["rms_dist"] == pytest.approx(cscl_rms(0.2), rel=1e-6)
    assert res.match_rate == 0.5


def test_invalid_samples_are_misses_even_when_they_would_match():
    nacl2 = Structure(Lattice.cubic(5.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
    close = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.06, 0, 0]])  # 0.3 Å apart
    tgt = targets(nacl2, close, cscl_type(), ids=["nacl2", "close", "c"])
    samples = [CSPSample("s1", "nacl2", nacl2.copy()), CSPSample("s2", "close", close.copy()),
               CSPSample("s3", "c", problem="not decoded: no atoms")]
    cdvae = score_csp(samples, tgt, require_valid_target=False, progress=False)
    rows = {r["id"]: r for r in cdvae.rows}
    assert cdvae.match_rate == 0.0 and cdvae.n_invalid_samples == 3
    assert "SMACT" in rows["nacl2"]["problem"] and "0.5" in rows["close"]["problem"]
    assert "not decoded" in rows["c"]["problem"]
    structural = score_csp(samples, tgt, validity="structural", require_valid_target=False, progress=False)
    assert [r["matched"] for r in structural.rows] == [True, False, False]


@pytest.mark.parametrize("module", ["crysgen.evaluation.compositional.smact_valid",
                                    "crysgen.evaluation.fingerprints.structure_fingerprint"])
def test_a_missing_library_stops_scoring_instead_of_making_every_sample_invalid(monkeypatch, module):
    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'smact'")

    monkeypatch.setattr(module, missing)
    samples = [CSPSample("s", "t", cscl_type())]
    with pytest.raises(ModuleNotFoundError, match="smact"):
        score_csp(samples, targets(cscl_type(), ids=["t"]), require_valid_target=False, progress=False)


def test_with_one_sample_per_target_an_invalid_target_is_a_miss_as_in_diffcsp():
    nacl2 = Structure(Lattice.cubic(5.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
    res = score_csp([CSPSample("s", "t", nacl2.copy())], targets(nacl2, ids=["t"]), progress=False)
    assert res.require_valid_target and res.match_rate == 0.0 and res.n_invalid_targets == 1
    assert res.rows[0]["problem"] == "target invalid: composition not SMACT-valid"
    assert res.rows[0]["target_valid"] is False


def test_kept_target_verdicts_check_each_target_once_and_give_the_same_result(monkeypatch):
    import crysgen.evaluation.csp as csp

    nacl2 = Structure(Lattice.cubic(5.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
    tgt = targets(nacl2, cscl_type(), ids=["bad", "ok"])
    samples = [CSPSample("s1", "bad", nacl2.copy()), CSPSample("s2", "ok", cscl_type(0.05))]
    fresh = score_csp(samples, tgt, validity="structural", require_valid_target=True, progress=False)
    checked: list[str] = []
    real = csp._read_and_check

    def counting(args):
        checked.append(args[0].id)
        return real(args)

    monkeypatch.setattr(csp, "_read_and_check", counting)
    verdicts: dict[str, str | None] = {"bad": "composition not SMACT-valid"}  # as if checked before
    first = score_csp(samples, tgt, validity="structural", require_valid_target=True, progress=False,
                      target_verdicts=verdicts)
    assert verdicts == {"bad": "composition not SMACT-valid", "ok": None}
    assert checked.count("ok") == 1 and "bad" not in checked  # samples are s1/s2; targets by id
    again = score_csp(samples, tgt, validity="structural", require_valid_target=True, progress=False,
                      target_verdicts=verdicts)
    assert checked.count("ok") == 1  # not checked again
    reason = "target invalid: composition not SMACT-valid"
    assert first.rows[0]["problem"] == again.rows[0]["problem"] == reason
    assert fresh.rows[1] == first.rows[1] == again.rows[1] and first.match_rate == 0.5


def test_best_of_k_takes_the_closest_matching_sample():
    samples = [CSPSample(f"s{k}", "t", s) for k, s in
               enumerate([cscl_type(0.3), cscl_type(0.05), cscl_type(species=("K", "Cl")), cscl_type(0.15)])]
    res = score_csp(samples, targets(cscl_type(), ids=["t"]), validity="structural", progress=False)
    assert res.k == 4 and res.samples_per_target == {4: 1} and not res.require_valid_target
    assert res.rows[0]["best_sample"] == "s1"
    assert res.rmse == pytest.approx(cscl_rms(0.05), rel=1e-6)


def test_crmse_and_metre_by_hand_with_polymorphs_and_an_unmatched_target():
    # case 1: two NaCl polymorphs, each sample is the *other* polymorph of the one it names
    tgt = targets(rocksalt(), cscl_type(), ids=["rs", "cs"])
    swapped = [CSPSample("a", "rs", cscl_type(0.1)), CSPSample("b", "cs", rocksalt())]
    res = score_csp(swapped, tgt, validity="structural", progress=False)
    assert res.match_rate == 0.0 and np.isnan(res.rmse)
    assert res.crmse == pytest.approx(0.5)  # both unmatched: stol
    assert res.metre == 1.0  # every target is matched by some sample of its composition
    assert res.metre_rmse == pytest.approx((0.0 + cscl_rms(0.1)) / 2, abs=1e-6)
    assert res.metre_crmse == pytest.approx((0.0 + cscl_rms(0.1)) / 2, abs=1e-6)
    # case 2: three targets: matched at 0.2 Å, unmatched (wrong composition), unmatched (no structure)
    tgt = targets(cscl_type(), cscl_type(), cscl_type(), ids=["x", "y", "z"])
    res = score_csp([CSPSample("1", "x", cscl_type(0.2)), CSPSample("2", "y", cscl_type(species=("K", "Cl"))),
                     CSPSample("3", "z", problem="failed")], tgt, validity="structural", progress=False)
    r = cscl_rms(0.2)
    assert res.match_rate == pytest.approx(1 / 3) and res.rmse == pytest.approx(r, rel=1e-6)
    assert res.crmse == pytest.approx((r + 0.5 + 0.5) / 3, rel=1e-6)
    # METRe: sample 1 also matches y and z (same composition) at the same distance
    assert res.metre == 1.0 and res.metre_crmse == pytest.approx(r, rel=1e-6)


def test_the_breakdown_groups_match_rates_by_target_size_and_element_count():
    # targets: NaCl CsCl-type (2 sites, 2 elements) x2, a 2x2x2 NaCl supercell (16 sites, 2
    # elements), rock salt conventional (8 sites) and a three-element CsCl-type supercell (4 sites)
    ternary = cscl_type().copy()
    ternary.make_supercell([2, 1, 1])
    ternary.replace(0, "K")
    big = cscl_type().copy()
    big.make_supercell([2, 2, 2])
    rs = rocksalt().to_conventional()
    tgt = targets(cscl_type(), cscl_type(), big, rs, ternary, ids=["a", "b", "big", "rs", "tern"])
    samples = [CSPSample("1", "a", cscl_type(0.1)), CSPSample("2", "b", cscl_type(species=("K", "Cl"))),
               CSPSample("3", "big", big.copy()), CSPSample("4", "rs", problem="failed"),
               CSPSample("5", "tern", ternary.copy())]
    res = score_csp(samples, tgt, validity="structural", progress=False)
    out = res.breakdown()
    # every sample keeps its target's cell except the failed one (no cell): the 1-4 group's miss
    # ("b", wrong species) is a misplaced-atoms miss in the right cell
    assert out["by_sites"] == {
        "1-4": {"targets": 3, "match_rate_percent": 66.67, "cell_shape_match_percent": 100.0,
                "match_rate_right_cell_percent": 66.67},
        "5-8": {"targets": 1, "match_rate_percent": 0.0, "cell_shape_match_percent": 0.0,
                "match_rate_right_cell_percent": None},
        "13-16": {"targets": 1, "match_rate_percent": 100.0, "cell_shape_match_percent": 100.0,
                  "match_rate_right_cell_percent": 100.0}}
    assert out["by_elements"]["2"] == {"targets": 4, "match_rate_percent": 50.0,
                                       "cell_shape_match_percent": 75.0,
                                       "match_rate_right_cell_percent": 66.67}
    assert out["by_elements"]["3"]["match_rate_percent"] == 100.0
    res.cell.per_target["a"][1] = False  # a matched target with a wrong cell leaves the right-cell share
    assert res.breakdown()["by_sites"]["1-4"]["match_rate_right_cell_percent"] == 50.0
    assert out["problems"]["matched"] == 3 and out["problems"]["no match"] == 1
    assert sum(out["problems"].values()) == 5


def test_worker_processes_give_the_serial_result():
    tgt = targets(*[cscl_type() for _ in range(6)], ids=[f"t{i}" for i in range(6)])
    samples = [CSPSample(f"s{i}", f"t{i}", cscl_type(0.05 * i)) for i in range(6)]
    serial = score_csp(samples, tgt, validity="structural", progress=False)
    parallel = score_csp(samples, tgt, validity="structural", workers=2, progress=False)
    assert serial.rows == parallel.rows


def test_a_sample_folder_names_targets_and_the_cli_scores_it_without_train(tmp_path, capsys):
    folder = tmp_path / "samples"
    (folder / "cifs").mkdir(parents=True)
    cscl_type(0.1).to(filename=str(folder / "cifs" / "0.cif"))
    cscl_type().to(filename=str(folder / "cifs" / "2.cif"))
    with (folder / "samples.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "formula", "failure", "cif", "target"])
        w.writeheader()
        w.writerows([{"id": "0", "failure": "", "cif": "cifs/0.cif", "target": "t0"},
                     {"id": "1", "failure": "no atoms", "cif": "", "target": "t1"},
                     {"id": "2", "failure": "", "cif": "cifs/2.cif", "target": ""}])  # de novo
    loaded = load_csp_samples(folder)
    assert [(s.id, s.target, s.problem) for s in loaded] == [("0", "t0", None),
                                                             ("1", "t1", "not decoded: no atoms")]
    targets(cscl_type(), cscl_type(), ids=["t0", "t1"]).save(tmp_path / "targets.npz")
    out = tmp_path / "report"
    assert main(["evaluate", str(folder), "--reference", str(tmp_path / "targets.npz"), "--metrics", "csp",
                 "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["csp_match_rate"]["value"] == 0.5 and metrics["csp_match_rate"]["n"] == 2
    # the lattice alone: t0's sample (read from its CIF) has the target's cell, t1 has no sample
    assert metrics["csp_cell_shape_match"]["value"] == 0.5 and metrics["csp_cell_shape_match"]["n"] == 2
    assert metrics["csp_cell_volume_error"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["csp_cell_volume_error"]["n"] == 1
    with (out / "structures.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["t0", "t1"] and rows[0]["matched"] == "True"
    assert main(["evaluate", str(folder), "--reference", str(tmp_path / "targets.npz"), "--metrics",
                 "validity,novelty", "--out", str(tmp_path / "r2"), "--quiet"]) != 0
    assert "novelty needs the training set: pass --train" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()


def test_a_crystal_set_whose_ids_are_targets_gives_best_of_k_and_unknown_targets_are_refused(tmp_path):
    gen = CrystalSet.from_structures([cscl_type(0.2), cscl_type(0.1)], ids=["t", "t"], max_sites=52)
    gen.save(tmp_path / "gen.npz")
    loaded = load_csp_samples(tmp_path / "gen.npz")
    assert [(s.id, s.target) for s in loaded] == [("t#0", "t"), ("t#1", "t")]
    res = score_csp(loaded, targets(cscl_type(), ids=["t"]), validity="structural", progress=False)
    assert res.rows[0]["best_sample"] == "t#1"
    with pytest.raises(CrysgenError, match="no sample names"):
        score_csp(loaded, targets(cscl_type(), ids=["other"]), progress=False)


def test_mutual_matches_finds_the_candidates_that_agree_and_only_those():
    # target 0: two near-copies of the CsCl-type cell, the rock-salt polymorph, no candidate;
    # target 1: the polymorph twice (a supercell of it too) and a CsCl-type cell
    first = [cscl_type(), cscl_type(0.05), rocksalt(), None]
    second = [rocksalt(), cscl_type(), rocksalt() * (1, 1, 2), None]
    agree = mutual_matches([first, second], progress=False)
    assert agree.shape == (2, 4, 4) and agree.dtype == bool
    assert (agree == agree.transpose(0, 2, 1)).all() and not agree[:, range(4), range(4)].any()
    pairs = [sorted({tuple(sorted(p)) for p in zip(*np.nonzero(a), strict=True)}) for a in agree]
    assert pairs == [[(0, 1)], [(0, 2)]]
    with pytest.raises(CrysgenError, match="same number of candidates"):
        mutual_matches([first, second[:3]], progress=False)


def test_cell_agreement_reads_the_lattice_alone_in_any_setting():
    import math

    tri = load_cif("triclinic_LiFePO")
    ts = targets(cscl_type(), tri, cscl_type(), ids=["same", "tri", "long"])
    other_setting = tri.copy()
    other_setting.make_supercell([[1, 1, 0], [0, 1, 0], [0, 0, 1]])  # same lattice, another basis
    stretched = Structure(Lattice.tetragonal(A, 2 * A), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    samples = [CSPSample("s0", "same", cscl_type(0.3).scale_lattice(1.5 * A**3)),  # wrong sites and volume
               CSPSample("s1", "tri", other_setting), CSPSample("s1b", "tri", None),  # only the first counts
               CSPSample("s2", "long", stretched), CSPSample("s3", "elsewhere", stretched)]
    res = cell_agreement(samples, ts)
    assert res.per_target["same"][1] and res.per_target["same"][0] == pytest.approx(math.log(1.5))
    assert res.per_target["tri"] == [pytest.approx(0.0, abs=1e-9), True]
    assert res.per_target["long"][1] is False  # a cell twice as long on c is another shape
    assert set(res.per_target) == {"same", "tri", "long"} and res.shape_match_rate == pytest.approx(2 / 3)
    assert res.median_volume_error == pytest.approx(math.log(1.5))  # of ln 1.5, 0 and ln 2
    assert res.summary() == {"shape_match_percent": pytest.approx(200 / 3),
                             "median_volume_error": pytest.approx(math.log(1.5))}
    # score_csp gives the same from the structures it has read (its first sample per target too)
    assert score_csp(samples, ts, validity="structural", metre=False, progress=False).cell == res
    missing = cell_agreement([CSPSample("s", "tri", None)], ts)
    assert missing.per_target["tri"] == [None, False] and math.isnan(missing.median_volume_error)
    with pytest.raises(CrysgenError, match="no sample names"):
        cell_agreement([CSPSample("s", "nowhere", tri)], ts)


def test_same_cell_shape_takes_any_basis_and_volume_but_not_a_superlattice_or_another_shape():
    cubic = Lattice.cubic(4.0)
    sheared = Lattice(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]]) @ cubic.matrix)  # another basis
    assert same_cell_shape(sheared.scale(2 * cubic.volume), cubic)
    # at the reference's volume: a c-doubled cell and c/a 1.6 (c 37 % long) are other shapes,
    # c/a 1.25 (c 16 % long, a 7 % short) is within the matcher's ltol 0.3
    assert not same_cell_shape(Lattice(np.diag([1, 1, 2]) @ cubic.matrix), cubic)
    assert not same_cell_shape(Lattice.tetragonal(4.0, 6.4), cubic)
    assert same_cell_shape(Lattice.tetragonal(4.0, 5.0), cubic)
