"""The two-stage cascade as one model: base (low resolution) -> super-resolution (64×64).

A cascade directory holds the two stage model directories and a small config::

    CASCADE_DIR/config.json    {"format", "kind": "cascade", "config": {"aug_sample"}, "data"}
    CASCADE_DIR/scaling.json   the CrysTens scaling (the same for both stages)
    CASCADE_DIR/base/          model directory of the base stage
    CASCADE_DIR/sr/            model directory of the super-resolution stage

`crysgen model cascade BASE SR --out DIR` assembles it from two trained runs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crysgen.errors import CrysgenError
from crysgen.models.saved import ModelContents, SavedModel
from crysgen.objectives.cascade import StageConfig, augment_condition
from crysgen.objectives.diffusion import to_unit_range
from crysgen.pipelines.crystens import decode_tensors, prepare_crystens
from crysgen.pipelines.diffusion import DiffusionModel, denoise, make_scheduler
from crysgen.pipelines.protocol import NoCompositionControl, Sampler, batch_size_for
from crysgen.pipelines.seeding import torch_generator
from crysgen.representations.crystens import CrysTensScaling

if TYPE_CHECKING:
    from collections.abc import Callable

    from crysgen.models.model_dir import ModelFiles
    from crysgen.pipelines.compositions import Compositions
    from crysgen.pipelines.protocol import SampleOptions
    from crysgen.representations.crystens import DecodeOptions, DecodeResult

KIND = "cascade"


@dataclass
class CascadeModel(NoCompositionControl, SavedModel):
    """Base and super-resolution stages trained on the same data (no composition control).

    Attributes:
        base: the low-resolution stage.
        sr: the super-resolution stage.
        aug_sample: noise level of the SR conditioning when sampling, as a fraction of T.
    """

    KINDS = (KIND,)
    DESCRIPTION = "cascade"
    NEEDS_WEIGHTS = False

    base: DiffusionModel
    sr: DiffusionModel
    aug_sample: float

    def __post_init__(self) -> None:
        if self.base.stage.role != "base" or self.sr.stage.role != "sr":
            raise CrysgenError(f"a cascade needs a 'base' and an 'sr' stage, got "
                               f"{self.base.stage.role!r} and {self.sr.stage.role!r}")
        if self.base.unet_config.sample_size != self.sr.stage.low_res:
            raise CrysgenError(f"the base stage makes {self.base.unet_config.sample_size}² tensors but "
                               f"the SR stage was trained on {self.sr.stage.low_res}² conditioning")
        if self.base.scaling.to_dict() != self.sr.scaling.to_dict():
            raise CrysgenError("the two stages were trained with different CrysTens scalings")
        StageConfig(aug_sample=self.aug_sample)  # range check

    @property
    def scaling(self) -> CrysTensScaling:
        """The CrysTens scaling of both stages."""
        return self.sr.scaling

    @property
    def data(self) -> dict[str, Any]:
        """Fingerprint of the training data."""
        return self.sr.data

    @property
    def kind(self) -> str:
        """The kind: "cascade"."""
        return KIND

    def contents(self) -> ModelContents:
        """The two stages (``base/``, ``sr/``), their scaling and ``aug_sample``; no weights of its own."""
        return ModelContents(KIND, {"aug_sample": self.aug_sample}, None, self.data, self.scaling,
                             parts={"base": self.base, "sr": self.sr})

    @classmethod
    def from_files(cls, files: ModelFiles) -> CascadeModel:
        """The cascade of a loaded ``cascade`` directory, its stages read from ``base/`` and ``sr/``."""
        return cls(DiffusionModel.from_pretrained(files.path / "base"),
                   DiffusionModel.from_pretrained(files.path / "sr"), float(files.config["aug_sample"]))

    def sample(
        self,
        n: int,
        *,
        steps: int = 50,
        sampler: Sampler = "ddim",
        seed: int | list[int] = 0,
        device: str = "cpu",
        batch_size: int = 256,
    ) -> np.ndarray:
        """``n`` CrysTens tensors: base sample -> noise-augmented, up-sampled -> SR sample.

        Both stages use ``steps`` sampler steps; arguments as in
        :func:`crysgen.pipelines.diffusion.sample_tensors`.

        Returns:
            float32 (n, 4, 64, 64) in [0, 1].
        """
        import torch

        gen = torch_generator(seed)
        size = self.sr.unet_config.sample_size
        t_aug = self.sr.stage.aug_timestep(self.sr.diffusion.timesteps, self.aug_sample)
        out = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            low = denoise(self.base, b, steps=steps, sampler=sampler, generator=gen, device=device)
            labels = torch.full((b,), t_aug, dtype=torch.long)
            cond = augment_condition(low.float().cpu(), self.sr.diffusion.scheduler(), labels, size,
                                     generator=gen).to(device)
            x = denoise(self.sr, b, steps=steps, sampler=sampler, generator=gen, device=device,
                        cond=cond, class_labels=labels.to(device))
            out.append(to_unit_range(x).float().cpu().numpy())
        channels = self.sr.unet_config.channels
        return np.concatenate(out, axis=0) if out else np.zeros((0, channels, size, size), np.float32)

    # ------------------------------------------------------------------ the Generator protocol
    def default_batch_size(self, device: str) -> int:
        """256 on CUDA, 16 on a CPU."""
        return batch_size_for(device, cpu=16)

    def prepare(self, options: SampleOptions, *, device: str = "cpu",
                compositions: Compositions | None = None) -> dict[str, Any]:
        """Steps and sampler (see :class:`~crysgen.pipelines.protocol.Generator`).

        Raises:
            CrysgenError: for a sampler a stage's objective has none of, and options of voxel
                VAE or atom diffusion models.
        """
        kwargs = prepare_crystens(options)
        for stage in (self.base, self.sr):
            make_scheduler(stage.diffusion, options.sampler)  # an EDM stage has no ddpm: refused here
        return kwargs

    def generate(self, n: int, *, steps: int = 50, sampler: Sampler = "ddim", seed: int | list[int] = 0,
                 device: str = "cpu", batch_size: int = 256, ids: list[str] | None = None,
                 compositions: Compositions | None = None, workers: int = 1,
                 decode: DecodeOptions | None = None, on_batch: Callable[[int], None] | None = None,
                 on_tensors: Callable[[np.ndarray], None] | None = None, **_: Any) -> DecodeResult:
        """``n`` crystals: :meth:`sample`, then decoding (in ``workers`` processes).

        Arguments: :class:`~crysgen.pipelines.protocol.Generator`; ``compositions`` are refused.
        """
        self.refuse_compositions(compositions)
        tensors = self.sample(n, steps=steps, sampler=sampler, seed=seed, device=device,
                              batch_size=batch_size)
        return decode_tensors(tensors, self.scaling, decode, ids=ids, workers=workers, on_batch=on_batch,
                              on_tensors=on_tensors)


def assemble_cascade(base: str | Path, sr: str | Path, out: str | Path, *,
                     aug_sample: float | None = None) -> Path:
    """Build a cascade directory from two trained stage model directories.

    Args:
        base: model directory of the base stage (``RUN_DIR/model``).
        sr: model directory of the SR stage.
        out: the cascade directory to write.
        aug_sample: SR conditioning noise level for sampling (default: the SR stage's setting).

    Raises:
        CrysgenError: if the stages do not fit together or were trained on different data.
    """
    b, s = DiffusionModel.from_pretrained(base), DiffusionModel.from_pretrained(sr)
    if b.data.get("sha256") != s.data.get("sha256"):
        raise CrysgenError(f"the stages were trained on different data ({b.data.get('name')} vs "
                           f"{s.data.get('name')})")
    cascade = CascadeModel(b, s, s.stage.aug_sample if aug_sample is None else aug_sample)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CrysgenError(f"{out} exists and is not empty")
    for stage, src in (("base", base), ("sr", sr)):  # copy the files as they are (no re-rounding)
        shutil.copytree(src, out / stage)
    return cascade.save_pretrained(out, parts=False)
