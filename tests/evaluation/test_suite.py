"""How `crysgen evaluate` reads its inputs (issue 22): bad crystals get reasons, never a crash."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from crysgen import CrysgenError, CrystalSet
from crysgen.evaluation.suite import EvalOptions, evaluate, write_report
from tests.conftest import load_cif
from tests.data.cifs import DEGENERATE, NACL_SITES, cif_text, write_folder


def _inputs(tmp_path):
    cifs = {f"bad_{k}": cif_text(v) for k, v in DEGENERATE.items()}
    cifs.update({f"good_{k}": cif_text() for k in range(9)})  # enough for the worker pool
    cifs["unknown_element"] = cif_text(sites=[("Xx", 0, 0, 0), *NACL_SITES[1:]])
    cifs["occupancy_zero"] = cif_text(occupancies=[0] + [1] * 7)
    cifs["coincident"] = cif_text(sites=[*NACL_SITES, ("Na", 0.501, 0.5, 0.5)])
    folder = write_folder(tmp_path / "cifs", cifs)
    ref = tmp_path / "ref.npz"
    CrystalSet.from_structures([load_cif("NaCl"), load_cif("SrTiO3")], max_sites=52).save(ref)
    return folder, ref


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_crystals_get_a_reason_in_their_row(tmp_path, workers):
    folder, ref = _inputs(tmp_path)
    ev = evaluate(folder, ref, ref, EvalOptions(metrics=("validity",), workers=workers), progress=False)
    rows = {r["id"]: r for r in ev.rows}
    assert len(rows) == 16
    for name in DEGENERATE:
        assert rows[f"bad_{name}"]["problem"].startswith("degenerate_lattice:"), name
    assert rows["unknown_element"]["problem"].startswith("unknown_element: not an element: Xx")
    assert rows["occupancy_zero"]["problem"].startswith("zero_occupancy:")
    assert rows["coincident"]["problem"] == "" and rows["coincident"]["struct_valid"] is False
    assert all(rows[f"good_{k}"]["struct_valid"] is True for k in range(9))
    assert ev.metrics["struct_valid"]["value"] == pytest.approx(9 / 16)


def test_metrics_json_is_strict(tmp_path):
    folder, ref = _inputs(tmp_path)
    ev = evaluate(folder, ref, ref, EvalOptions(metrics=("validity",)), progress=False)
    ev.metrics["nothing"] = {"value": float("nan"), "n": 0}
    write_report(ev, tmp_path / "out", title="t", options=EvalOptions(metrics=("validity",)))
    text = (tmp_path / "out" / "metrics.json").read_text()
    assert "NaN" not in text
    assert json.loads(text)["metrics"]["nothing"]["value"] is None
    with (tmp_path / "out" / "structures.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 16


def test_files_and_device_are_checked_before_any_work(tmp_path, monkeypatch):
    from crysgen.evaluation import suite

    folder, ref = _inputs(tmp_path)
    monkeypatch.setattr(suite, "load_inputs", lambda *a: pytest.fail("inputs read before the checks"))
    with pytest.raises(CrysgenError, match="--train"):
        evaluate(folder, tmp_path / "missing.npz", ref, EvalOptions(metrics=("novelty",)), progress=False)
    with pytest.raises(CrysgenError, match="--device"):
        evaluate(folder, ref, ref, EvalOptions(metrics=("validity",), device="bogus"), progress=False)


def test_the_html_report_escapes_every_text_it_shows(tmp_path):
    from crysgen.evaluation.suite import Evaluation

    evil = "runs/</title><script>alert(1)</script>&co"
    ev = Evaluation(metrics={"struct_valid": {"value": 0.5, "n": 2},
                             "ks_<b>x</b>": {"value": {"<i>prop": {"statistic": 0.25}}, "n": 2}},
                    rows=[{"id": "a", "problem": ""}], plots={"<u>plot": "iVBORw0KGgo="},
                    seconds={"validity": 0.5})
    write_report(ev, tmp_path, title=f"crysgen evaluate: {evil}", options=EvalOptions(metrics=("validity",)))
    html = (tmp_path / "report.html").read_text()
    assert "<script>" not in html and "<b>" not in html and "<i>" not in html and "<u>" not in html
    assert html.count("<title>") == html.count("</title>") == 1
    escaped = "runs/&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;co"
    assert f"<title>crysgen evaluate: {escaped}</title>" in html
    assert f"<h1>crysgen evaluate: {escaped}</h1>" in html
    assert "K-S: ks_&lt;b&gt;x&lt;/b&gt;" in html and "<td>&lt;i&gt;prop</td><td>0.25</td>" in html
    assert "<tr><td>struct_valid</td><td>0.5</td><td>2</td><td></td></tr>" in html
    assert '<img src="data:image/png;base64,iVBORw0KGgo=">' in html


def test_a_failed_run_leaves_a_status_that_says_where_it_stopped(tmp_path, monkeypatch):
    from crysgen.evaluation import suite

    folder, ref = _inputs(tmp_path)

    def broken(*a, **k):
        raise RuntimeError("relaxation engine broke")

    monkeypatch.setattr(suite, "relax_all", broken)
    status = tmp_path / "out" / "metrics.json"
    with pytest.raises(RuntimeError, match="engine broke"):
        evaluate(folder, ref, ref, EvalOptions(metrics=("validity", "stability")), progress=False,
                 status_file=status)
    saved = json.loads(status.read_text())
    assert saved["status"] == "failed" and "engine broke" in saved["error"]
    assert saved["running"] == ["stability", "stability.relax"]
    assert {"load", "basics"} <= set(saved["seconds"]) and "metrics" not in saved


def test_a_corrupt_reference_fingerprint_cache_is_recomputed_with_a_warning(tmp_path, capsys):
    from crysgen.evaluation.suite import reference_fingerprints

    cs = CrystalSet.from_structures([load_cif("NaCl")], max_sites=52)
    ref = [cs.to_structure(0)]
    o = EvalOptions(cache_dir=str(tmp_path))
    first = reference_fingerprints(cs, ref, o, progress=False)
    (path,) = (tmp_path / "fingerprints").glob("*.npz")
    assert "pymatgen" in path.name  # CrystalNN's package version is part of the key
    path.write_bytes(path.read_bytes()[:100])  # truncated zip: BadZipFile, not an OSError
    again = reference_fingerprints(cs, ref, o, progress=False)
    assert "cannot be read" in capsys.readouterr().err
    assert again[0][2] is None and (again[0][0] == first[0][0]).all()
    assert len(reference_fingerprints(cs, ref, o, progress=False)) == 1  # the rewritten file reads
    assert capsys.readouterr().err == ""


# ------------------------------------------- reference fingerprints beside the stability family
def _cheap_stability(monkeypatch, on_relax=None):
    """Stand-ins for CHGNet (relaxation, reference and terminal energies): numbers, no model.

    ``on_relax`` runs when the relaxation starts (in the main thread)."""
    import numpy as np

    from crysgen.evaluation import stability, suite
    from crysgen.evaluation.stability import Relaxation

    def relax_all(structures, options, workers, progress):
        if on_relax is not None:
            on_relax()
        return [Relaxation(-1.0, -1.0 - 0.01 * len(s), 0.01, 1, True, 0.0, s) for s in structures]

    monkeypatch.setattr(suite, "relax_all", relax_all)
    monkeypatch.setattr(stability, "reference_energies",
                        lambda cs, **kw: -1.5 - 0.05 * np.arange(len(cs)))
    monkeypatch.setattr(stability, "relaxed_candidates", lambda symbols, **kw: {
        s: {"fcc": {"energy_per_atom": -1.0}} for s in symbols})


def _coverage_set(tmp_path):
    """Four real reference crystals and five samples near them (strained, one swapped species)."""
    names = ["NaCl", "SrTiO3", "ZnO_wurtzite", "triclinic_LiFePO"]
    ref = CrystalSet.from_structures([load_cif(k) for k in names], ids=names, max_sites=52)
    samples = []
    for k, name in enumerate(names):
        s = load_cif(name)
        s.apply_strain(0.02 * (k + 1))
        samples.append(s)
    kcl = load_cif("NaCl")
    kcl.replace_species({"Na": "K"})
    samples.append(kcl)
    gen = CrystalSet.from_structures(samples, ids=[f"s{k}" for k in range(len(samples))], max_sites=52)
    train = CrystalSet.from_structures([load_cif("NaCl")], max_sites=52)
    return (gen.save(tmp_path / "samples.npz"), train.save(tmp_path / "train.npz"),
            ref.save(tmp_path / "ref_mp_20.npz"))


def _spy_coverage(monkeypatch):
    """Record the arrays COV is computed on (order matters here, unlike in COV itself)."""
    from crysgen.evaluation import coverage

    seen = []
    real = coverage.coverage

    def spy(*args, **kw):
        seen.append([np.asarray(a).copy() for a in args])
        return real(*args, **kw)

    monkeypatch.setattr(coverage, "coverage", spy)
    return seen


COV_AND_STABILITY = ("validity", "coverage", "novelty", "stability")


def test_reference_fingerprints_beside_the_relaxation_give_the_same_figures(tmp_path, monkeypatch):
    """Overlapped (2 workers: computed in the background while the relaxation runs) and
    sequential (1 worker: computed in place, before stability) give the same metrics, rows and
    COV inputs, in the same order."""
    import threading

    from crysgen.evaluation import fingerprints

    samples, train, ref = _coverage_set(tmp_path)
    relax_started = threading.Event()  # the spy waits for it (at most 30 s)
    _cheap_stability(monkeypatch, on_relax=relax_started.set)
    real_fps = fingerprints.fingerprint_structures
    ref_calls = []

    def spy_fps(structures, **kw):
        if kw.get("desc") == "reference fingerprints":  # with workers: waits for the relaxation
            ref_calls.append((threading.current_thread().name,
                              relax_started.wait(30) if kw.get("workers", 1) > 1 else None))
        return real_fps(structures, **kw)

    monkeypatch.setattr(fingerprints, "fingerprint_structures", spy_fps)
    seen = _spy_coverage(monkeypatch)
    runs = {}
    for workers in (2, 1):
        relax_started.clear()
        o = EvalOptions(metrics=COV_AND_STABILITY, workers=workers, relax_workers=1,
                        cache_dir=str(tmp_path / f"cache{workers}"))
        runs[workers] = evaluate(samples, train, ref, o, progress=False)
    # the overlapped run computed them in a background thread while the relaxation ran
    assert ref_calls[0] == ("reference fingerprints", True)
    assert ref_calls[1] == ("MainThread", None)
    over, seq = runs[2], runs[1]
    assert json.dumps(over.metrics) == json.dumps(seq.metrics)  # values and order
    assert over.metrics["cov_recall"]["n"] == 4 and 0 < over.metrics["cov_recall"]["value"] <= 1
    assert json.dumps(over.rows, default=str) == json.dumps(seq.rows, default=str)
    assert len(seen) == 2
    for a, b in zip(*seen, strict=True):
        np.testing.assert_array_equal(a, b)
    # the wait is coverage's; the background's own seconds are kept apart
    assert "coverage.reference_fingerprints" in over.seconds
    assert "coverage.reference_fingerprints_background" in over.seconds
    assert "coverage.reference_fingerprints_background" not in seq.seconds
    # the wait began after the work did and ended with it
    assert (over.seconds["coverage.reference_fingerprints"]
            <= over.seconds["coverage.reference_fingerprints_background"] + 0.02)


@pytest.mark.parametrize("workers", [2, 1])
def test_an_error_in_the_reference_fingerprints_reaches_the_caller(tmp_path, monkeypatch, workers):
    """Raised in the background thread (2 workers) or in place (1): the same error, the same
    message, and the status names the step that waited for it."""
    import threading

    from crysgen.evaluation import fingerprints

    samples, train, ref = _coverage_set(tmp_path)
    _cheap_stability(monkeypatch)
    real_fps = fingerprints.fingerprint_structures
    threads = []

    def broken(structures, **kw):
        if kw.get("desc") == "reference fingerprints":
            threads.append(threading.current_thread().name)
            raise RuntimeError("CrystalNN broke on crystal 3")
        return real_fps(structures, **kw)

    monkeypatch.setattr(fingerprints, "fingerprint_structures", broken)
    status = tmp_path / "out" / "metrics.json"
    o = EvalOptions(metrics=COV_AND_STABILITY, workers=workers, relax_workers=1,
                    cache_dir=str(tmp_path / "cache"))
    with pytest.raises(RuntimeError) as caught:
        evaluate(samples, train, ref, o, progress=False, status_file=status)
    assert str(caught.value) == "CrystalNN broke on crystal 3"
    assert threads == ["reference fingerprints" if workers > 1 else "MainThread"]
    saved = json.loads(status.read_text())
    assert saved["status"] == "failed" and "CrystalNN broke on crystal 3" in saved["error"]
    assert saved["running"] == ["coverage", "coverage.reference_fingerprints"]
    if workers > 1:  # it surfaced after the stability family, which ran in full
        assert "stability" in saved["seconds"]


def test_a_run_stopped_by_ctrl_c_stops_the_background_fingerprints(tmp_path, monkeypatch):
    """Ctrl-C during the relaxation: evaluate raises KeyboardInterrupt at once, without waiting
    for the reference fingerprints, and their background work is told to stop and ends."""
    import threading
    import time

    from crysgen.evaluation import fingerprints

    samples, train, ref = _coverage_set(tmp_path)
    started = threading.Event()

    def interrupted():
        started.wait(60)  # the background work is running
        raise KeyboardInterrupt

    _cheap_stability(monkeypatch, on_relax=interrupted)
    real_fps = fingerprints.fingerprint_structures
    stopped = []

    def endless(structures, **kw):
        if kw.get("desc") != "reference fingerprints":
            return real_fps(structures, **kw)
        started.set()
        stop = kw.get("stop")
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 60:  # "forever", unless told to stop
            if stop is not None and stop.is_set():
                stopped.append(time.perf_counter() - t0)
                raise fingerprints.FingerprintsStopped("stopped")
            time.sleep(0.02)
        return real_fps(structures, **kw)

    monkeypatch.setattr(fingerprints, "fingerprint_structures", endless)
    o = EvalOptions(metrics=COV_AND_STABILITY, workers=2, relax_workers=1, cache_dir=str(tmp_path / "c"))
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        evaluate(samples, train, ref, o, progress=False)
    assert time.perf_counter() - t0 < 30  # not the 60 s the fingerprints would have taken
    for thread in [t for t in threading.enumerate() if t.name == "reference fingerprints"]:
        thread.join(10)
        assert not thread.is_alive()
    assert len(stopped) == 1 and stopped[0] < 30
    assert not list((tmp_path / "c").glob("fingerprints/*"))  # nothing cached


def test_a_sample_folder_where_nothing_decoded_scores_zero_instead_of_stopping(tmp_path):
    folder = tmp_path / "samples"
    (folder / "cifs").mkdir(parents=True)
    (folder / "sample_config.json").write_text("{}")
    (folder / "samples.csv").write_text("id,formula,failure,cif\n" + "".join(
        f"sample_{i:06d},,far from any crystal,\n" for i in range(3)))
    _, ref = _inputs(tmp_path)
    o = EvalOptions(metrics=("validity", "distributions", "coverage", "novelty"), workers=1)
    ev = evaluate(folder, ref, ref, o, progress=False)
    assert ev.metrics["n_samples"]["value"] == 3
    assert ev.metrics["struct_valid"]["value"] == 0.0 and ev.metrics["comp_valid"]["value"] == 0.0
    assert ev.metrics["cov_recall"]["value"] == 0.0
    assert [r["problem"] for r in ev.rows] == ["not decoded: far from any crystal"] * 3
    write_report(ev, tmp_path / "out", title="t", options=o)  # and its report is written
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    assert written["struct_valid"]["value"] == 0


# ------------------------------------------------------------------- the stability hull's references
@pytest.mark.parametrize(("hull_reference", "sizes"), [("all", [1, 4]), ("subset", [1, 2])])
def test_the_hull_takes_every_reference_crystal_unless_told_the_subset(tmp_path, monkeypatch,
                                                                        hull_reference, sizes):
    """--reference-limit draws the crystals coverage compares with; the stability hull keeps the
    whole reference split (a hull with fewer phases places samples too low) unless "subset"."""
    from crysgen.evaluation import stability

    samples, train, ref = _coverage_set(tmp_path)  # 1 training crystal, 4 reference crystals
    _cheap_stability(monkeypatch)
    cheap, seen = stability.reference_energies, []

    def spy(cs, **kw):
        seen.append(len(cs))
        return cheap(cs, **kw)

    monkeypatch.setattr(stability, "reference_energies", spy)
    o = EvalOptions(metrics=("validity", "stability"), reference_limit=2, hull_reference=hull_reference,
                    cache_dir=str(tmp_path / "cache"))
    ev = evaluate(samples, train, ref, o, progress=False)
    assert seen == sizes
    assert ev.metrics["n_reference"]["value"] == 2
    assert ev.metrics["hull_reference"]["n"] == sum(sizes)


def test_an_unknown_hull_reference_is_refused():
    with pytest.raises(CrysgenError, match="hull_reference must be one of all, subset"):
        EvalOptions(hull_reference="val")


def test_a_missing_library_is_raised_not_written_into_every_row(monkeypatch):
    from crysgen.evaluation import compositional, suite

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'smact'")

    monkeypatch.setattr(compositional, "smact_valid", missing)
    with pytest.raises(ModuleNotFoundError, match="smact"):
        suite._basics(load_cif("NaCl"))
    with pytest.raises(ModuleNotFoundError, match="smact"):  # every guarded check too
        suite._guarded(missing, load_cif("NaCl"))
    value, reason = suite._guarded(lambda s: 1 / 0, load_cif("NaCl"))  # any other error: the row's reason
    assert value is None and reason.startswith("ZeroDivisionError")


# ------------------------------------------------------------------- the Wasserstein distances' spread
def test_each_wasserstein_distance_carries_its_spread_and_keeps_the_protocol_draw(tmp_path):
    """The spread's draws come from a generator of their own: the protocol's figure is the one it
    was without them, on n_wasserstein of the valid samples, and the spread's ``all`` is W on
    every valid sample."""
    from tests.data.cifs import NACL_LATTICE

    cifs = {f"s{k:02d}": cif_text(lattice=(5.0 + 0.1 * k, *NACL_LATTICE[1:])) for k in range(12)}
    folder = write_folder(tmp_path / "cifs", cifs)
    ref = tmp_path / "ref.npz"
    CrystalSet.from_structures([load_cif("NaCl"), load_cif("SrTiO3")], max_sites=52).save(ref)
    base = {"metrics": ("validity", "distributions"), "workers": 1, "n_wasserstein": 4}
    with_spread = evaluate(folder, ref, ref, EvalOptions(**base, wasserstein_draws=30), progress=False)
    without = evaluate(folder, ref, ref, EvalOptions(**base, wasserstein_draws=0), progress=False)
    w, w0 = with_spread.metrics["wdist_density"], without.metrics["wdist_density"]
    assert w["value"] == w0["value"] and w["n"] == 4 and "spread" not in w0
    spread = w["spread"]
    assert spread["draws"] == 30 and spread["n"] == 4 and spread["sd"] > 0
    valid = [float(r["density_g_cm3"]) for r in with_spread.rows if r["struct_valid"] and r["comp_valid"]]
    ref_density = [load_cif("NaCl").density, load_cif("SrTiO3").density]
    assert len(valid) == 12
    assert spread["all"] == pytest.approx(float(wasserstein_distance(valid, ref_density)))
    assert with_spread.metrics["wdist_num_elems"]["spread"]["sd"] == 0.0  # every sample has two elements
    write_report(with_spread, tmp_path / "out", title="t", options=EvalOptions(**base, wasserstein_draws=30))
    html = (tmp_path / "out" / "report.html").read_text()
    assert f"± {spread['sd']:.2g} over 30 draws of 4" in html


def test_each_sample_row_carries_its_distance_to_the_nearest_reference(tmp_path):
    """The rows' nearest-reference distances are their own crystal's (a strained NaCl sits at
    composition distance 0 from the NaCl reference, KCl does not) and COV-P is the share of rows
    marked precise."""
    samples, train, ref = _coverage_set(tmp_path)
    # a composition cut-off that KCl misses, so that COV-P and its size bins count a miss
    o = EvalOptions(metrics=("validity", "coverage"), workers=1, cache_dir=str(tmp_path / "cache"),
                    cov_cutoffs=(0.4, 0.1))
    ev = evaluate(samples, train, ref, o, progress=False)
    by_id = {r["id"]: r for r in ev.rows}
    assert by_id["s0"]["cov_comp_distance"] == pytest.approx(0.0, abs=1e-6)  # strained NaCl
    assert by_id["s4"]["cov_comp_distance"] > 0.1  # KCl: no reference has its composition
    assert all(r["cov_struct_distance"] >= 0 for r in ev.rows)
    cut_s, cut_c = ev.metrics["cov_precision"]["cutoffs"]
    for r in ev.rows:
        assert r["cov_precise"] == (r["cov_struct_distance"] <= cut_s and r["cov_comp_distance"] <= cut_c)
    precise = sum(r["cov_precise"] for r in ev.rows)
    assert precise / len(ev.rows) == pytest.approx(ev.metrics["cov_precision"]["value"])
    # COV-P by cell size: each bin's share of precise rows, every row in one bin
    by_sites = ev.metrics["cov_precision"]["by_sites"]
    assert sum(b["n"] for b in by_sites) == len(ev.rows)
    assert not by_id["s4"]["cov_precise"] and any(b["precision"] < 1 for b in by_sites)
    for b in by_sites:
        lo, _, hi = b["sites"].partition("-")
        in_bin = [r for r in ev.rows if int(lo) <= r["num_sites"] <= int(hi or 10**6)]
        assert b["n"] == len(in_bin)
        assert b["precision"] == pytest.approx(sum(r["cov_precise"] for r in in_bin) / len(in_bin))
    write_report(ev, tmp_path / "out", title="t", options=o)
    first = by_sites[0]
    assert f"by sites: {first['sites']} {100 * first['precision']:.0f} % of {first['n']}" in (
        tmp_path / "out" / "report.html").read_text()
