"""Where a benchmark's figures come from: the published figures it compares with.

``published.json`` (next to this file) holds every figure of other work that a benchmark puts
beside its own, each with its source; scripts read them here instead of typing them in.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

PUBLISHED = Path(__file__).resolve().parent / "published.json"


@functools.cache
def _all() -> dict[str, Any]:
    return json.loads(PUBLISHED.read_text())


def published(section: str) -> dict[str, Any]:
    """One section of published.json ("dng", "csp", "crystens_tables_1_2", "properties").

    Raises:
        KeyError: for a section the file does not have (with the ones it has).
    """
    data = _all()
    if section not in data or section.startswith("_"):
        raise KeyError(f"published.json has no section {section!r} "
                       f"(has: {', '.join(k for k in data if not k.startswith('_'))})")
    return data[section]


def published_csp(dataset: str, k: int) -> list[dict[str, Any]]:
    """Published CSP rows (match rate %, RMSE) of a dataset at k samples per target."""
    return [r for r in published("csp")["rows"] if r["dataset"] == dataset and r["k"] == k]
