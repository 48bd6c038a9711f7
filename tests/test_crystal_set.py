from __future__ import annotations

import numpy as np
import pytest

from crysgen import CrysgenError, CrystalSet
from tests.conftest import load_cif


def _set() -> CrystalSet:
    return CrystalSet.from_structures(
        [load_cif("NaCl"), load_cif("SrTiO3")], ids=["nacl", "sto"], space_groups=[225, 221],
        properties={"e": [1.0, np.nan]}, max_sites=52, metadata={"source": "test"},
    )


def test_from_structures_pads_and_keeps_order():
    cs = _set()
    assert len(cs) == 2 and cs.max_sites == 52
    assert cs.num_sites.tolist() == [8, 5]
    assert cs.atomic_numbers[1, :5].tolist() == [38, 22, 8, 8, 8]
    assert (cs.atomic_numbers[1, 5:] == 0).all()
    np.testing.assert_allclose(cs.lattice[0], [5.64, 5.64, 5.64, 90, 90, 90])
    assert cs.site_mask.sum() == 13


def test_save_load_roundtrip_and_bytes(tmp_path):
    cs = _set()
    p1, p2 = tmp_path / "a.npz", tmp_path / "b.npz"
    cs.save(p1)
    cs.save(p2)
    assert p1.read_bytes() == p2.read_bytes()
    back = CrystalSet.load(p1)
    for name in ("atomic_numbers", "frac_coords", "lattice", "space_group", "num_sites", "ids"):
        np.testing.assert_array_equal(getattr(back, name), getattr(cs, name))
    np.testing.assert_array_equal(back.properties["e"], cs.properties["e"])
    assert back.metadata == {"source": "test"}
    assert not list(tmp_path.glob("*.part"))


def test_to_structure_matches_input():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    cs = _set()
    assert StructureMatcher().fit(cs.to_structure(0), load_cif("NaCl"))
    assert cs.to_structure(1).composition.reduced_formula == "SrTiO3"


def test_subset_and_concatenate():
    cs = _set()
    both = CrystalSet.concatenate([cs.subset([1]), cs.subset([0])])
    assert both.ids.tolist() == ["sto", "nacl"]
    assert both.num_sites.tolist() == [5, 8]


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(CrysgenError, match="inconsistent shapes"):
        CrystalSet(np.zeros((2, 4)), np.zeros((2, 3, 3)), np.zeros((2, 6)), np.zeros(2),
                   np.zeros(2), np.array(["a", "b"]))
    with pytest.raises(CrysgenError, match="no such CrystalSet"):
        CrystalSet.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CrysgenError, match="cannot read"):
        CrystalSet.load(bad)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(CrysgenError, match="not a CrystalSet"):
        CrystalSet.load(tmp_path / "other.npz")
    with pytest.raises(CrysgenError, match="more than max_sites"):
        CrystalSet.from_structures([load_cif("P1_53_sites")], max_sites=52)
    with pytest.raises(CrysgenError, match="disordered"):
        CrystalSet.from_structures([load_cif("disordered_NaKCl")])


def test_concurrent_atomic_writes_of_one_path_neither_fail_nor_leave_parts(tmp_path):
    """Two evaluations filling one cache wrote through one shared `.part` name: one renamed the
    other's file away and crashed (FileNotFoundError); every write now has its own."""
    import threading

    from crysgen.crystal_set import write_npz_atomic, write_text_atomic

    errors: list[Exception] = []

    def writer(k: int) -> None:
        for i in range(100):
            try:
                write_text_atomic(tmp_path / "cache.json", f"{k}-{i}" * 50)
                write_npz_atomic(tmp_path / "cache.npz", {"x": np.full(64, k)})
            except Exception as e:  # every failure is the finding
                errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json", "cache.npz"]
    # the last rename is some thread's last write, whole
    assert (tmp_path / "cache.json").read_text() in {f"{k}-99" * 50 for k in range(4)}
    assert len(set(np.load(tmp_path / "cache.npz")["x"])) == 1
