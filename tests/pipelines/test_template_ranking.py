from __future__ import annotations

import json

import numpy as np
import pytest

from crysgen import CrysgenError
from crysgen.pipelines.symmetry import element_cost, fitting_rows, match_templates
from crysgen.pipelines.template_ranking import (
    BUNDLED_RANKER,
    FEATURES,
    TemplateRanker,
    candidate_features,
    candidate_pool,
    fit_ranker,
    load_ranker,
)
from tests.conftest import rock_salts_and_wurtzite

F = len(FEATURES)


NACL = np.array([[11] * 4 + [17] * 4])


def _ranker(weights: dict[str, float]) -> TemplateRanker:
    """A linear ranker (one layer) that scores sum(weight * feature)."""
    w = np.zeros((F, 1))
    for name, value in weights.items():
        w[FEATURES.index(name), 0] = value
    return TemplateRanker(mean=np.zeros(F), scale=np.ones(F), weights=[w], biases=[np.zeros(1)])


def test_fitting_rows_lists_every_fitting_crystal_most_alike_first():
    crystals = rock_salts_and_wurtzite()
    (rows, costs), = fitting_rows(NACL, crystals)
    assert [crystals.ids[r] for r in rows] == ["w", "KCl", "KBr"]
    assert costs[0] == 0 and costs[1] == pytest.approx(element_cost(np.array([19]), np.array([11])).sum())
    assert np.all(np.diff(costs) >= 0)
    assert fitting_rows(np.array([[3, 8, 26, 0]]), crystals) == [None]


def test_the_pool_takes_the_best_crystals_and_the_best_of_each_space_group():
    crystals = rock_salts_and_wurtzite()
    (rows, _), = fitting_rows(NACL, crystals)
    assert candidate_pool(rows, crystals, best=1, groups=6).tolist() == [0, 1]  # w, then KCl for 225
    assert candidate_pool(rows, crystals, best=3, groups=0).tolist() == [0, 1, 2]
    assert candidate_pool(rows, crystals, best=0, groups=1).tolist() == [0]


def test_candidate_features_measure_the_exchange_and_the_space_groups():
    crystals = rock_salts_and_wurtzite()
    (rows, costs), = fitting_rows(NACL, crystals)
    pool = candidate_pool(rows, crystals, best=3, groups=6)
    f = candidate_features(NACL[0], crystals, rows, costs, pool)
    col = {name: f[:, i] for i, name in enumerate(FEATURES)}
    assert f.shape == (3, F)
    assert col["cost"].tolist() == pytest.approx(costs.tolist())
    assert col["kept"].tolist() == [2, 1, 0]  # w keeps Na and Cl, KCl keeps Cl, KBr neither
    assert col["electronegativity"][0] == 0 and col["electronegativity"][2] > col["electronegativity"][1] > 0
    assert col["group_share"].tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert col["group_count_log"].tolist() == pytest.approx(np.log1p([1, 2, 2]).tolist())
    assert col["cost_above_best"].tolist() == pytest.approx((costs - costs.min()).tolist())
    for tau in ("0.25", "0.5", "1"):  # the two groups' votes share 1; the cheap wurtzite wins at small τ
        assert col[f"vote_{tau}"][0] + col[f"vote_{tau}"][1] == pytest.approx(1.0)
        assert col[f"vote_{tau}"][1] == col[f"vote_{tau}"][2]
    assert col["vote_0.25"][0] > col["vote_1"][0] > 0.5


def test_a_ranker_takes_the_candidate_it_scores_highest():
    crystals = rock_salts_and_wurtzite()
    by_cost = _ranker({"cost": -1.0})
    by_group = _ranker({"group_share": 1.0, "cost": -0.01})
    assert by_cost.choose(NACL, crystals) == [0]  # w: what match_templates takes
    assert by_group.choose(NACL, crystals) == [2]  # KCl: the cheaper crystal of the common group
    assert match_templates(NACL, crystals).sources == ["w"]
    chosen = match_templates(NACL, crystals, ranker=by_group)
    assert chosen.sources == ["KCl"] and chosen.symmetries[0].space_group == 225
    assert match_templates(np.array([[3, 8, 26, 0]]), crystals, ranker=by_group).sources == [""]
    with pytest.raises(CrysgenError, match="no rank or vote"):
        match_templates(NACL, crystals, ranker=by_group, rank=1)


def test_a_ranker_survives_its_file_and_bad_files_get_clear_errors(tmp_path):
    rng = np.random.default_rng(0)
    ranker = TemplateRanker(mean=rng.normal(size=F), scale=rng.uniform(1, 2, F),
                            weights=[rng.normal(size=(F, 4)), rng.normal(size=(4, 1))],
                            biases=[rng.normal(size=4), rng.normal(size=1)], best=5, groups=3, fitted_on="x")
    path = ranker.save(tmp_path / "r.json")
    again = TemplateRanker.load(path)
    x = rng.normal(size=(7, F))
    assert np.allclose(again.score(x), ranker.score(x)) and (again.best, again.groups) == (5, 3)
    hidden = np.maximum((x - ranker.mean) / ranker.scale @ ranker.weights[0] + ranker.biases[0], 0)
    assert np.allclose(ranker.score(x), (hidden @ ranker.weights[1] + ranker.biases[1])[:, 0])  # ReLU MLP
    with pytest.raises(CrysgenError, match="no such file"):
        load_ranker(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CrysgenError, match="not a ranker file"):
        load_ranker(str(tmp_path / "bad.json"))
    data = json.loads(path.read_text())
    data["features"] = ["cost"]
    (tmp_path / "other.json").write_text(json.dumps(data))
    with pytest.raises(CrysgenError, match="other features"):
        load_ranker(str(tmp_path / "other.json"))


def test_fit_ranker_learns_which_candidate_matches():
    """Planted rule: the candidate with the largest group share matches; the cost is noise."""
    rng = np.random.default_rng(1)

    def targets(n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        feats, labels = [], []
        for _ in range(n):
            f = rng.normal(size=(6, F))
            labels.append(f[:, FEATURES.index("group_share")] == f[:, FEATURES.index("group_share")].max())
            feats.append(f)
        return feats, labels

    feats, labels = targets(1500)
    ranker = fit_ranker(feats, labels, hidden=(16,), seed=0)
    test_feats, test_labels = targets(300)
    hits = [lab[int(np.argmax(ranker.score(f)))] for f, lab in zip(test_feats, test_labels, strict=True)]
    assert np.mean(hits) > 0.8  # chance: 1 / 6
    with pytest.raises(CrysgenError, match="matched and unmatched"):
        fit_ranker(feats, [np.zeros(6, bool) for _ in feats])


def test_the_bundled_ranker_loads_and_chooses():
    ranker = load_ranker("bundled")
    assert ranker.features == FEATURES and BUNDLED_RANKER.is_file()
    assert "val" in ranker.fitted_on
    crystals = rock_salts_and_wurtzite()
    assert ranker.choose(NACL, crystals)[0] in (0, 1, 2)
