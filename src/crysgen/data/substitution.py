"""One ion substitution per composition, drawn from pymatgen's data-mined substitution model.

A composition-first sampler takes compositions from a set of known crystals and changes each by
replacing one species with another of the same oxidation state (so a charge-balanced composition
stays balanced), drawn with pymatgen's ``SubstitutionProbability`` (Hautier et al., Inorg. Chem.
50, 656 (2011): probabilities mined from the ICSD over oxidation-state-decorated species).

Each composition's species come from pymatgen's most likely charge-balanced oxidation-state guess;
a composition without one (intermetallics, most alloys) takes each element's most common
oxidation state instead, which keeps the substitution chemically alike (Fe³⁺ → Cr³⁺) without a
charge balance to keep. Elements without an oxidation state in the model (noble gases) are never
replaced.

The data-mined probabilities favour heavier ions (on mp_20 training compositions the expected
change of the formula mass is about +12 %), and a structure model that keeps a template's volume
then makes denser crystals than the data. ``draw="mass-balanced"`` draws instead from the distribution
closest to the data-mined one (in KL divergence) under which the expected change of log formula
mass is zero: each candidate's probability times ``exp(λ Δ)``, Δ its log mass ratio, λ solved per
composition.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from crysgen.crystal_set import reduced_formula
from crysgen.errors import CrysgenError

DRAWS = ("probability", "mass-balanced")
"""How :func:`substitute` draws a row's substitution (``crysgen sample --substitute DRAW``)."""


@dataclass
class SubstitutionResult:
    """Compositions after one drawn substitution each.

    Attributes:
        atomic_numbers: int (n, S), 0 = no site; the sites of a changed row are re-sorted by
            atomic number, as ``crysgen data prepare`` lists them.
        changed: bool (n,): whether the row's composition changed.
        by_common_states: int: changed rows whose species took each element's most common
            oxidation state (no charge-balanced guess existed).
        substitutions: one "Old→New" (element symbols) per row, "" where unchanged.
        log_mass_change: float (n,): ln(formula mass after / before), 0 where unchanged.
    """

    atomic_numbers: np.ndarray
    changed: np.ndarray
    by_common_states: int
    substitutions: list[str]
    log_mass_change: np.ndarray


def substitute(atomic_numbers: np.ndarray, *, allowed: set[int] | None = None,
               avoid: set[str] | None = None, threshold: float = 1e-2, draw: str = "probability",
               seed: int | list[int] = 0) -> SubstitutionResult:
    """Replace one species of every composition, drawn by substitution probability.

    Args:
        atomic_numbers: int (n, S), 0 = no site.
        allowed: the elements a substitution may bring in (None: any).
        avoid: reduced formulas the result must not have (e.g. every training composition, so
            that each changed row is a composition the model has not seen); rows whose every
            candidate lands in it stay unchanged.
        threshold: the least conditional substitution probability p(new | old) a candidate needs.
        draw: "probability" (by p(new | old)) or "mass-balanced": each row's probabilities tilted
            so that the expected change of log formula mass is zero (a row whose candidates all
            change the mass the same way draws among those that change it least).
        seed: seeds the draws.

    Returns:
        The substituted compositions; a row without a candidate stays as it was.

    Raises:
        CrysgenError: for atomic numbers outside 0..118, or an unknown ``draw``.
    """
    z = np.asarray(atomic_numbers, np.int64)
    if z.ndim != 2 or z.min(initial=0) < 0 or z.max(initial=0) > 118:
        raise CrysgenError("atomic numbers must be an (n, S) array of 0 (no site) .. 118")
    if draw not in DRAWS:
        raise CrysgenError(f"a substitution draw must be one of {', '.join(DRAWS)}, got {draw!r}")
    masses = atomic_masses()
    rng = np.random.default_rng(seed)
    out = z.copy()
    changed = np.zeros(len(z), bool)
    names = [""] * len(z)
    log_mass = np.zeros(len(z))
    by_common = 0
    for i, row in enumerate(z):
        counts = {int(k): int((row == k).sum()) for k in np.unique(row[row > 0])}
        options, common = _candidates(tuple(sorted(counts.items())), threshold)
        options = [(old, new, p) for old, new, p in options
                   if (allowed is None or new in allowed)
                   and (not avoid or reduced_formula(np.where(row == old, new, row)) not in avoid)]
        if not options:
            continue
        weights = np.array([p for _, _, p in options])
        change = np.log(np.array([masses[np.where(row == old, new, row)].sum() for old, new, _ in options])
                        / masses[row].sum())
        if draw == "mass-balanced":
            weights = tilted(weights, change)
        pick = rng.choice(len(options), p=weights / weights.sum())
        old, new, _ = options[pick]
        log_mass[i] = change[pick]
        sites = np.where(row == old, new, row)
        out[i] = np.concatenate([np.sort(sites[sites > 0]), np.zeros((sites == 0).sum(), np.int64)])
        changed[i] = True
        names[i] = f"{_symbol(old)}→{_symbol(new)}"
        by_common += common
    return SubstitutionResult(out, changed, by_common, names, log_mass)


def tilted(p: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The distribution closest to ``p`` (KL divergence) under which ``delta`` has mean zero.

    That is ``p · exp(λ δ)``, normalised, with λ solved by root finding. Where every δ has the same
    sign, no λ gives mean zero; the limit λ → ∓∞ is returned: ``p`` restricted to the smallest |δ|.

    Args:
        p: float (k,) non-negative weights, not all zero.
        delta: float (k,) the quantity to balance.

    Returns:
        float (k,) probabilities summing to 1.
    """
    from scipy.optimize import brentq

    p = np.asarray(p, float) / np.sum(p)
    delta = np.asarray(delta, float)
    if delta.min() >= 0 or delta.max() <= 0:
        w = p * (np.abs(delta) == np.abs(delta).min())
        return w / w.sum()

    def weights(lam: float) -> np.ndarray:
        e = lam * delta
        w = p * np.exp(e - e.max())
        return w / w.sum()

    def mean(lam: float) -> float:
        return float(weights(lam) @ delta)

    lo, hi = -1.0, 1.0
    while mean(lo) > 0:
        lo *= 2
    while mean(hi) < 0:
        hi *= 2
    return weights(brentq(mean, lo, hi, xtol=1e-10))


@functools.cache
def atomic_masses() -> np.ndarray:
    """Float (119,) standard atomic masses (u) by atomic number; index 0 (no site) is 0."""
    from pymatgen.core import Element

    return np.array([0.0] + [float(Element.from_Z(z).atomic_mass) for z in range(1, 119)])


@functools.lru_cache(maxsize=100_000)
def _candidates(counts: tuple[tuple[int, int], ...], threshold: float
                ) -> tuple[list[tuple[int, int, float]], bool]:
    """Every one-species substitution of a composition: (old Z, new Z, probability).

    Also returns whether the species are the elements' most common oxidation states (the
    composition has no charge-balanced guess).
    """
    from pymatgen.core import Composition, Element, Species

    table = _table()
    comp = Composition({Element.from_Z(z): c for z, c in counts})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guesses = comp.oxi_state_guesses(max_sites=-1) if len(comp) > 1 else ()
    if guesses:
        states, common = guesses[0], False
    else:
        states = {el.symbol: el.common_oxidation_states[0] for el in comp if el.common_oxidation_states}
        common = True
    present = {z for z, _ in counts}
    out = []
    for el, state in states.items():
        if float(state) != int(state):  # mixed valence (Fe3O4: 8/3): not a species of the table
            continue
        old = Species(el, int(state))
        if old not in table.species:
            continue
        for new in table.species:
            if new.oxi_state != old.oxi_state or new.element.Z in present:
                continue
            p = table.cond_prob(old, new)
            if p >= threshold:
                out.append((old.element.Z, new.element.Z, float(p)))
    return sorted(out), common  # the table's species are a set: its order follows PYTHONHASHSEED


@functools.cache
def _table() -> Any:
    """The substitution probability model of pymatgen (its bundled lambda table)."""
    from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionProbability

    return SubstitutionProbability()


def _symbol(z: int) -> str:
    from pymatgen.core import Element

    return Element.from_Z(z).symbol
