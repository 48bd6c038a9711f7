from __future__ import annotations

import shutil

import pytest

from crysgen.crystal_set import CrystalSet
from crysgen.data.structures import load_inputs
from tests.conftest import FILES, load_cif


def _sample_folder(tmp_path):
    """A `crysgen sample`-like folder: four samples, the second not decoded."""
    folder = tmp_path / "samples"
    (folder / "cifs").mkdir(parents=True)
    (folder / "sample_config.json").write_text("{}")
    (folder / "samples.csv").write_text("id,failure\n000000,\n000001,overlapping atoms\n000002,\n000003,\n")
    for ident, name in (("000000", "NaCl"), ("000002", "SrTiO3"), ("000003", "ZnO_wurtzite")):
        shutil.copy(FILES / f"{name}.cif", folder / "cifs" / f"{ident}.cif")
    return folder


@pytest.mark.parametrize("limit", [0, 1, 2, 3, 4, 6, 9])
def test_a_limit_gives_the_first_crystals_of_the_whole_list(tmp_path, limit):
    folder = _sample_folder(tmp_path)
    npz = tmp_path / "two.npz"
    CrystalSet.from_structures([load_cif("NaCl"), load_cif("SrTiO3")], max_sites=52).save(npz)
    inputs = [folder, npz]
    whole = load_inputs(inputs)
    assert [c.id for c in whole][:4] == ["000000", "000001", "000002", "000003"] and len(whole) == 6
    assert whole[1].structure is None and "not decoded" in whole[1].problem
    got = load_inputs(inputs, limit=limit)
    assert [(c.id, c.problem) for c in got] == [(c.id, c.problem) for c in whole[:limit]]
