from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from crysgen.crystal_set import CrystalSet
from crysgen.evaluation import fingerprints
from crysgen.evaluation.fingerprints import cache_path, cached_fingerprints, fingerprint_structures
from tests.conftest import load_cif


def _crystals() -> list[Structure]:
    """Crystals of 1 to 8 sites in an order that is not by size (the workers' order is)."""
    return [Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]]), load_cif("SrTiO3"), load_cif("NaCl"),
            load_cif("triclinic_LiFePO"), load_cif("ZnO_wurtzite")]


def test_fingerprints_in_workers_equal_those_of_one_process():
    crystals = _crystals()
    assert [len(s) for s in crystals] != sorted((len(s) for s in crystals), reverse=True)
    serial = fingerprint_structures(crystals, workers=1)
    parallel = fingerprint_structures(crystals, workers=2)
    assert len(parallel) == len(crystals)
    for (s1, c1, r1), (s2, c2, r2) in zip(serial, parallel, strict=True):
        assert r1 is None and r2 is None
        np.testing.assert_array_equal(s1, s2)  # the same crystal in the same place: exactly equal
        np.testing.assert_array_equal(c1, c2)
    # different crystals have different fingerprints, so a mix-up of the order could not pass
    assert len({tuple(np.round(s, 6)) for s, _, _ in serial}) == len(crystals)


def test_the_fingerprint_cache_is_hit_on_a_second_run_and_missed_when_the_set_changes(tmp_path,
                                                                                      monkeypatch):
    crystals = _crystals()[:3]
    cs = CrystalSet.from_structures(crystals, max_sites=52)
    calls = []
    real = fingerprints.fingerprint_structures

    def counting(structures, **kw):
        calls.append(len(structures))
        return real(structures, **kw)

    monkeypatch.setattr(fingerprints, "fingerprint_structures", counting)
    first = cached_fingerprints(cs, workers=2, cache_dir=tmp_path)
    assert calls == [3]
    path = cache_path(cs, tmp_path)
    assert path.is_file()
    for part in ("pymatgen", "matminer", fingerprints.PRESET, f"v{fingerprints.VERSION}_"):
        assert part in path.name  # every version and the presets are in the key
    again = cached_fingerprints(cs, cache_dir=tmp_path)
    assert calls == [3]  # read from the cache
    for (s1, c1, _), (s2, c2, _) in zip(first, again, strict=True):
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(c1, c2)
    changed = [*crystals[:2], crystals[2].copy()]
    changed[2].translate_sites([0], [0.01, 0, 0])  # one atom of one crystal moved
    other = CrystalSet.from_structures(changed, max_sites=52)
    assert cache_path(other, tmp_path) != path
    cached_fingerprints(other, cache_dir=tmp_path)
    assert calls == [3, 3]  # another set: computed, not read


def test_a_crystal_whose_fingerprint_fails_gets_a_reason_and_is_cached_as_such(tmp_path, monkeypatch):
    crystals = _crystals()[:3]
    cs = CrystalSet.from_structures(crystals, max_sites=52)
    real = fingerprints.structure_fingerprint

    def fails_for_srtio3(structure):
        if structure.composition.reduced_formula == "SrTiO3":
            raise ValueError("no neighbours")
        return real(structure)

    monkeypatch.setattr(fingerprints, "structure_fingerprint", fails_for_srtio3)
    got = cached_fingerprints(cs, cache_dir=tmp_path)
    assert got[1] == (None, None, "structure fingerprint failed: ValueError: no neighbours")
    assert got[0][2] is None and got[2][2] is None
    monkeypatch.undo()
    assert cached_fingerprints(cs, cache_dir=tmp_path)[1][2].startswith("structure fingerprint failed")


@pytest.mark.parametrize("workers", [1, 2])
def test_the_suite_reference_fingerprints_share_the_cache(tmp_path, workers):
    from crysgen.evaluation.suite import EvalOptions, reference_fingerprints

    cs = CrystalSet.from_structures(_crystals()[:2], max_sites=52)
    got = reference_fingerprints(cs, cs.to_structures(), EvalOptions(cache_dir=str(tmp_path),
                                                                     workers=workers), progress=False)
    assert cache_path(cs, tmp_path).is_file()
    direct = cached_fingerprints(cs, cache_dir=tmp_path)
    np.testing.assert_array_equal(got[0][0], direct[0][0])


@pytest.mark.parametrize("workers", [1, 2])
def test_a_set_stop_event_ends_the_work_and_nothing_is_cached(tmp_path, workers):
    import threading

    stop = threading.Event()
    stop.set()
    cs = CrystalSet.from_structures(_crystals()[:3], max_sites=52)
    with pytest.raises(fingerprints.FingerprintsStopped):
        cached_fingerprints(cs, workers=workers, cache_dir=tmp_path, stop=stop)
    assert not cache_path(cs, tmp_path).exists()
    assert len(cached_fingerprints(cs, workers=workers, cache_dir=tmp_path,
                                   stop=threading.Event())) == len(cs)  # not set: the whole set


@pytest.mark.parametrize("name", ["structure_fingerprint", "composition_fingerprint"])
def test_a_missing_library_is_raised_not_recorded_as_one_crystal_s_failure(monkeypatch, name):
    def missing(structure):
        raise ModuleNotFoundError("No module named 'matminer'")

    monkeypatch.setattr(fingerprints, name, missing)
    with pytest.raises(ModuleNotFoundError, match="matminer"):
        fingerprints.fingerprint_pair(load_cif("NaCl"))
    monkeypatch.setattr(fingerprints, name, lambda s: (_ for _ in ()).throw(ValueError("odd cell")))
    assert "odd cell" in fingerprints.fingerprint_pair(load_cif("NaCl"))[2]  # other errors: its reason


def test_mean_coordination_reads_the_coordination_numbers_of_known_crystals():
    from crysgen.evaluation.fingerprints import coordination_shares, mean_coordination, structure_fingerprint

    diamond = Structure.from_spacegroup("Fd-3m", Lattice.cubic(3.567), ["C"], [[0, 0, 0]])
    fcc = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]])
    crystals = (diamond, fcc, load_cif("NaCl"), load_cif("ZnO_wurtzite"))
    fps = np.array([structure_fingerprint(s) for s in crystals])
    np.testing.assert_allclose(mean_coordination(fps), [4.0, 12.0, 6.0, 4.0], atol=0.01)
    shares = coordination_shares(fps)
    assert shares.shape == (4, 24) and np.allclose(shares.sum(axis=1), 1.0)
    assert shares[0, 3] == pytest.approx(1.0, abs=0.01)  # every diamond site 4-fold (column k - 1)
    # a crystal whose CN weights are all zero has no mean coordination, not a division error
    assert np.isnan(mean_coordination(np.zeros((1, fps.shape[1]))))[0]
