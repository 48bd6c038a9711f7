"""Structural validity as CDVAE defines it: all pairwise distances >= 0.5 Å, volume >= 0.1 Å³.

The metric's functions are defined in :mod:`crysgen.data.validity`, below every layer that uses
them (``samples.csv`` of `crysgen sample` has a ``structurally_valid`` column); this is the name
the evaluation and the benchmarks import them by.
"""

from __future__ import annotations

from crysgen.data.validity import close_pairs, pair_distances, structurally_valid

__all__ = ["close_pairs", "pair_distances", "structurally_valid"]
