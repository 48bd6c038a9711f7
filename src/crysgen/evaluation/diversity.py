"""Mode-collapse check: how many distinct compositions and space groups a generator produces."""

from __future__ import annotations

from collections import Counter
from typing import Any

from crysgen.crystal_set import CrystalSet, reduced_formula


def reduced_formulas(cs: CrystalSet) -> list[str]:
    """Reduced formula of every crystal (pymatgen ``Composition.reduced_formula``)."""
    return [reduced_formula(cs.atomic_numbers[i, : cs.num_sites[i]]) for i in range(len(cs))]


def mode_collapse_check(cs: CrystalSet, n_samples: int | None = None) -> dict[str, Any]:
    """Distinct reduced compositions and space groups among decoded crystals.

    Args:
        cs: the decoded crystals (failures already left out).
        n_samples: how many samples were drawn (default ``len(cs)``); the ``per_1000`` figures
            scale the counts to 1,000 drawn samples, so runs of other sizes compare.

    Returns:
        ``distinct_compositions``, ``distinct_space_groups``, their ``per_1000`` versions, and
        ``top_composition_share`` / ``top_space_group_share``: the fraction of decoded crystals
        taken by the most common one (near 1 = collapsed).
    """
    n_samples = len(cs) if n_samples is None else n_samples
    formulas = Counter(reduced_formulas(cs))
    groups = Counter(int(g) for g in cs.space_group)
    scale = 1000.0 / n_samples if n_samples else float("nan")
    n = max(len(cs), 1)
    return {"decoded": len(cs), "n_samples": n_samples,
            "distinct_compositions": len(formulas), "distinct_space_groups": len(groups),
            "distinct_compositions_per_1000": round(len(formulas) * scale, 1),
            "distinct_space_groups_per_1000": round(len(groups) * scale, 1),
            "top_composition_share": (formulas.most_common(1)[0][1] / n) if formulas else 0.0,
            "top_space_group_share": (groups.most_common(1)[0][1] / n) if groups else 0.0}
