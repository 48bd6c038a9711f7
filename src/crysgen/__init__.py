"""crysgen: generative models of inorganic crystal structures."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crysgen")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError

__all__ = ["CrysgenError", "CrystalSet", "__version__"]
