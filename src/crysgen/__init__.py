"""crysgen: generative models of inorganic crystal structures."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

# spglib prints C-level debug lines ("ssm_get_exact_positions failed") for every noisy cell;
# they are not errors. Set SPGLIB_WARNING=ON to see them.
os.environ.setdefault("SPGLIB_WARNING", "OFF")

try:
    __version__ = version("crysgen")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError

__all__ = ["CrysgenError", "CrystalSet", "__version__"]
