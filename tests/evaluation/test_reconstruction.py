from __future__ import annotations

import numpy as np
import pytest

from crysgen.crystal_set import CrystalSet
from crysgen.evaluation.reconstruction import compare, site_emd, summarize, voxel_recall
from tests.conftest import load_cif


def test_site_emd_is_the_mean_matched_distance_under_periodic_images():
    true = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    pred = np.array([[0.55, 0.5, 0.5], [0.99, 0.0, 0.0]])  # swapped order, one across the face
    assert site_emd(pred, true, np.array([4.0, 4.0, 4.0])) == pytest.approx((0.2 + 0.04) / 2)
    assert site_emd(true, true, np.array([4.0, 4.0, 4.0])) == 0.0
    assert site_emd(pred[:1], true, np.array([4.0, 4.0, 4.0])) == pytest.approx(0.2)  # best pair
    assert np.isnan(site_emd(np.zeros((0, 3)), true, np.ones(3)))


def test_voxel_recall_counts_only_truly_occupied_voxels():
    true = np.array([[0, 8, 8, 22]])
    occ = np.array([[0.9, 0.9, 0.2, 0.7]])
    species = np.array([[8, 8, 8, 8]])
    assert voxel_recall(occ, species, true) == pytest.approx((2 / 3, 2 / 3))


def test_compare_scores_a_perfect_and_a_damaged_reconstruction():
    truth = CrystalSet.from_structures([load_cif("SrTiO3")])
    damaged = truth.subset([0])
    damaged.lattice[0, 0] += 0.3
    damaged.num_sites[0] -= 1
    damaged.atomic_numbers[0, 4] = 0
    decoded = CrystalSet.concatenate([truth, damaged])
    pairs = compare(decoded, np.array([0, 0]), truth)
    assert pairs["lattice_error"].tolist() == pytest.approx([0.0, 0.1])
    assert pairs["delta_sites"].tolist() == [0, -1] and pairs["match"].tolist() == [True, False]
    assert pairs["site_emd"][0] == 0.0
    m = summarize(pairs, n=4)
    assert m.decoded == 2 and m.match_rate == 0.25 and m.abs_delta_sites == 0.5 and m.exact_site_count == 0.5
