from __future__ import annotations

import numpy as np

from crysgen.crystal_set import CrystalSet
from crysgen.evaluation.funnel import STEPS, average_counts, targeted_funnel
from crysgen.pipelines.voxel import VoxelSpec
from crysgen.representations.voxel import VoxelConfig
from crysgen.representations.watershed import VoxelDecodeResult
from tests.conftest import load_cif


def _variant(base, swap=None, drop=None, squash=False):
    s = base.copy()
    if swap:
        s.replace_species(swap)
    if drop is not None:
        s.remove_sites([drop])
    if squash:  # an O atom 0.2 Å from Ti
        ti = next(i for i, site in enumerate(s) if site.specie.symbol == "Ti")
        o = next(i for i, site in enumerate(s) if site.specie.symbol == "O")
        s.replace(o, "O", s[ti].coords + np.array([0.2, 0, 0]), coords_are_cartesian=True)
    return s


class _StubModel:
    """Generates the same hand-made candidates every time (one sample fails)."""

    def __init__(self, candidates: CrystalSet) -> None:
        self.spec = VoxelSpec(VoxelConfig(), "heat_ref", [float(e) for e in np.linspace(-3, 1, 9)], [])
        self.candidates = candidates

    def encode(self, crystals, classes, **_):
        return np.zeros((len(crystals), 4)), np.zeros((len(crystals), 4))

    def generate(self, n, **_):
        k = len(self.candidates)
        return VoxelDecodeResult(self.candidates, np.arange(k), np.ones(n, int), [(k, "no atom found")])


class _StubProperty:
    """-3 eV for crystals with Ba, -1 eV otherwise."""

    def predict(self, graphs, **_):
        return np.array([-3.0 if 56 in g.atomic_numbers else -1.0 for g in graphs])


def test_funnel_counts_each_filter_on_known_candidates():
    base = load_cif("SrTiO3")
    cands = [base, _variant(base, {"Sr": "Ba"}), _variant(base, {"Sr": "Ca"}), _variant(base, {"Sr": "Ca"}),
             _variant(base, squash=True), _variant(base, drop=4)]
    model = _StubModel(CrystalSet.from_structures(cands))
    base_set = CrystalSet.from_structures([base], properties={"heat_ref": [-1.1]})
    res = targeted_funnel(model, base_set, [base], _StubProperty(), n=7)
    assert res.counts == {"sampled": 7, "decoded": 6, "valid": 5, "same_stoichiometry": 4, "novel": 3,
                          "property_match": 2, "unique": 1}
    assert res.to_dict()["candidate_formulas"] == ["CaTiO3"]
    assert res.candidates.properties["heat_ref"].tolist() == [-1.0]
    avg = average_counts([res, res])
    assert list(avg) == list(STEPS)
    assert avg["unique"] == {"mean_count": 1.0, "mean_percent": round(100 / 7, 2)}
