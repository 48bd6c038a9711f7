from __future__ import annotations

import pytest

from crysgen import CrysgenError
from crysgen.codec.roundtrip import roundtrip
from crysgen.data.prepare import PrepareOptions, prepare_dataset
from crysgen.representations.crystens import CrysTensScaling, DecodeOptions


@pytest.fixture(scope="module")
def perov_small():
    from tests.conftest import SHARED_DATA

    path = SHARED_DATA / "perov_5" / "test.csv.gz"
    if not path.exists():
        pytest.skip("shared perov_5 not found")
    cs, _ = prepare_dataset(path, PrepareOptions(limit=60), progress=False)
    return cs


def test_clean_auto_roundtrip_matches_everything(perov_small):
    res = roundtrip(perov_small, progress=False)
    assert res.n == 60 and res.matched == 60 and res.match_rate == 1.0
    assert res.failures == 0 and res.num_elements_mismatch == 0 and res.atom_count_errors == 0
    assert res.encode_per_s > 0 and res.decode_per_s > 0
    assert res.mean_diagnostics["var_lattice_params"] < 1e-8
    assert set(res.summary()) >= {"n", "matched", "match_rate", "failures", "mean_diagnostics",
                                  "encode_per_s", "decode_per_s"}


def test_noise_lowers_the_match_rate_and_parallel_matching_agrees(perov_small):
    quiet = roundtrip(perov_small, noise=0.003, seed=1, progress=False)
    loud = roundtrip(perov_small, noise=0.05, seed=1, workers=2, progress=False)
    assert quiet.match_rate > loud.match_rate
    again = roundtrip(perov_small, noise=0.05, seed=1, workers=1, progress=False)
    assert (again.matched_mask == loud.matched_mask).all()
    assert loud.mean_diagnostics["var_lattice_params"] > 0


def test_faithful_mode_and_paper_scaling(perov_small):
    res = roundtrip(perov_small, scaling=CrysTensScaling.paper(),
                    options=DecodeOptions(mode="faithful"), progress=False)
    assert res.mode == "faithful" and res.failures == 0
    # perov_5 often has 4 elements (mixed anions): k = 3 merges two of them
    assert 0 < res.match_rate < 1 and res.num_elements_mismatch > 0


def test_element_rule_ablation_option(perov_small):
    res = roundtrip(perov_small, options=DecodeOptions(elements="round"), progress=False)
    assert res.elements == "round" and res.match_rate == 1.0
    with pytest.raises(CrysgenError, match="element rule"):
        DecodeOptions(elements="vote")  # type: ignore[arg-type]


def test_negative_noise_is_refused(perov_small):
    with pytest.raises(CrysgenError, match="noise"):
        roundtrip(perov_small, noise=-1, progress=False)
