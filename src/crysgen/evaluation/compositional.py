"""Compositional validity as CDVAE's ``smact_validity`` defines it (SMACT charge neutrality + Pauling test).

A composition is valid if it is a single element, an all-metal alloy, or if some combination of
the elements' oxidation states (one state per element) is charge-neutral for the reduced
stoichiometry (counts divided by their gcd) and passes SMACT's Pauling electronegativity test.

By default the tables are SMACT 2.2.1's (``data/smact_2_2_1.json``), the release CDVAE's and
DiffCSP's ``compute_metrics.py`` ran with; later releases changed the oxidation states of 78 of
103 elements (and Zr's electronegativity 0.33 -> 1.33). ``tables="installed"`` uses the installed
``smact`` package instead.

CDVAE enumerates every combination of oxidation states (``itertools.product``), which is
astronomically slow for many-element generated compositions. This module decides the same
question exactly without the enumeration:

- Every electronegativity known: SMACT's test fails a combination iff some cation (state > 0) is
  at least as electronegative as some anion (state < 0), so a combination passes iff there is a
  threshold t with every cation below t and every anion at or above t. For each candidate t (the
  distinct electronegativities and +inf), the reachable charge sums under those sign restrictions
  are built element by element (a set of integers); valid iff 0 is reachable for some t.
- Some electronegativity unknown (Pm, Rn, Lr in 2.2.1): SMACT's pair loop either fails, or
  raises ``TypeError`` (CDVAE then counts the combination as passing), depending on which pair it
  meets first. Here a depth-first search assigns states in CDVAE's element order, prunes branches
  whose charge can no longer reach zero, and applies the literal pair loop at each leaf.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from functools import cache
from importlib import resources
from itertools import combinations

import numpy as np

TABLES = ("smact-2.2.1", "installed")
"""Where oxidation states, electronegativities and the metal list come from."""


@cache
def _tables(tables: str) -> tuple[dict[str, list[int]], dict[str, float | None], frozenset[str]]:
    """(oxidation states, Pauling electronegativity or None, metals) by element symbol."""
    if tables == "smact-2.2.1":
        data = json.loads(resources.files("crysgen.evaluation").joinpath("data/smact_2_2_1.json").read_text())
        return data["oxidation_states"], data["pauling_eneg"], frozenset(data["metals"])
    if tables == "installed":
        import smact

        class _Lazy(dict):
            def __missing__(self, symbol: str):
                element = smact.Element(symbol)
                ox[symbol], eneg[symbol] = list(element.oxidation_states or []), element.pauling_eneg
                return self[symbol]

        ox, eneg = _Lazy(), _Lazy()
        return ox, eneg, frozenset(smact.metals)
    raise ValueError(f"unknown SMACT tables {tables!r} (known: {', '.join(TABLES)})")


def _pauling_pairs_pass(ox_states: Sequence[int], enegs: Sequence[float | None]) -> bool:
    """SMACT's ``pauling_test`` (``eneg_states_test``) as CDVAE calls it, TypeError included.

    Pairs are visited in ``itertools.combinations`` order; the first failing pair fails the
    combination, and a comparison with an unknown electronegativity raises in SMACT, which CDVAE
    catches and counts as passing.
    """
    for (o1, e1), (o2, e2) in combinations(zip(ox_states, enegs, strict=True), 2):
        if o1 > 0 and o2 < 0:
            if e1 is None or e2 is None:
                return True  # TypeError in SMACT -> CDVAE: "assume it is okay"
            if e1 >= e2:
                return False
        elif o1 < 0 and o2 > 0:
            if e1 is None or e2 is None:
                return True
            if e1 <= e2:
                return False
        elif e1 is None or e2 is None:
            return False
    return True


def _zero_reachable(options: list[list[int]], counts: list[int]) -> bool:
    """Whether one state per element gives a charge sum of exactly zero."""
    sums = {0}
    for states, c in zip(options, counts, strict=True):
        if not states:
            return False
        sums = {s + c * o for s in sums for o in states}
    return 0 in sums


def _valid_known_enegs(ox: list[list[int]], enegs: list[float], counts: list[int]) -> bool:
    for t in [*sorted(set(enegs)), float("inf")]:
        options = [[o for o in states if (o > 0 and e < t) or (o < 0 and e >= t) or o == 0]
                   for states, e in zip(ox, enegs, strict=True)]
        if _zero_reachable(options, counts):
            return True
    return False


def _valid_search(ox: list[list[int]], enegs: list[float | None], counts: list[int]) -> bool:
    """Depth-first search with charge-bound pruning; the literal pair loop at each leaf."""
    n = len(ox)
    lo = [c * min(s) for s, c in zip(ox, counts, strict=True)]
    hi = [c * max(s) for s, c in zip(ox, counts, strict=True)]
    rest_lo = [sum(lo[k:]) for k in range(n + 1)]
    rest_hi = [sum(hi[k:]) for k in range(n + 1)]
    chosen: list[int] = []

    def dfs(k: int, charge: int) -> bool:
        if k == n:
            return charge == 0 and _pauling_pairs_pass(chosen, enegs)
        for o in ox[k]:
            c = charge + counts[k] * o
            if c + rest_lo[k + 1] <= 0 <= c + rest_hi[k + 1]:
                chosen.append(o)
                if dfs(k + 1, c):
                    return True
                chosen.pop()
        return False

    return dfs(0, 0)


def smact_valid(atomic_numbers: Sequence[int], *, tables: str = "smact-2.2.1") -> bool:
    """CDVAE's compositional validity of a crystal's site list (atomic numbers, any order).

    Args:
        atomic_numbers: one atomic number per site.
        tables: ``"smact-2.2.1"`` (CDVAE's) or ``"installed"`` (the installed smact release).

    Raises:
        KeyError: for an element the tables do not know (CDVAE's code raises as well).
    """
    from pymatgen.core.periodic_table import Element

    ox_table, eneg_table, metals = _tables(tables)
    counter = Counter(int(z) for z in atomic_numbers)
    elems = sorted(counter)  # CDVAE: sorted atomic numbers
    counts = np.array([counter[z] for z in elems])
    counts = (counts // np.gcd.reduce(counts)).tolist()
    symbols = [Element.from_Z(z).symbol for z in elems]
    ox = [list(ox_table[s]) for s in symbols]
    enegs = [eneg_table[s] for s in symbols]
    if len(symbols) == 1:
        return True
    if all(s in metals for s in symbols):
        return True
    if any(not states for states in ox):
        return False
    known = [e for e in enegs if e is not None]
    if len(known) == len(enegs):  # every electronegativity known
        return _valid_known_enegs(ox, known, counts)
    return _valid_search(ox, enegs, counts)


def smact_valid_enumerated(atomic_numbers: Sequence[int], *, tables: str = "smact-2.2.1") -> bool:
    """The same verdict by CDVAE's literal enumeration of every combination (slow; for checking)."""
    import itertools

    from pymatgen.core.periodic_table import Element

    ox_table, eneg_table, metals = _tables(tables)
    counter = Counter(int(z) for z in atomic_numbers)
    elems = sorted(counter)
    counts = np.array([counter[z] for z in elems])
    counts = (counts // np.gcd.reduce(counts)).tolist()
    symbols = [Element.from_Z(z).symbol for z in elems]
    if len(symbols) == 1 or all(s in metals for s in symbols):
        return True
    enegs = [eneg_table[s] for s in symbols]
    for ox_states in itertools.product(*[ox_table[s] for s in symbols]):
        neutral = sum(o * c for o, c in zip(ox_states, counts, strict=True)) == 0
        if neutral and _pauling_pairs_pass(ox_states, enegs):
            return True
    return False
