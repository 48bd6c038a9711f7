"""Loading any trained crysgen generator from its directory, and the bundled models.

The model directory's ``kind`` picks the class (diffusion, cascade, gan, wgan, voxel_vae,
atom_diffusion); callers use what :func:`load_generator` returns through the
:class:`~crysgen.pipelines.protocol.Generator` protocol, which every class satisfies.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from crysgen.errors import CrysgenError
from crysgen.models.model_dir import read_model_meta
from crysgen.pipelines.protocol import Generator

if TYPE_CHECKING:
    from collections.abc import Callable

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
DEFAULT_MODEL = PRETRAINED / "atom_diffusion_mp20"
"""The model `crysgen sample` uses by default: crysgen's atom diffusion transformer trained on
mp_20 (partial train split). The README's "The default model" says why it is the default: its
scores beside the bundled CrysTens model's, from the result files that scored each."""
CRYSTENS_MODEL = PRETRAINED / "crystens_diffusion_mp20"
"""The bundled CrysTens diffusion model (single stage, mp_20 partial train split)."""


def resolve_model_dir(path: str | Path | None) -> Path:
    """The model directory ``path`` names: itself, a training run's ``model/``, or the default."""
    if path is None:
        return DEFAULT_MODEL
    path = Path(path)
    if not (path / "config.json").exists() and (path / "model" / "config.json").is_file():
        return path / "model"
    return path


def load_generator(path: str | Path | None = None) -> Generator:
    """Load the generator in ``path`` (a model or training-run directory; None: the default).

    Raises:
        CrysgenError: for a missing or malformed directory or an unknown kind.
    """
    from crysgen.pipelines.adversarial import AdversarialModel
    from crysgen.pipelines.atoms import AtomDiffusionModel
    from crysgen.pipelines.cascade import CascadeModel
    from crysgen.pipelines.diffusion import DiffusionModel
    from crysgen.pipelines.voxel import VoxelModel

    loaders: dict[str, Callable[[Path], Generator]] = {
        kind: cls.from_pretrained
        for cls in (AtomDiffusionModel, DiffusionModel, CascadeModel, AdversarialModel, VoxelModel)
        for kind in cls.KINDS}
    path = resolve_model_dir(path)
    kind = read_model_meta(path)["kind"]
    if kind not in loaders:
        raise CrysgenError(f"{path} holds a {kind!r} model, which this crysgen version cannot "
                           f"sample (known kinds: {', '.join(sorted(loaders))})")
    return loaders[kind](path)
