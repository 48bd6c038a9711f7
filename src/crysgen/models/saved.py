"""``save_pretrained``/``from_pretrained`` for every saved-model bundle, in one place.

A bundle (diffusion, cascade, GAN, voxel VAE and its segmenter, atom diffusion, property
predictor) says what it holds (:meth:`SavedModel.contents`) and how to rebuild itself from a loaded
directory (:meth:`SavedModel.from_files`); this base class does the rest the same way for all:

- metadata: config.json records format, kind, crysgen version, config and data fingerprint;
- precision: weights are stored as fp16 unless ``half=False`` (or the class's ``HALF``) and
  always come back as float32 (:func:`~crysgen.models.model_dir.load_model_dir`);
- atomic writes: all files of a directory are written under temporary names and renamed into
  place together, config.json last; sub-models (a cascade's stages, a voxel VAE's segmenter)
  are saved first, each the same way;
- loading checks the kind and the files the class needs before building anything.

The file layout is :mod:`crysgen.models.model_dir`'s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from crysgen.errors import CrysgenError
from crysgen.models.model_dir import ModelFiles, Writer, load_model_dir, save_model_dir

if TYPE_CHECKING:
    import torch

    from crysgen.representations.crystens import CrysTensScaling

M = TypeVar("M", bound="SavedModel")


@dataclass
class ModelContents:
    """What a bundle writes into its model directory.

    Attributes:
        kind: the directory's kind (picks the loader).
        config: JSON-able settings that rebuild the networks.
        state_dict: parameters; None for a bundle with no weights of its own (a cascade).
        data: fingerprint of the training data.
        scaling: the CrysTens scaling (scaling.json), None for non-CrysTens models.
        files: further files, name -> writer (e.g. ``atoms.json``).
        parts: sub-models saved into sub-directories of the same name.
    """

    kind: str
    config: dict[str, Any]
    state_dict: Mapping[str, torch.Tensor] | None
    data: dict[str, Any]
    scaling: CrysTensScaling | None = None
    files: dict[str, Writer] = field(default_factory=dict)
    parts: dict[str, SavedModel] = field(default_factory=dict)


class SavedModel(ABC):
    """Base of the saved-model bundles: ``save_pretrained`` and ``from_pretrained``.

    Class attributes:
        KINDS: the directory kinds this class loads.
        DESCRIPTION: what it is, for error messages ("diffusion model").
        NEEDS_SCALING: its directory must hold scaling.json.
        NEEDS_WEIGHTS: its directory must hold weights.safetensors.
        REQUIRED_FILES: further files its directory must hold.
        HALF: whether ``save_pretrained`` stores fp16 weights by default.
    """

    KINDS: ClassVar[tuple[str, ...]]
    DESCRIPTION: ClassVar[str]
    NEEDS_SCALING: ClassVar[bool] = False
    NEEDS_WEIGHTS: ClassVar[bool] = True
    REQUIRED_FILES: ClassVar[tuple[str, ...]] = ()
    HALF: ClassVar[bool] = True

    @abstractmethod
    def contents(self) -> ModelContents:
        """What :meth:`save_pretrained` writes."""

    @classmethod
    @abstractmethod
    def from_files(cls: type[M], files: ModelFiles) -> M:
        """The bundle rebuilt from a loaded directory of one of its ``KINDS`` (eval mode).

        ``files.state_dict`` is float32; sub-models load from sub-directories of ``files.path``.
        """

    def save_pretrained(self, path: str | Path, *, half: bool | None = None, parts: bool = True) -> Path:
        """Write the model directory (created; files already there are replaced).

        Args:
            path: the directory.
            half: store floating-point weights as fp16 (None: the class's ``HALF``); sub-models
                follow the same choice.
            parts: also save the sub-models; False writes the directory's own files only (for
                sub-directories put there otherwise, e.g. copied as they are).

        Returns:
            ``path`` as a Path.
        """
        half = self.HALF if half is None else half
        c = self.contents()
        path = Path(path)
        for name, part in (c.parts.items() if parts else ()):
            part.save_pretrained(path / name, half=half)
        return save_model_dir(path, kind=c.kind, config=c.config, state_dict=c.state_dict, scaling=c.scaling,
                              data=c.data, half=half, files=c.files)

    @classmethod
    def from_pretrained(cls: type[M], path: str | Path) -> M:
        """Load a model directory written by :meth:`save_pretrained` (weights in float32).

        Raises:
            CrysgenError: if the directory is missing, malformed, incomplete or of another kind.
        """
        files = load_model_dir(path, needs_scaling=cls.NEEDS_SCALING, needs_weights=cls.NEEDS_WEIGHTS)
        if files.kind not in cls.KINDS:
            article = "an" if cls.DESCRIPTION[0].lower() in "aeiou" else "a"
            raise CrysgenError(f"{path} holds a {files.kind!r} model, not {article} {cls.DESCRIPTION}")
        missing = [n for n in cls.REQUIRED_FILES if not (files.path / n).is_file()]
        if missing:
            raise CrysgenError(f"{path} is not a complete {cls.DESCRIPTION} (missing {', '.join(missing)})")
        return cls.from_files(files)
