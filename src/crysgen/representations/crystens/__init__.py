"""CrysTens: the 64x64x4 image-like crystal tensor of Alverson et al. (2024), both ways."""

from __future__ import annotations

from crysgen.representations.crystens.decode import (
    DECODE_MODES,
    DIAGNOSTICS,
    DecodeFailure,
    DecodeOptions,
    DecodeResult,
    decode,
)
from crysgen.representations.crystens.encode import encode
from crysgen.representations.crystens.scaling import CrysTensScaling

__all__ = [
    "DECODE_MODES",
    "DIAGNOSTICS",
    "CrysTensScaling",
    "DecodeFailure",
    "DecodeOptions",
    "DecodeResult",
    "decode",
    "encode",
]
