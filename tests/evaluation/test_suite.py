"""How `crysgen evaluate` reads its inputs (issue 22): bad crystals get reasons, never a crash."""

from __future__ import annotations

import csv
import json

import pytest

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
    assert "<tr><td>struct_valid</td><td>0.5</td><td>2</td></tr>" in html
    assert '<img src="data:image/png;base64,iVBORw0KGgo=">' in html


def test_a_failed_run_leaves_a_status_that_says_where_it_stopped(tmp_path, monkeypatch):
    from crysgen.evaluation import suite

    folder, ref = _inputs(tmp_path)

    def broken(*a, **k):
        raise RuntimeError("relaxation engine broke")

    monkeypatch.setattr(suite, "_relax_all", broken)
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
