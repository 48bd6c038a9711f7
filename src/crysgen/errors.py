"""The one error type that users can cause (bad file, bad option, missing model)."""

from __future__ import annotations


class CrysgenError(Exception):
    """A problem the user can fix; the message says what to do.

    Per-item problems (one broken CIF among thousands, one undecodable tensor) are never
    raised: they are collected with a reason next to the item.
    """
