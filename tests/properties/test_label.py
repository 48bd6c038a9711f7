from __future__ import annotations

import numpy as np
import pytest

from crysgen.cli import main
from crysgen.crystal_set import CrystalSet
from crysgen.properties.label import label_property
from tests.conftest import load_cif
from tests.properties.test_predict import _tiny


def _pair() -> CrystalSet:
    cs = CrystalSet.from_structures([load_cif("NaCl"), load_cif("SrTiO3")], max_sites=52)
    cs.properties["heat_ref"] = np.array([np.nan, -1.5])
    return cs


def test_label_fills_only_unknown_values_and_records_how():
    out, report = label_property(_pair(), _tiny("heat_ref", "eV", 0.25), "heat_ref", source="tiny")
    assert out.properties["heat_ref"][0] == pytest.approx(0.25, abs=1e-3)
    assert out.properties["heat_ref"][1] == -1.5
    assert (report.n_predicted, report.n_kept, report.n_failed) == (1, 1, 0)
    assert out.metadata["labelled"]["heat_ref"]["model"] == "tiny"
    again, _ = label_property(_pair(), _tiny("heat_ref", "eV", 0.25), "heat_ref", overwrite=True)
    assert again.properties["heat_ref"][1] == pytest.approx(0.25, abs=1e-3)


def test_label_cli_writes_a_new_file_and_refuses_to_overwrite_its_input(tmp_path, capsys):
    data = _pair().save(tmp_path / "two.npz")
    _tiny("heat_ref", "eV", 0.25).save_pretrained(tmp_path / "model")
    out = tmp_path / "labelled.npz"
    assert main(["data", "label", str(data), "--model", str(tmp_path / "model"), "--property", "heat_ref",
                 "--out", str(out)]) == 0
    assert np.isfinite(CrystalSet.load(out).properties["heat_ref"]).all()
    assert np.isnan(CrystalSet.load(data).properties["heat_ref"][0])
    before = data.read_bytes()
    assert main(["data", "label", str(data), "--model", str(tmp_path / "model"), "--property", "heat_ref",
                 "--out", str(data)]) != 0
    assert "must differ" in capsys.readouterr().err
    assert data.read_bytes() == before
