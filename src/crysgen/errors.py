"""The one error type that users can cause (bad file, bad option, missing model)."""

from __future__ import annotations

from collections.abc import Mapping


class CrysgenError(Exception):
    """A problem the user can fix; the message says what to do.

    Per-item problems (one broken CIF among thousands, one undecodable tensor) are never
    raised: they are collected with a reason next to the item.
    """


def require_non_negative(options: Mapping[str, float | None]) -> None:
    """Raise for the first option that is set and negative or NaN (0 means off).

    Args:
        options: option name as the user wrote it (``--churn``, ``edm.anneal_rho``) -> value;
            None is unset and passes.

    Raises:
        CrysgenError: naming the option and its value.
    """
    for name, value in options.items():
        if value is not None and not value >= 0:
            raise CrysgenError(f"{name} must be 0 (off) or positive, got {value}")
