"""Two evaluations of paired samples compared crystal by crystal (McNemar's exact test).

Two models sampled with the same seeds and sizes (``crysgen sample`` draws the site counts and the
noise from its seed, so sample ``sample_000042`` of either model has the same number of sites) give
paired outcomes: for a per-crystal yes/no column of ``structures.csv`` (``cov_precise``,
``struct_valid``, ``comp_valid``) only the crystals on which the two disagree tell the models apart.
McNemar's exact test asks whether those discordant crystals split unevenly, which resolves
differences of a point or less on 10,000 samples that two independent proportions cannot. It says
nothing of the spread between training seeds: two runs that share a seed and data order differ
only by what the comparison is about.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crysgen.errors import CrysgenError
from crysgen.evaluation.coverage import site_bin_labels, site_bins

PAIRED_COLUMNS = ("cov_precise", "struct_valid", "comp_valid")
"""The per-crystal yes/no columns of ``structures.csv`` that :func:`compare_reports` accepts."""

_TRUTH = {"True": True, "False": False, "true": True, "false": False, "1": True, "0": False}


@dataclass(frozen=True)
class PairedCounts:
    """One group of paired crystals.

    Attributes:
        n: pairs in which both crystals have an outcome.
        rate_a: share of them that are yes for model A.
        rate_b: share that are yes for model B.
        only_a: pairs yes for A and no for B.
        only_b: pairs yes for B and no for A.
        p_value: two-sided exact McNemar p-value (the binomial test of ``only_a`` in
            ``only_a + only_b`` at 1/2); 1.0 without discordant pairs.
    """

    n: int
    rate_a: float
    rate_b: float
    only_a: int
    only_b: int
    p_value: float


@dataclass(frozen=True)
class PairedComparison:
    """Model A against model B on one column, overall and by site-count bin.

    Attributes:
        column: the ``structures.csv`` column compared.
        overall: every pair.
        by_sites: site-count bin label -> its pairs (bins of
            :data:`crysgen.evaluation.coverage.SITE_BINS`, non-empty ones, in size order; a pair whose
            crystal has no sites, one that was not decoded, counts in ``overall`` only).
        dropped: pairs left out because either crystal has no outcome (e.g. no fingerprint).
        same_sites: share of the pairs whose two crystals have the same number of sites (1.0 for
            samples drawn with the same seed; lower means the pairing is by id only).
    """

    column: str
    overall: PairedCounts
    by_sites: dict[str, PairedCounts] = field(default_factory=dict)
    dropped: int = 0
    same_sites: float = 1.0


def paired_counts(a: np.ndarray, b: np.ndarray) -> PairedCounts:
    """Rates, discordant counts and McNemar's exact p-value of paired yes/no outcomes.

    Args:
        a: bool (N,) model A's outcome per crystal.
        b: bool (N,) model B's outcome for the same crystals, in the same order.

    Returns:
        The :class:`PairedCounts` of the N pairs.
    """
    from scipy.stats import binomtest

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes need equal 1-D shapes, got {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    n = len(a)
    return PairedCounts(n=n, rate_a=float(a.mean()) if n else float("nan"),
                        rate_b=float(b.mean()) if n else float("nan"),
                        only_a=only_a, only_b=only_b, p_value=float(p))


def read_outcomes(report: str | Path, column: str) -> dict[str, tuple[bool | None, int]]:
    """A report's per-crystal outcome and site count, by sample id.

    Args:
        report: a ``crysgen evaluate`` report folder or its ``structures.csv`` (or a gzipped copy,
            ``.csv.gz``).
        column: one of :data:`PAIRED_COLUMNS`.

    Returns:
        id -> (outcome, or None where the row has none; number of sites).

    Raises:
        CrysgenError: a missing file or column, or a value that is not yes/no.
    """
    if column not in PAIRED_COLUMNS:
        raise CrysgenError(f"cannot compare column {column!r}: choose one of {', '.join(PAIRED_COLUMNS)}")
    path = Path(report)
    path = path / "structures.csv" if path.is_dir() else path
    if not path.is_file():
        raise CrysgenError(f"no structures.csv at {report} (a `crysgen evaluate` report folder)")
    with (gzip.open(path, "rt", newline="") if path.suffix == ".gz" else path.open(newline="")) as f:
        reader = csv.DictReader(f)
        missing = {"id", "num_sites", column} - set(reader.fieldnames or ())
        if missing:
            raise CrysgenError(f"{path} has no column {', '.join(sorted(missing))} (an older report? "
                               "evaluate the samples again)")
        out: dict[str, tuple[bool | None, int]] = {}
        for row in reader:
            value = row[column]
            if value != "" and value not in _TRUTH:
                raise CrysgenError(f"{path}: {column} of {row['id']} is {value!r}, not yes/no")
            out[row["id"]] = (_TRUTH[value] if value else None, int(row["num_sites"] or 0))
    return out


def compare_outcomes(a: Mapping[str, tuple[bool | None, int]], b: Mapping[str, tuple[bool | None, int]],
                     column: str) -> PairedComparison:
    """Pair two evaluations' outcomes by sample id and compare them (see :func:`read_outcomes`).

    Raises:
        CrysgenError: the two hold different sample ids (not samples of one seed and size).
    """
    if a.keys() != b.keys():
        only = sorted(a.keys() ^ b.keys())
        raise CrysgenError(f"the two evaluations do not hold the same samples ({len(only)} ids in one "
                           f"only, e.g. {only[0]}): pair samples drawn with the same -n and seed")
    ids = sorted(a)
    kept = [i for i in ids if a[i][0] is not None and b[i][0] is not None]
    xa = np.array([a[i][0] for i in kept], dtype=bool)
    xb = np.array([b[i][0] for i in kept], dtype=bool)
    sites = np.array([a[i][1] for i in kept], dtype=int)
    same = np.array([a[i][1] == b[i][1] for i in kept], dtype=bool)
    labels, k = site_bin_labels(), site_bins(sites)  # a crystal of 0 sites (not decoded): no bin
    by_sites = {labels[j]: paired_counts(xa[k == j], xb[k == j]) for j in np.unique(k[sites >= 1])}
    return PairedComparison(column=column, overall=paired_counts(xa, xb), by_sites=by_sites,
                            dropped=len(ids) - len(kept),
                            same_sites=float(same.mean()) if len(kept) else float("nan"))


def compare_reports(report_a: str | Path, report_b: str | Path,
                    column: str = "cov_precise") -> PairedComparison:
    """Compare two ``crysgen evaluate`` reports of paired samples on one yes/no column.

    Args:
        report_a: model A's report folder (or its ``structures.csv``).
        report_b: model B's, of samples drawn with the same seed and number.
        column: one of :data:`PAIRED_COLUMNS` (default COV-P's per-crystal ``cov_precise``).

    Returns:
        The :class:`PairedComparison`.
    """
    return compare_outcomes(read_outcomes(report_a, column), read_outcomes(report_b, column), column)
