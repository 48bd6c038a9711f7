"""Loading any trained crysgen generator from its directory, and the bundled default model.

CrysTens generators expose ``scaling`` (their CrysTens scaling), ``data`` (the fingerprint of
their training data) and ``sample(n, *, steps, sampler, seed, device, batch_size)`` returning
float32 CrysTens tensors (n, 4, 64, 64) in [0, 1]; models that decode themselves (voxel VAE,
atom diffusion) have ``scaling = None`` and ``generate(n, ...)`` returning decoded crystals. The
model directory's ``kind`` picks the class (diffusion, cascade, gan, wgan, voxel_vae,
atom_diffusion; the GANs ignore ``steps`` and ``sampler``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from crysgen.errors import CrysgenError
from crysgen.models.model_dir import read_model_meta
from crysgen.representations.crystens import CrysTensScaling

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    from crysgen.pipelines.adversarial import AdversarialModel
    from crysgen.pipelines.atoms import AtomDiffusionModel
    from crysgen.pipelines.cascade import CascadeModel
    from crysgen.pipelines.diffusion import DiffusionModel
    from crysgen.pipelines.voxel import VoxelModel

    AnyGenerator: TypeAlias = (DiffusionModel | CascadeModel | AdversarialModel | VoxelModel
                               | AtomDiffusionModel)
    """What :func:`load_generator` returns: the class of the directory's kind."""

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
DEFAULT_MODEL = PRETRAINED / "atom_diffusion_mp20"
"""The model `crysgen sample` uses by default: crysgen's atom diffusion transformer trained on
mp_20 (partial train split). It beats the bundled CrysTens model on every metric of the suite
(benchmarks/results/eval_atom_diffusion_mp_20.json vs eval_diffusion_default_mp_20.json)."""
CRYSTENS_MODEL = PRETRAINED / "crystens_diffusion_mp20"
"""The bundled CrysTens diffusion model (single stage, mp_20 partial train split)."""


class Generator(Protocol):
    """What `crysgen sample` needs from a model."""

    scaling: CrysTensScaling
    data: dict[str, Any]

    def sample(self, n: int, **kwargs: Any) -> np.ndarray:
        """``n`` tensors, float32 (n, 4, 64, 64) in [0, 1]."""


def resolve_model_dir(path: str | Path | None) -> Path:
    """The model directory ``path`` names: itself, a training run's ``model/``, or the default."""
    if path is None:
        return DEFAULT_MODEL
    path = Path(path)
    if not (path / "config.json").exists() and (path / "model" / "config.json").is_file():
        return path / "model"
    return path


def load_generator(path: str | Path | None = None) -> AnyGenerator:
    """Load the generator in ``path`` (a model or training-run directory; None: the default).

    Raises:
        CrysgenError: for a missing or malformed directory or an unknown kind.
    """
    from crysgen.pipelines.adversarial import AdversarialModel
    from crysgen.pipelines.atoms import AtomDiffusionModel
    from crysgen.pipelines.cascade import CascadeModel
    from crysgen.pipelines.diffusion import DiffusionModel
    from crysgen.pipelines.voxel import VoxelModel

    loaders: dict[str, Callable[[Path], AnyGenerator]] = {
        "diffusion": DiffusionModel.from_pretrained, "cascade": CascadeModel.from_pretrained,
        "gan": AdversarialModel.from_pretrained, "wgan": AdversarialModel.from_pretrained,
        "voxel_vae": VoxelModel.from_pretrained, "atom_diffusion": AtomDiffusionModel.from_pretrained}
    path = resolve_model_dir(path)
    kind = read_model_meta(path)["kind"]
    if kind not in loaders:
        raise CrysgenError(f"{path} holds a {kind!r} model, which this crysgen version cannot "
                           f"sample (known kinds: {', '.join(sorted(loaders))})")
    return loaders[kind](path)
