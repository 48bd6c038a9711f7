"""Compositional validity as CDVAE's ``smact_validity`` defines it (SMACT charge neutrality + Pauling test).

A composition is valid if it is a single element, an all-metal alloy, or if some combination of
the elements' SMACT oxidation states is charge-neutral for the reduced stoichiometry (counts
divided by their gcd, ``smact.neutral_ratios`` with threshold = the largest count) and passes
the Pauling electronegativity test (missing electronegativities count as passing).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

MAX_COMBINATIONS = 2_000_000
"""Oxidation-state combinations tried before giving up (many-element generated compositions)."""


class TooManyCombinations(ValueError):
    """The oxidation-state search is too large to finish."""


def smact_valid(atomic_numbers: Sequence[int]) -> bool:
    """CDVAE's compositional validity of a crystal's site list (atomic numbers, any order).

    Raises:
        TooManyCombinations: if more than ``MAX_COMBINATIONS`` oxidation-state combinations
            would be needed (the caller records a reason instead of a verdict).
    """
    import smact
    from pymatgen.core.periodic_table import Element
    from smact.screening import pauling_test

    counter = Counter(int(z) for z in atomic_numbers)
    elems = sorted(counter)
    counts = np.array([counter[z] for z in elems])
    counts = (counts // np.gcd.reduce(counts)).tolist()
    symbols = tuple(Element.from_Z(z).symbol for z in elems)
    if len(symbols) == 1:
        return True
    if all(s in smact.metals for s in symbols):
        return True
    space = smact.element_dictionary(symbols)
    smact_elems = [space[s] for s in symbols]
    electronegs = [e.pauling_eneg for e in smact_elems]
    ox_combos = [e.oxidation_states for e in smact_elems]
    if math.prod(len(o) for o in ox_combos) > MAX_COMBINATIONS:
        raise TooManyCombinations(f"{math.prod(len(o) for o in ox_combos)} oxidation-state combinations")
    threshold = max(counts)
    stoichs = [(c,) for c in counts]
    for ox_states in itertools.product(*ox_combos):
        # smact >= 3 returns the list of neutral ratios (older versions a (bool, ratios) pair)
        if not smact.neutral_ratios(ox_states, stoichs=stoichs, threshold=threshold):
            continue
        try:
            ok = pauling_test(ox_states, electronegs)
        except TypeError:  # no electronegativity data: CDVAE counts it as passing
            ok = True
        if ok:
            return True
    return False
