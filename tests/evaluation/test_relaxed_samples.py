from __future__ import annotations

import csv
import json

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from crysgen.cli import main
from crysgen.data.structures import load_inputs
from crysgen.errors import CrysgenError
from crysgen.evaluation.relaxation import RelaxOptions
from crysgen.evaluation.relaxed_samples import relax_samples
from tests.conftest import load_cif


def _sample_folder(path):
    """A `crysgen sample`-like folder: strained NaCl, a cell too dense to relax, one undecoded sample."""
    strained = load_cif("NaCl")
    strained.apply_strain(0.05)
    dense = Structure(Lattice.cubic(4 ** (1 / 3)), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    (path / "cifs").mkdir(parents=True)
    rows = []
    for ident, s in (("sample_000000", strained), ("sample_000002", dense)):
        (path / "cifs" / f"{ident}.cif").write_text(str(CifWriter(s)))
        rows.append({"id": ident, "target": f"t{ident[-1]}", "formula": "NaCl", "num_sites": len(s),
                     "structurally_valid": 1, "spglib_space_group": 0, "failure": "",
                     "cif": f"cifs/{ident}.cif"})
    rows.insert(1, {"id": "sample_000001", "target": "t1", "formula": "", "num_sites": "",
                    "structurally_valid": "", "spglib_space_group": "",
                    "failure": "coincident_sites: 1 pair(s)", "cif": ""})
    with (path / "samples.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (path / "sample_config.json").write_text(json.dumps({"model": "m", "options": {"n": 3}}))
    (path / "summary.json").write_text(json.dumps({"n": 3, "decoded": 2, "failures": 1}))
    return strained


def _rows(path):
    with path.open(newline="") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def test_relaxed_folder_holds_the_relaxed_crystals_and_keeps_every_sample(tmp_path):
    strained = _sample_folder(tmp_path / "s")
    res = relax_samples(tmp_path / "s", tmp_path / "r", RelaxOptions(steps=200))
    assert (res.n, res.relaxed, res.kept_as_generated, res.without_structure) == (3, 1, 1, 1)
    out = tmp_path / "r"
    relaxed = Structure.from_file(out / "cifs" / "sample_000000.cif")
    # the CIF is the relaxed crystal: the 5 % strain is gone (rock salt 5.6-5.7 Å), not the input's cell
    assert relaxed.volume < strained.volume * 0.95 and 5.4 < relaxed.lattice.a < 5.9
    table = _rows(out / "relax.csv")
    first = table["sample_000000"]
    assert first["relaxed"] == "1" and first["converged"] == "1"
    assert float(first["energy_per_atom"]) < float(first["initial_energy_per_atom"])
    assert table["sample_000002"]["relaxed"] == "0" and "degenerate" in table["sample_000002"]["reason"]
    assert (out / "cifs" / "sample_000002.cif").is_file()  # kept as generated
    samples = _rows(out / "samples.csv")
    assert [samples[k]["target"] for k in sorted(samples)] == ["t0", "t1", "t2"]
    assert samples["sample_000001"]["failure"].startswith("coincident_sites")
    assert samples["sample_000000"]["spglib_space_group"] == "225"  # the relaxed structure's
    cfg = json.loads((out / "sample_config.json").read_text())
    assert cfg["model"] == "m" and cfg["relaxation"]["relaxed"] == 1
    assert cfg["relaxation"]["options"]["steps"] == 200 and cfg["relaxation"]["device_name"] == "cpu"
    assert json.loads((out / "summary.json").read_text())["failures"] == 1
    # read back as a sample folder: the undecoded sample still counts, with its reason
    back = load_inputs(out)
    assert [c.id for c in back] == ["sample_000000", "sample_000001", "sample_000002"]
    assert back[1].structure is None and back[1].problem.startswith("not decoded")
    assert not list(tmp_path.glob("*.partial"))


def test_a_non_empty_output_folder_is_refused_and_left_alone(tmp_path):
    _sample_folder(tmp_path / "s")
    (tmp_path / "r").mkdir()
    keep = tmp_path / "r" / "mine.txt"
    keep.write_text("precious")
    with pytest.raises(CrysgenError, match="not empty"):
        relax_samples(tmp_path / "s", tmp_path / "r", RelaxOptions(steps=5))
    assert keep.read_text() == "precious"
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["mine.txt"]


def test_cli_relax_checks_its_options_before_any_work(tmp_path, capsys):
    _sample_folder(tmp_path / "s")
    with pytest.raises(SystemExit):
        main(["relax", str(tmp_path / "s"), "--out", str(tmp_path / "r"), "--engine", "fast"])
    assert main(["relax", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) != 0
    assert "input not found" in capsys.readouterr().err
    assert main(["relax", str(tmp_path / "s"), "--out", str(tmp_path / "r"), "--fmax", "0"]) != 0
    assert "--fmax" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_relax_writes_a_folder_that_evaluate_reads(tmp_path, capsys):
    _sample_folder(tmp_path / "s")
    args = ["relax", str(tmp_path / "s"), "--out", str(tmp_path / "r"), "--steps", "100", "--quiet"]
    assert main(args) == 0
    assert "relaxed 1 of 3 crystals" in capsys.readouterr().out
    ref = tmp_path / "ref.npz"
    from crysgen.crystal_set import CrystalSet

    CrystalSet.from_structures([load_cif("NaCl")], ids=["ref"]).save(ref)
    assert main(["evaluate", str(tmp_path / "r"), "--reference", str(ref), "--metrics", "validity",
                 "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert metrics["n_samples"]["value"] == 3  # the undecoded sample counts, as an invalid one
    assert metrics["struct_valid"]["value"] == pytest.approx(2 / 3)


def test_fixed_cell_relaxes_the_positions_and_keeps_the_generated_cell(tmp_path):
    shaken = load_cif("NaCl")
    shaken.translate_sites([0], [0.3, 0.2, 0.0], frac_coords=False)  # one atom 0.36 Å off its site
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.cif").write_text(str(CifWriter(shaken)))
    res = relax_samples(tmp_path / "in", tmp_path / "r", RelaxOptions(steps=200), relax_cell=False)
    assert res.relaxed == 1 and res.converged == 1
    out = Structure.from_file(tmp_path / "r" / "cifs" / "x.cif")
    assert out.lattice.abc == pytest.approx(shaken.lattice.abc, abs=1e-4)
    assert out.lattice.angles == pytest.approx(shaken.lattice.angles, abs=1e-3)
    row = _rows(tmp_path / "r" / "relax.csv")["x"]
    assert float(row["energy_per_atom"]) < float(row["initial_energy_per_atom"]) - 1e-3  # the atoms moved
    cfg = json.loads((tmp_path / "r" / "sample_config.json").read_text())
    assert cfg["relaxation"]["relax_cell"] is False


def test_an_interrupted_relaxation_resumes_from_its_saved_parts(tmp_path, monkeypatch):
    import crysgen.evaluation.relaxed_samples as relaxed
    import crysgen.evaluation.suite as suite

    _sample_folder(tmp_path / "s")
    monkeypatch.setattr(relaxed, "RESUME_PART", 1)  # one crystal per saved part
    real, calls = suite.relax_all, []

    def interrupted_after_one(structures, *args, **kwargs):
        calls.append(len(structures))
        if len(calls) > 1:
            raise KeyboardInterrupt  # the run stops during its second part
        return real(structures, *args, **kwargs)

    monkeypatch.setattr(suite, "relax_all", interrupted_after_one)
    with pytest.raises(KeyboardInterrupt):
        relax_samples(tmp_path / "s", tmp_path / "r", RelaxOptions(steps=200))
    partial = tmp_path / "r.partial"
    assert [p.name for p in sorted((partial / "parts").iterdir())] == ["part_00000.json"]
    assert not (tmp_path / "r").exists()
    # without --resume the saved part is neither used nor deleted
    with pytest.raises(CrysgenError, match="--resume"):
        relax_samples(tmp_path / "s", tmp_path / "r", RelaxOptions(steps=200))
    # other settings than the interrupted run's are refused
    with pytest.raises(CrysgenError, match="steps"):
        relax_samples(tmp_path / "s", tmp_path / "r", RelaxOptions(steps=50), resume=True)
    assert (partial / "parts" / "part_00000.json").is_file()
    calls.clear()
    monkeypatch.setattr(suite, "relax_all", lambda s, *a, **k: calls.append(len(s)) or real(s, *a, **k))
    res = relax_samples(tmp_path / "s", tmp_path / "r", RelaxOptions(steps=200), resume=True)
    assert calls == [1]  # only the crystal the interrupted run had not relaxed
    assert (res.n, res.relaxed, res.kept_as_generated, res.converged) == (3, 1, 1, 1)
    relaxed_first = Structure.from_file(tmp_path / "r" / "cifs" / "sample_000000.cif")
    assert 5.4 < relaxed_first.lattice.a < 5.9  # the saved relaxation, written as the CIF
    assert _rows(tmp_path / "r" / "relax.csv")["sample_000000"]["converged"] == "1"
    assert not partial.exists() and not (tmp_path / "r" / "parts").exists()
