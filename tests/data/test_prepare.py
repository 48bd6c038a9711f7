from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from crysgen import CrysgenError, CrystalSet
from crysgen.data.prepare import PrepareOptions, prepare_dataset, write_prepared
from crysgen.data.sources import read_source
from tests.conftest import FILES, shared_file


def _cif_folder(tmp_path, names):
    folder = tmp_path / "cifs"
    folder.mkdir()
    for n in names:
        shutil.copy(FILES / f"{n}.cif", folder / f"{n}.cif")
    return folder


def test_cif_folder_keeps_good_and_drops_bad_with_reasons(tmp_path):
    folder = _cif_folder(tmp_path, ["NaCl", "SrTiO3", "ZnO_wurtzite", "triclinic_LiFePO",
                                    "P1_52_sites", "P1_53_sites", "disordered_NaKCl", "broken"])
    cs, report = prepare_dataset(folder, workers=1, progress=False)
    assert sorted(cs.ids.tolist()) == ["NaCl", "P1_52_sites", "SrTiO3", "ZnO_wurtzite",
                                       "triclinic_LiFePO"]
    reasons = {d.id: d.reason for d in report.dropped}
    assert reasons == {"P1_53_sites": "too_many_sites", "disordered_NaKCl": "disordered",
                       "broken": "unparsable"}
    assert report.dropped_by_reason == {"disordered": 1, "too_many_sites": 1, "unparsable": 1}
    assert report.n_input == 8 and report.n_kept == 5
    i = cs.ids.tolist().index("NaCl")
    assert cs.space_group[i] == 225 and cs.num_sites[i] == 8  # conventional cell
    assert cs.atomic_numbers[i, :8].tolist() == [11] * 4 + [17] * 4  # electronegativity order
    assert cs.space_group[cs.ids.tolist().index("ZnO_wurtzite")] == 186
    assert cs.space_group[cs.ids.tolist().index("triclinic_LiFePO")] == 1
    assert cs.num_sites[cs.ids.tolist().index("P1_52_sites")] == 52
    assert (cs.frac_coords >= 0).all() and (cs.frac_coords < 1).all()


def test_cell_conventions(tmp_path):
    folder = _cif_folder(tmp_path, ["NaCl"])
    prim, _ = prepare_dataset(folder, PrepareOptions(cell="primitive"), progress=False)
    asis, _ = prepare_dataset(folder, PrepareOptions(cell="as-is"), progress=False)
    assert prim.num_sites[0] == 2 and asis.num_sites[0] == 8
    np.testing.assert_allclose(prim.lattice[0, 3:], [60, 60, 60], atol=1e-6)


def test_element_beyond_scaling_is_dropped(tmp_path):
    folder = _cif_folder(tmp_path, ["NaCl", "SrTiO3"])
    cs, report = prepare_dataset(folder, PrepareOptions(max_z=30), progress=False)
    assert cs.ids.tolist() == ["NaCl"]
    assert report.dropped[0].reason == "element_out_of_range" and "Sr" in report.dropped[0].detail


def test_csv_with_properties_and_byte_identical_output(tmp_path, perov_csv):
    opts = PrepareOptions(limit=40)
    cs1, rep1 = prepare_dataset(perov_csv, opts, workers=1, progress=False)
    cs2, rep2 = prepare_dataset(perov_csv, opts, workers=2, progress=False)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    write_prepared(cs1, rep1, a)
    write_prepared(cs2, rep2, b)
    assert a.read_bytes() == b.read_bytes()
    assert a.with_suffix(".report.json").read_bytes() == b.with_suffix(".report.json").read_bytes()
    back = CrystalSet.load(a)
    assert len(back) == 40
    assert set(back.properties) == {"heat_all", "heat_ref", "dir_gap", "ind_gap"}
    assert np.isfinite(back.properties["heat_ref"]).all()
    assert back.ids[0] == str(int(back.ids[0]))  # material_id column
    report = json.loads(a.with_suffix(".report.json").read_text())
    assert report["n_kept"] == 40 and report["options"]["limit"] == 40
    assert report["source"]["sha256"] == back.metadata["source_sha256"]


def test_poscar_csv(tmp_path):
    src = shared_file("carbon_24", "train_poscar.csv.gz")
    cs, report = prepare_dataset(src, PrepareOptions(limit=10), progress=False)
    assert len(cs) + len(report.dropped) == 10
    assert set(np.unique(cs.atomic_numbers[cs.site_mask])) == {6}


def test_extxyz_via_ase(tmp_path):
    import ase.io
    from pymatgen.io.ase import AseAtomsAdaptor

    from tests.conftest import load_cif

    frames = []
    for name, e in [("NaCl", -1.5), ("SrTiO3", -2.5)]:
        atoms = AseAtomsAdaptor.get_atoms(load_cif(name))
        atoms.info["energy_per_atom"] = e
        frames.append(atoms)
    mol = frames[0].copy()
    mol.pbc = False
    frames.append(mol)
    path = tmp_path / "set.extxyz"
    ase.io.write(path, frames, format="extxyz")
    cs, report = prepare_dataset(path, progress=False)
    assert len(cs) == 2
    np.testing.assert_allclose(cs.properties["energy_per_atom"], [-1.5, -2.5])
    assert report.dropped[0].reason == "unparsable" and "periodic" in report.dropped[0].detail


def test_bad_sources_and_options(tmp_path):
    with pytest.raises(CrysgenError, match="not found"):
        read_source(tmp_path / "nope.csv")
    bad_csv = tmp_path / "x.csv"
    bad_csv.write_text("a,b\n1,2\n")
    with pytest.raises(CrysgenError, match="no structure column"):
        read_source(bad_csv)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CrysgenError, match=r"no \.cif files"):
        read_source(tmp_path / "empty")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01")
    with pytest.raises(CrysgenError, match="cannot read"):
        read_source(junk)
    with pytest.raises(CrysgenError, match="unknown cell"):
        PrepareOptions(cell="weird")  # type: ignore[arg-type]
    with pytest.raises(CrysgenError, match="max-sites"):
        PrepareOptions(max_sites=0)


def test_existing_output_survives_a_failed_prepare(tmp_path):
    out = tmp_path / "keep.npz"
    out.write_bytes(b"precious")
    from crysgen.cli import main

    assert main(["data", "prepare", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert out.read_bytes() == b"precious"


# ---------------------------------------------------------------------- bad input (issue 22)
def _bad_folder(tmp_path):
    from tests.data.cifs import DEGENERATE, NACL_SITES, cif_text, write_folder

    cifs = {f"bad_{k}": cif_text(v) for k, v in DEGENERATE.items()}
    cifs.update({f"good_{k}": cif_text() for k in range(6)})
    cifs["two_blocks"] = cif_text(block="first") + cif_text(block="second")
    cifs["occupancy_zero"] = cif_text(occupancies=[0] + [1] * 7)
    cifs["coincident"] = cif_text(sites=[*NACL_SITES, ("Na", 0.501, 0.5, 0.5)])  # 0.0056 Å from a Cl
    cifs["negative"] = cif_text((-5.64, 5.64, 5.64, 90, 90, 90))
    return write_folder(tmp_path / "cifs", cifs)


@pytest.mark.parametrize("workers", [1, 2])
def test_every_bad_entry_gets_its_own_reason_and_nothing_crashes(tmp_path, workers):
    folder = _bad_folder(tmp_path)
    cs, report = prepare_dataset(folder, PrepareOptions(), workers=workers, progress=False)
    reasons = {d.id: d.reason for d in report.dropped}
    assert reasons == {"bad_nan_length": "degenerate_lattice", "bad_inf_length": "degenerate_lattice",
                       "bad_zero_angle": "degenerate_lattice", "bad_angle_180": "degenerate_lattice",
                       "occupancy_zero": "zero_occupancy", "coincident": "close_sites",
                       "negative": "degenerate_lattice"}
    assert all(d.detail for d in report.dropped)
    assert "0.00564 Å apart" in next(d.detail for d in report.dropped if d.id == "coincident")
    assert sorted(cs.ids.tolist()) == [f"good_{k}" for k in range(6)] + [
        "two_blocks:first", "two_blocks:second"]
    assert report.n_input == 15 and report.n_kept + len(report.dropped) == report.n_input


def test_symprec_must_be_positive():
    for bad in (-1.0, 0.0, float("nan")):
        with pytest.raises(CrysgenError, match="symprec"):
            PrepareOptions(symprec=bad)
