"""A learned choice of each composition's template: which fitting known crystal to copy.

:func:`~crysgen.pipelines.symmetry.match_templates` takes the fitting crystal whose exchanged
elements are most alike (:func:`~crysgen.pipelines.symmetry.element_cost`). That crystal is often
not the target's structure type although another fitting crystal is: for a composition with
several structure types among its fitting crystals, how alike the elements are says little about
which type the target takes. A :class:`TemplateRanker` scores a few candidates per target instead
— the ``best`` best-fitting crystals and the best-fitting crystal of each of the first ``groups``
space groups — from :data:`FEATURES` of each (target, candidate) pair: how alike the exchanged
elements are (electronegativity, Mendeleev number, atomic radius), how many elements stay, how
common the candidate's space group is among all fitting crystals, and a soft vote of the fitting
crystals' space groups weighted by their cost. Its network (a small multilayer perceptron, fitted
with scikit-learn's ``MLPClassifier``) predicts whether the candidate, with the target's elements,
matches the target (:func:`fit_ranker`); the candidate it scores highest is the template. The
labels come from known crystals only (a validation split against the training split:
``benchmarks/template_ranker.py``), never from the targets a benchmark scores.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crysgen.errors import CrysgenError
from crysgen.pipelines.symmetry import _counts, _element_table, _pairing, fitting_rows

if TYPE_CHECKING:
    from crysgen.crystal_set import CrystalSet

__all__ = ["BUNDLED_RANKER", "FEATURES", "TemplateRanker", "candidate_features", "candidate_pool",
           "fit_ranker", "load_ranker", "ranker_file"]

FEATURES = ("cost", "electronegativity", "mendeleev", "radius", "kept", "group_share", "group_count_log",
            "cost_above_best", "electronegativity_above_best", "mendeleev_above_best", "radius_above_best",
            "vote_0.25", "vote_0.5", "vote_1")
"""Per (target, candidate): the element cost; the summed |Δ| of Pauling electronegativity,
Mendeleev number and atomic radius (Å) over the exchanged element pairs; the number of elements
kept; the share and log(1 + count) of the fitting crystals in the candidate's space group; the
first four minus their smallest value among the target's candidates; the soft vote of the
candidate's space group, Σ exp(-cost / τ) over its fitting crystals over that sum for all, τ 0.25,
0.5 and 1."""
_TAUS = (0.25, 0.5, 1.0)
BUNDLED_RANKER = Path(__file__).resolve().parents[1] / "pretrained" / "template_ranker_mp20.json"
"""A ranker fitted on the mp_20 validation split's candidates from the partial train split."""


@lru_cache(maxsize=1)
def _element_scales() -> np.ndarray:
    """Float (119, 3): Pauling electronegativity (0 if none), Mendeleev number, radius (Å; else 1.5)."""
    from pymatgen.core import Element

    table = np.zeros((119, 3))
    table[:, 0] = _element_table()[:, 0]
    table[:, 2] = 1.5
    for z in range(1, 119):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            element = Element.from_Z(z)
            mendeleev, radius = element.mendeleev_no, element.atomic_radius
        table[z, 1] = float(mendeleev or 0)
        if radius is not None:
            table[z, 2] = float(radius)
    return table


def candidate_pool(rows: np.ndarray, prior: CrystalSet, *, best: int, groups: int) -> np.ndarray:
    """Which of a target's fitting crystals a ranker scores.

    Args:
        rows: int (m,) the fitting rows of ``prior``, best-fitting first (:func:`fitting_rows`).
        prior: the crystals (their space groups).
        best: how many of the best-fitting crystals.
        groups: of how many space groups (in the order of their best crystal) that best crystal.

    Returns:
        Int (k,) positions in ``rows``, increasing, k <= best + groups.
    """
    _, first = np.unique(prior.space_group[rows], return_index=True)
    return np.union1d(np.arange(min(best, len(rows))), np.sort(first)[:groups])


def candidate_features(target_z: np.ndarray, prior: CrystalSet, rows: np.ndarray, costs: np.ndarray,
                       pool: np.ndarray) -> np.ndarray:
    """:data:`FEATURES` of each candidate of one target.

    Args:
        target_z: int (S,) the target's atomic numbers, 0 = no site.
        prior: the crystals templates come from.
        rows: int (m,) every fitting row of ``prior``, best-fitting first.
        costs: float (m,) their element costs.
        pool: int (k,) the candidates' positions in ``rows`` (:func:`candidate_pool`).

    Returns:
        Float (k, len(FEATURES)).
    """
    scales = _element_scales()
    target = _counts(np.asarray(target_z))
    groups = prior.space_group[rows]
    shifted = costs - costs.min()
    out = np.zeros((len(pool), len(FEATURES)))
    for i, p in enumerate(pool):
        pairs = _pairing(_counts(prior.atomic_numbers[rows[p]]), target)
        assert pairs is not None  # fitting rows fit
        a, b = np.array(list(pairs)), np.array(list(pairs.values()))
        delta = np.abs(scales[a] - scales[b]).sum(0)
        same = groups == groups[p]
        votes = [np.exp(-shifted[same] / t).sum() / np.exp(-shifted / t).sum() for t in _TAUS]
        out[i, :7] = [costs[p], *delta, float((a == b).sum()), same.mean(), np.log1p(same.sum())]
        out[i, 11:] = votes
    out[:, 7:11] = out[:, :4] - out[:, :4].min(0)
    return out


@dataclass
class TemplateRanker:
    """A multilayer perceptron that scores a target's candidate templates.

    Attributes:
        mean: float (F,) the features' mean (standardisation).
        scale: float (F,) the features' standard deviation.
        weights: per layer a float (F_in, F_out) matrix; the last layer has one output (a logit).
        biases: per layer a float (F_out,) vector.
        best: the best-fitting crystals among the candidates.
        groups: the space groups whose best crystal is a candidate.
        fitted_on: what the labels came from (free text).
        features: the feature names, :data:`FEATURES` when written.
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    best: int = 8
    groups: int = 6
    fitted_on: str = ""
    features: tuple[str, ...] = field(default=FEATURES)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Float (k,) logits of (k, F) candidate features (higher: more likely the target's structure)."""
        h = (np.asarray(features, np.float64) - self.mean) / self.scale
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0]

    def choose(self, targets_z: np.ndarray, prior: CrystalSet,
               fits: list[tuple[np.ndarray, np.ndarray] | None] | None = None) -> list[int | None]:
        """Per target the row of ``prior`` its best-scored candidate is (None: no crystal fits).

        Args:
            targets_z: int (n, S) the targets' atomic numbers, 0 = no site.
            prior: the crystals templates come from.
            fits: :func:`fitting_rows` of these, where the caller has them.
        """
        fits = fitting_rows(targets_z, prior) if fits is None else fits
        chosen: list[int | None] = []
        for z, fit in zip(np.asarray(targets_z), fits, strict=True):
            if fit is None:
                chosen.append(None)
                continue
            rows, costs = fit
            pool = candidate_pool(rows, prior, best=self.best, groups=self.groups)
            scores = self.score(candidate_features(z, prior, rows, costs, pool))
            chosen.append(int(rows[pool[int(np.argmax(scores))]]))
        return chosen

    def save(self, path: str | Path) -> Path:
        """Write the ranker as JSON."""
        from crysgen.crystal_set import write_text_atomic

        data = {"features": list(self.features), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": [w.tolist() for w in self.weights], "biases": [b.tolist() for b in self.biases],
                "best": self.best, "groups": self.groups, "fitted_on": self.fitted_on}
        return write_text_atomic(Path(path), json.dumps(data) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TemplateRanker:
        """Read a ranker that :meth:`save` wrote.

        Raises:
            CrysgenError: for a missing or unreadable file, or one made for other features.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            ranker = cls(mean=np.array(data["mean"]), scale=np.array(data["scale"]),
                         weights=[np.array(w) for w in data["weights"]],
                         biases=[np.array(b) for b in data["biases"]], best=int(data["best"]),
                         groups=int(data["groups"]), fitted_on=str(data.get("fitted_on", "")),
                         features=tuple(data["features"]))
        except FileNotFoundError:
            raise CrysgenError(f"template ranker {path}: no such file") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CrysgenError(f"template ranker {path}: not a ranker file ({err})") from None
        if ranker.features != FEATURES:
            raise CrysgenError(f"template ranker {path} was fitted on other features "
                               f"({', '.join(ranker.features)})")
        return ranker


def ranker_file(spec: str) -> Path:
    """The file ``spec`` names: :data:`BUNDLED_RANKER` for ``"bundled"``, else the path given."""
    return BUNDLED_RANKER if spec == "bundled" else Path(spec)


def load_ranker(spec: str) -> TemplateRanker:
    """``"bundled"`` (:data:`BUNDLED_RANKER`) or the path of a ranker file."""
    return TemplateRanker.load(ranker_file(spec))


def fit_ranker(features: list[np.ndarray], matched: list[np.ndarray], *, hidden: tuple[int, ...] = (32,),
               best: int = 8, groups: int = 6, seed: int = 0, fitted_on: str = "") -> TemplateRanker:
    """Fit a ranker to labelled candidates (scikit-learn ``MLPClassifier``, early stopping).

    Args:
        features: per target float (k, F) its candidates' :data:`FEATURES`.
        matched: per target bool (k,) whether each candidate with the target's elements matches it.
        hidden: the hidden layers' widths.
        best: the candidate pool's best-fitting crystals (:func:`candidate_pool`).
        groups: the candidate pool's space groups.
        seed: the network's initialisation and validation split.
        fitted_on: what the labels came from.

    Raises:
        CrysgenError: with no candidate, or labels all alike.
    """
    from sklearn.neural_network import MLPClassifier

    x = np.concatenate([np.asarray(f, np.float64).reshape(-1, len(FEATURES)) for f in features])
    y = np.concatenate([np.asarray(m, bool).ravel() for m in matched])
    if len(x) != len(y) or not len(y) or y.all() or not y.any():
        raise CrysgenError(f"a template ranker needs matched and unmatched candidates ({len(y)} labels, "
                           f"{int(y.sum())} matched, {len(x)} feature rows)")
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    net = MLPClassifier(hidden, alpha=1e-2, max_iter=300, early_stopping=True, random_state=seed)
    net.fit((x - mean) / scale, y)
    return TemplateRanker(mean=mean, scale=scale, weights=[np.asarray(w) for w in net.coefs_],
                          biases=[np.asarray(b) for b in net.intercepts_], best=best, groups=groups,
                          fitted_on=fitted_on)

