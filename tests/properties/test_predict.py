from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from crysgen import CrysgenError
from crysgen.cli import main
from crysgen.crystal_set import CrystalSet
from crysgen.data.structures import load_inputs
from crysgen.models.cgcnn import CGCNN, CGCNNConfig
from crysgen.properties.model import PropertyModel
from crysgen.properties.predict import column_name, predict_properties, smape
from tests.conftest import FILES, load_cif


def test_column_names_carry_units():
    assert column_name("formation_energy_per_atom", "eV/atom") == "formation_energy_per_atom_eV_per_atom"
    assert column_name("poisson_ratio", "") == "poisson_ratio"


def test_inputs_from_files_folders_and_crystal_sets(tmp_path):
    crystals = load_inputs(FILES)
    by_id = {c.id: c for c in crystals}
    assert by_id["broken"].structure is None and "unparsable" in by_id["broken"].problem
    assert by_id["disordered_NaKCl"].structure is None and "disordered" in by_id["disordered_NaKCl"].problem
    assert by_id["NaCl"].structure is not None
    cs = CrystalSet.from_structures([load_cif("NaCl"), load_cif("SrTiO3")], max_sites=52)
    cs.save(tmp_path / "two.npz")
    assert [c.structure.composition.reduced_formula for c in load_inputs(tmp_path / "two.npz")] == \
        ["NaCl", "SrTiO3"]


def test_a_sample_folder_lists_its_undecoded_samples_with_the_reason(tmp_path):
    folder = tmp_path / "samples"
    (folder / "cifs").mkdir(parents=True)
    (folder / "sample_config.json").write_text("{}")
    load_cif("NaCl").to(filename=str(folder / "cifs" / "sample_000001.cif"))
    (folder / "samples.csv").write_text("id,formula,failure,cif\n"
                                        "sample_000000,,lattice read-back failed: lengths [0.2],\n"
                                        "sample_000001,NaCl,,cifs/sample_000001.cif\n")
    got = load_inputs(folder)
    assert [c.id for c in got] == ["sample_000000", "sample_000001"]
    assert got[0].structure is None and got[0].problem.startswith("not decoded: lattice read-back")
    assert got[1].structure is not None and got[1].problem is None


def _tiny(target: str, unit: str, mean: float) -> PropertyModel:
    torch.manual_seed(0)
    net = CGCNN(config=CGCNNConfig(atom_feature_len=8, n_conv=1), atom_features=torch.rand(101, 8))
    return PropertyModel(net.eval(), target, unit, mean=mean, std=1e-6)


def test_court_rule_blanks_dielectric_where_the_band_gap_is_zero():
    crystals = load_inputs([FILES / "NaCl.cif", FILES / "SrTiO3.cif"])
    metal = predict_properties(crystals, {"band_gap": _tiny("band_gap", "eV", -1.0),
                                          "eps": _tiny("dielectric_constant", "", 5.0)})
    assert all(r["dielectric_constant"] == "" for r in metal.rows)
    insulator = predict_properties(crystals, {"band_gap": _tiny("band_gap", "eV", 2.0),
                                              "eps": _tiny("dielectric_constant", "", 5.0)})
    assert all(r["dielectric_constant"] == pytest.approx(5.0, abs=1e-3) for r in insulator.rows)


def test_predict_cli_writes_one_row_per_structure_with_reasons(cgcnn_dir, tmp_path):
    out = tmp_path / "props.csv"
    assert main(["predict", str(FILES), "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == sorted(p.stem for p in FILES.glob("*.cif"))
    assert next(iter(rows[0])) == "id"
    assert {"formation_energy_per_atom_eV_per_atom", "band_gap_eV", "bulk_modulus_GPa",
            "p_metal", "problem"} <= set(rows[0])
    good = [r for r in rows if not r["problem"]]
    assert len(good) == len(rows) - 2
    assert all(np.isfinite(float(r["formation_energy_per_atom_eV_per_atom"])) for r in good)
    assert all(r["formation_energy_per_atom_eV_per_atom"] == "" for r in rows if r["problem"])


def test_predict_cli_refuses_an_unknown_model_before_reading(cgcnn_dir, tmp_path, capsys):
    assert main(["predict", str(FILES), "--models", "nope", "--out", str(tmp_path / "x.csv")]) == 2
    assert "unknown property model" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_train_property_cli_with_transfer_learning(cgcnn_dir, perov_csv, tmp_path):
    from crysgen.data.prepare import PrepareOptions, prepare_dataset

    cs, _ = prepare_dataset(perov_csv, PrepareOptions(limit=48), workers=1, progress=False)
    cs.save(tmp_path / "p.npz")
    run = tmp_path / "run"
    assert main(["train", "property", "--data", str(tmp_path / "p.npz"), "--target", "heat_ref",
                 "--unit", "eV", "--out", str(run), "--init", "formation_energy", "--freeze-conv",
                 "--epochs", "2", "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_val"] == 48 and np.isfinite(metrics["val_mae"])
    assert (run / "parity.png").is_file()
    model = PropertyModel.from_pretrained(run / "model")
    from crysgen.properties.registry import load_property_model

    init = load_property_model("formation_energy")
    # frozen graph layers are exactly the pre-trained ones; the head was trained
    assert torch.equal(model.net.convs[0].fc_full.weight, init.net.convs[0].fc_full.weight)
    assert not torch.equal(model.net.fc_out.weight, init.net.fc_out.weight)
    # the trained model is found by name in a models directory
    rows = predict_properties(load_inputs(FILES / "SrTiO3.cif"),
                              {"m": load_property_model(str(run / "model"))}).rows
    assert np.isfinite(float(rows[0]["heat_ref_eV"]))


def test_smape_is_symmetric_and_zero_for_perfect():
    y, p = np.array([1.0, 2.0, 0.0]), np.array([1.0, 2.0, 0.0])
    assert smape(y, p) == 0.0
    assert smape(np.array([1.0]), np.array([3.0])) == pytest.approx(100.0)


def test_degenerate_cells_and_unknown_elements_get_a_problem_not_numbers(tmp_path):
    from tests.data.cifs import DEGENERATE, NACL_SITES, cif_text, write_folder

    cifs = {f"bad_{k}": cif_text(v) for k, v in DEGENERATE.items()}
    cifs["unknown_element"] = cif_text(sites=[("Xx", 0, 0, 0), *NACL_SITES[1:]])
    cifs["good"] = cif_text()
    folder = write_folder(tmp_path / "cifs", cifs)
    res = predict_properties(load_inputs(folder), {"e": _tiny("energy", "eV", 1.0)})
    rows = {r["id"]: r for r in res.rows}
    for name in DEGENERATE:
        assert rows[f"bad_{name}"]["problem"].startswith("degenerate_lattice"), name
        assert rows[f"bad_{name}"]["energy_eV"] == ""
    assert rows["unknown_element"]["problem"].startswith("unknown_element")
    assert rows["unknown_element"]["energy_eV"] == ""
    assert rows["good"]["problem"] == "" and rows["good"]["energy_eV"] != ""


def test_predict_checks_options_before_any_model_loads(tmp_path, monkeypatch, capsys):
    from crysgen.properties import registry

    monkeypatch.setattr(registry, "load_property_model", lambda *a, **k: pytest.fail("model loaded"))
    nacl = str(FILES / "NaCl.cif")
    (tmp_path / "a_folder").mkdir()
    for argv, said in ((["--device", "bogus"], "--device"), (["--out", str(tmp_path / "a_folder")], "folder"),
                       (["--device", "cuda:99"], "--device")):
        assert main(["predict", nacl, "--quiet", *argv]) == 2
        assert said in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing.cif"), "--quiet"]) == 2
    assert "input not found" in capsys.readouterr().err


def test_a_sample_folder_where_nothing_decoded_is_all_failures(tmp_path):
    folder = tmp_path / "samples"
    (folder / "cifs").mkdir(parents=True)
    (folder / "sample_config.json").write_text("{}")
    (folder / "samples.csv").write_text("id,formula,failure,cif\n"
                                        "sample_000000,,far from any crystal,\n"
                                        "sample_000001,,coincident_sites,\n")
    got = load_inputs(folder)
    assert [(c.id, c.structure, c.problem) for c in got] == [
        ("sample_000000", None, "not decoded: far from any crystal"),
        ("sample_000001", None, "not decoded: coincident_sites")]
    (folder / "samples.csv").write_text("id,formula,failure,cif\n")  # no samples at all: still an error
    with pytest.raises(CrysgenError, match=r"holds no \.cif files"):
        load_inputs(folder)
