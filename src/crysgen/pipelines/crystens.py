"""What the CrysTens generators (diffusion, cascade, GAN/WGAN-GP) share: tensors, then decoding.

Each samples float32 CrysTens tensors (n, 4, size, size) in [0, 1] with ``sample`` (the
:class:`CrysTensGenerator` protocol) and, as a :class:`~crysgen.pipelines.protocol.Generator`,
decodes them in its ``generate`` with :func:`decode_tensors`: in worker processes, with a given
composition decoded as given.
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from crysgen.pipelines.protocol import refuse_atom_options, refuse_voxel_options
from crysgen.representations.crystens import DIAGNOSTICS, DecodeOptions, DecodeResult, decode

if TYPE_CHECKING:
    from collections.abc import Callable

    from crysgen.pipelines.protocol import SampleOptions
    from crysgen.representations.crystens import CrysTensScaling


class CrysTensGenerator(Protocol):
    """A model that samples CrysTens tensors (the benchmarks time and decode them themselves)."""

    @property
    def scaling(self) -> CrysTensScaling:
        """The CrysTens scaling its tensors are in (its layout gives their shape)."""

    @property
    def data(self) -> dict[str, Any]:
        """Fingerprint of the training data."""

    def sample(self, n: int, **kwargs: Any) -> np.ndarray:
        """``n`` tensors, float32 (n, 4, size, size) in [0, 1]."""


def prepare_crystens(options: SampleOptions) -> dict[str, Any]:
    """A CrysTens generator's ``prepare``: refuse voxel and atom options; steps and sampler.

    Raises:
        CrysgenError: for options of voxel VAE or atom diffusion models.
    """
    refuse_voxel_options(options)
    refuse_atom_options(options)
    return {"steps": options.steps, "sampler": options.sampler}


def decode_tensors(tensors: np.ndarray, scaling: CrysTensScaling, options: DecodeOptions | None, *,
                   ids: list[str] | None = None, workers: int = 1, atomic_numbers: np.ndarray | None = None,
                   on_batch: Callable[[int], None] | None = None,
                   on_tensors: Callable[[np.ndarray], None] | None = None) -> DecodeResult:
    """The end of a CrysTens generator's ``generate``: hand the tensors out, decode, report.

    ``on_tensors`` gets the tensors before they are decoded, ``on_batch`` their number after;
    the rest as :func:`decode_in_parts`.
    """
    if on_tensors is not None:
        on_tensors(tensors)
    res = decode_in_parts(tensors, scaling, options, ids=ids, workers=workers, atomic_numbers=atomic_numbers)
    if on_batch is not None:
        on_batch(len(tensors))
    return res


def decode_in_parts(tensors: np.ndarray, scaling: Any, options: DecodeOptions | None, *,
                    ids: list[str] | None = None, workers: int = 1,
                    atomic_numbers: np.ndarray | None = None) -> DecodeResult:
    """Decode (N, 4, size, size) CrysTens tensors (the scaling's layout) in ``workers`` processes.

    Contiguous parts go to the processes and come back in input order: the same result as
    :func:`~crysgen.representations.crystens.decode` in one process. A part whose process dies
    gets a ``worker_died`` failure for each of its tensors. ``atomic_numbers`` (N, S): the given
    composition of every tensor (decoded as given), or None. ``ids``: default "0", "1", ...
    """
    from crysgen.data.parallel import robust_map

    n = len(tensors)
    if workers <= 1 or n < 2:
        return decode(tensors, scaling, options, ids=ids, atomic_numbers=atomic_numbers)
    ids = [str(i) for i in range(n)] if ids is None else ids
    bounds = np.linspace(0, n, min(n, 4 * workers) + 1).astype(int)
    parts = [(tensors[a:b], scaling, options, ids[a:b], a,
              None if atomic_numbers is None else atomic_numbers[a:b]) for a, b in pairwise(bounds)]
    done = robust_map(_decode_part, parts, workers=workers, died=_decode_part_died)
    return _merge_results(done)


def _decode_part(part: tuple[Any, ...]) -> tuple[int, DecodeResult]:
    tensors, scaling, options, ids, start, given = part
    return start, decode(tensors, scaling, options, ids=ids, atomic_numbers=given)


def _decode_part_died(part: tuple[Any, ...], reason: str) -> tuple[int, DecodeResult]:
    from crysgen.crystal_set import CrystalSet
    from crysgen.representations.crystens.decode import DecodeFailure

    tensors, scaling, _, _, start, _ = part
    k, s = len(tensors), scaling.layout.sites
    empty = CrystalSet(np.zeros((0, s)), np.zeros((0, s, 3)), np.zeros((0, 6)), np.zeros(0), np.zeros(0),
                       np.zeros(0, str))
    return start, DecodeResult(empty, np.zeros(0, np.int64), {key: np.full(k, np.nan) for key in DIAGNOSTICS},
                               [DecodeFailure(i, reason) for i in range(k)])


def _merge_results(done: list[tuple[int, DecodeResult]]) -> DecodeResult:
    from crysgen.crystal_set import CrystalSet
    from crysgen.representations.crystens.decode import DecodeFailure

    return DecodeResult(
        CrystalSet.concatenate([r.crystals for _, r in done]),
        np.concatenate([r.index + start for start, r in done]).astype(np.int64),
        {k: np.concatenate([r.diagnostics[k] for _, r in done]) for k in DIAGNOSTICS},
        [DecodeFailure(f.index + start, f.reason) for start, r in done for f in r.failures])
