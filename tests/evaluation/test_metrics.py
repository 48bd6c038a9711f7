from __future__ import annotations

import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from crysgen.cli import main
from crysgen.crystal_set import CrystalSet
from crysgen.evaluation.compositional import smact_valid
from crysgen.evaluation.coverage import coverage
from crysgen.evaluation.distributions import wasserstein, wasserstein_spread
from crysgen.evaluation.novelty import novel_mask, unique_mask
from crysgen.evaluation.validity import structurally_valid
from tests.conftest import FILES, load_cif


def nacl() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_two_atoms_0_3_angstrom_apart_are_invalid():
    s = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.06, 0, 0]])
    assert not structurally_valid(s) and structurally_valid(nacl())


def test_compositional_validity_follows_charge_neutrality():
    assert smact_valid([11, 17])  # NaCl
    assert not smact_valid([11, 17, 17])  # NaCl2
    assert smact_valid([6] * 8)  # one element
    assert smact_valid([29, 30])  # an all-metal alloy
    assert smact_valid([38, 22, 8, 8, 8])  # SrTiO3


def test_a_structure_matches_its_supercell_and_rotation_and_a_shifted_copy_is_not_unique():
    s = load_cif("SrTiO3")
    rotated = Structure(Lattice(s.lattice.matrix[[1, 2, 0]]), s.species, s.frac_coords[:, [1, 2, 0]])
    shifted = Structure(s.lattice, s.species, (s.frac_coords + 0.25) % 1.0)
    assert unique_mask([s, s * (2, 1, 1), rotated, shifted, nacl()]).tolist() == [True, False, False,
                                                                                  False, True]
    assert novel_mask([shifted, nacl()], [s]).tolist() == [False, True]


def test_coverage_of_identical_sets_is_complete_and_far_sets_are_not_covered():
    rng = np.random.default_rng(0)
    s, c = rng.random((20, 5)), rng.random((20, 7))
    cov = coverage(s, c, s, c, n_generated=20, struct_cutoff=0.01, comp_cutoff=0.01)
    assert cov.recall == 1.0 and cov.precision == 1.0
    far = coverage(s + 10, c, s, c, n_generated=40, struct_cutoff=0.4, comp_cutoff=10)
    assert far.recall == 0.0 and far.precision == 0.0
    half = coverage(s, c, s, c, n_generated=40, struct_cutoff=0.01, comp_cutoff=0.01)
    assert half.precision == 0.5  # invalid generated crystals count in the denominator
    gs, gc = s[:15] + 0.1, rng.random((15, 7))  # fewer generated than reference crystals
    shifted = coverage(gs, gc, s, c, n_generated=20, struct_cutoff=0.4, comp_cutoff=10)
    want_s = np.linalg.norm(gs[:, None] - s[None], axis=-1).min(axis=1)
    want_c = np.linalg.norm(gc[:, None] - c[None], axis=-1).min(axis=1)
    np.testing.assert_allclose(shifted.struct_distance, want_s)  # per generated crystal, in order
    np.testing.assert_allclose(shifted.comp_distance, want_c)
    np.testing.assert_allclose(cov.struct_distance, 0, atol=1e-12)


def test_wasserstein_is_zero_for_equal_samples_and_the_shift_otherwise():
    x = np.array([1.0, 2.0, 3.0])
    assert wasserstein(x, x) == 0.0 and wasserstein(x + 0.5, x) == pytest.approx(0.5)


def test_evaluate_cli_gives_every_structure_a_row_and_broken_ones_a_reason(tmp_path, cgcnn_dir):
    ref = CrystalSet.from_structures([nacl(), load_cif("SrTiO3"), load_cif("ZnO_wurtzite")], max_sites=52)
    ref.save(tmp_path / "ref.npz")
    out = tmp_path / "report"
    assert main(["evaluate", str(FILES), "--train", str(tmp_path / "ref.npz"), "--reference",
                 str(tmp_path / "ref.npz"), "--out", str(out), "--cov-cutoffs", "0.4,10",
                 "--property-model", "formation_energy", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    n_files = len(list(FILES.glob("*.cif")))
    assert metrics["n_samples"]["value"] == n_files
    for name in ("struct_valid", "comp_valid", "cov_recall", "cov_precision", "wdist_cn", "wdist_density",
                 "unique", "novel", "wdist_prop", "ks", "property_ks"):
        assert name in metrics, name
    # the three reference crystals are among the files: recalled, not novel
    assert metrics["cov_recall"]["value"] == 1.0
    rows = (out / "structures.csv").read_text().splitlines()
    assert len(rows) == n_files + 1
    broken = next(r for r in rows if r.startswith("broken,"))
    assert "unparsable" in broken
    assert (out / "report.html").read_text().count("data:image/png;base64") == 2


def test_reference_fingerprints_are_cached_and_a_broken_cache_is_recomputed(tmp_path):
    from crysgen.evaluation.suite import EvalOptions, evaluate

    ref = CrystalSet.from_structures([nacl(), load_cif("SrTiO3"), load_cif("ZnO_wurtzite")], max_sites=52)
    ref.save(tmp_path / "ref.npz")
    o = EvalOptions(metrics=("validity", "coverage"), cov_cutoffs=(0.4, 10.0), cache_dir=str(tmp_path / "c"))
    first = evaluate(FILES, tmp_path / "ref.npz", tmp_path / "ref.npz", o, progress=False)
    cached = list((tmp_path / "c" / "fingerprints").glob("*.npz"))
    assert len(cached) == 1
    again = evaluate(FILES, tmp_path / "ref.npz", tmp_path / "ref.npz", o, progress=False)
    cached[0].write_bytes(b"not an npz")
    rebuilt = evaluate(FILES, tmp_path / "ref.npz", tmp_path / "ref.npz", o, progress=False)
    for ev in (again, rebuilt):
        for key in ("cov_recall", "cov_precision"):
            assert ev.metrics[key] == first.metrics[key]
    assert first.metrics["cov_recall"]["value"] == 1.0
    np.load(cached[0]).close()  # rewritten as a readable cache


def test_basics_in_worker_processes_equal_the_serial_ones(tmp_path):
    from crysgen.evaluation.suite import EvalOptions, evaluate

    ref = CrystalSet.from_structures([nacl()], max_sites=52)
    ref.save(tmp_path / "ref.npz")
    serial, parallel = (evaluate(FILES, tmp_path / "ref.npz", tmp_path / "ref.npz",
                                 EvalOptions(metrics=("validity",), workers=w), progress=False)
                        for w in (1, 2))
    assert len(list(FILES.glob("*.cif"))) >= 8  # enough for _map to use the processes
    assert serial.rows == parallel.rows
    assert serial.metrics == parallel.metrics


def test_a_sample_set_with_no_valid_crystal_gets_zero_coverage_not_a_crash(tmp_path):
    from crysgen.evaluation.suite import EvalOptions, evaluate

    close = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.06, 0, 0]])  # 0.3 Å apart
    samples = tmp_path / "samples"
    samples.mkdir()
    close.to(filename=str(samples / "close.cif"))
    ref = CrystalSet.from_structures([nacl(), load_cif("SrTiO3")], max_sites=52)
    ref.save(tmp_path / "ref.npz")
    ev = evaluate(samples, tmp_path / "ref.npz", tmp_path / "ref.npz",
                  EvalOptions(metrics=("validity", "coverage"), cov_cutoffs=(0.4, 10.0)), progress=False)
    assert ev.metrics["struct_valid"]["value"] == 0.0
    assert ev.metrics["cov_recall"]["value"] == 0.0
    assert ev.metrics["cov_precision"]["value"] == 0.0


def test_comp_scaler_from_the_reference_itself_changes_nothing_and_is_recorded(tmp_path):
    from crysgen.errors import CrysgenError
    from crysgen.evaluation.suite import EvalOptions, evaluate

    ref = CrystalSet.from_structures([nacl(), load_cif("SrTiO3"), load_cif("ZnO_wurtzite")], max_sites=52)
    ref.save(tmp_path / "ref.npz")
    broad = CrystalSet.from_structures([load_cif(n) for n in ("SrTiO3", "ZnO_wurtzite", "NaCl")] + [nacl()],
                                       max_sites=52)
    broad.save(tmp_path / "broad.npz")
    base = EvalOptions(metrics=("validity", "coverage"), cov_cutoffs=(0.4, 1.0), comp_scaler="reference")
    own = evaluate(FILES, tmp_path / "ref.npz", tmp_path / "ref.npz", base, progress=False)
    same = evaluate(FILES, tmp_path / "ref.npz", tmp_path / "ref.npz",
                    EvalOptions(**{**base.__dict__, "comp_scaler_from": str(tmp_path / "ref.npz")}),
                    progress=False)
    other = evaluate(FILES, tmp_path / "ref.npz", tmp_path / "ref.npz",
                     EvalOptions(**{**base.__dict__, "comp_scaler_from": str(tmp_path / "broad.npz")}),
                     progress=False)
    assert own.metrics["cov_recall"]["comp_scaler"] == "reference"
    assert same.metrics["cov_recall"]["comp_scaler"] == "ref.npz (3 crystals)"
    assert other.metrics["cov_recall"]["comp_scaler"] == "broad.npz (4 crystals)"
    for key in ("cov_recall", "cov_precision"):
        assert same.metrics[key]["value"] == own.metrics[key]["value"]
    with pytest.raises(CrysgenError, match="comp-scaler"):
        evaluate(FILES, tmp_path / "ref.npz", tmp_path / "ref.npz",
                 EvalOptions(**{**base.__dict__, "comp_scaler_from": str(tmp_path / "missing.npz")}),
                 progress=False)


def test_wdist_cn_is_zero_against_itself_and_the_coordination_gap_otherwise(tmp_path):
    from crysgen.evaluation.suite import EvalOptions, evaluate

    diamond = Structure.from_spacegroup("Fd-3m", Lattice.cubic(3.567), ["C"], [[0, 0, 0]])
    for name, crystals in (("dia", [diamond]), ("salt", [nacl()])):
        CrystalSet.from_structures(crystals, max_sites=52).save(tmp_path / f"{name}.npz")
    samples = tmp_path / "samples"
    samples.mkdir()
    diamond.to(filename=str(samples / "diamond.cif"))
    o = EvalOptions(metrics=("coverage",), cov_cutoffs=(0.4, 10.0))
    same = evaluate(samples, tmp_path / "dia.npz", tmp_path / "dia.npz", o, progress=False).metrics
    other = evaluate(samples, tmp_path / "dia.npz", tmp_path / "salt.npz", o, progress=False).metrics
    assert same["wdist_cn"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert other["wdist_cn"]["value"] == pytest.approx(2.0, abs=0.01)  # diamond 4 against rock salt 6
    assert other["wdist_cn"]["reference_mean"] == pytest.approx(6.0, abs=0.01)
    assert same["cn_share_tv"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert other["cn_share_tv"]["value"] == pytest.approx(1.0, abs=0.01)  # all 4-fold against all 6-fold
    assert other["cn_share_tv"]["generated_cn_share"] == {"4": 1.0}


def test_the_wasserstein_spread_is_the_draws_noise_around_the_whole_sample():
    """Half 0s, half 1s against a reference of 0s: W of a draw is its share of 1s, whose mean (0.5)
    and standard deviation (hypergeometric: 0.151 for 10 of 100) are known."""
    gen, ref = np.r_[np.zeros(50), np.ones(50)], np.zeros(7)
    spread = wasserstein_spread(gen, ref, 10, 400, np.random.default_rng(0))
    assert spread["all"] == pytest.approx(0.5) and spread["draws"] == 400 and spread["n"] == 10
    assert spread["mean"] == pytest.approx(0.5, abs=0.03)
    assert spread["sd"] == pytest.approx(np.sqrt(10 * 0.25 * 90 / 99) / 10, abs=0.02)
    assert 0.0 <= spread["min"] < 0.3 and 0.7 < spread["max"] <= 1.0
    again = wasserstein_spread(gen, ref, 10, 400, np.random.default_rng(0))
    assert again == spread  # the same generator, the same draws


def test_a_draw_as_large_as_the_sample_has_no_spread_and_an_empty_one_is_nan():
    gen = np.array([0.0, 1.0, 2.0, np.nan])
    whole = wasserstein_spread(gen, [0.0], 1000, 5, np.random.default_rng(0))
    assert whole["n"] == 3 and whole["sd"] == 0.0 and whole["mean"] == whole["all"] == pytest.approx(1.0)
    empty = wasserstein_spread([np.nan], [0.0], 1000, 5, np.random.default_rng(0))
    assert np.isnan(empty["mean"]) and np.isnan(empty["all"]) and empty["n"] == 0
    with pytest.raises(ValueError, match="draws"):
        wasserstein_spread(gen, [0.0], 10, 0, np.random.default_rng(0))


def test_precision_by_sites_bins_cells_by_site_count_and_takes_each_bins_precise_share():
    import numpy as np

    from crysgen.evaluation.coverage import precision_by_sites, site_bin_labels

    sites = np.array([1, 4, 4, 5, 8, 12, 24, 25, 40])
    precise = np.array([True, False, True, True, True, False, True, False, True])
    got = precision_by_sites(sites, precise)
    assert [b["sites"] for b in got] == ["1-4", "5-8", "9-12", "21-24", "25+"]  # empty bins left out
    assert [b["n"] for b in got] == [3, 2, 1, 1, 2]
    assert [b["precision"] for b in got] == pytest.approx([2 / 3, 1.0, 0.0, 1.0, 0.5])
    assert site_bin_labels()[:2] == ["1-4", "5-8"] and site_bin_labels()[-1] == "25+"
    with pytest.raises(ValueError, match="shape"):
        precision_by_sites(sites, precise[:-1])
