"""A trained GAN or WGAN-GP generator as a crysgen model: save, load, sample (noise -> tensors).

The model directory's ``kind`` is "gan" or "wgan"; it holds the generator only (the
discriminator/critic stays in the run's checkpoints). Sampling runs the generator in eval mode
(BatchNorm with its running statistics, as Keras's ``predict`` does) on z ~ N(0, I) drawn from a
seeded CPU generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from crysgen.models.adversarial import KINDS as ADVERSARIAL_KINDS
from crysgen.models.adversarial import AdversarialNetConfig, build_generator
from crysgen.models.saved import ModelContents, SavedModel
from crysgen.pipelines.crystens import decode_tensors, prepare_crystens
from crysgen.pipelines.protocol import NoCompositionControl, batch_size_for
from crysgen.pipelines.seeding import torch_generator
from crysgen.representations.crystens import CrysTensScaling
from crysgen.representations.crystens.layout import LAYERS, SIZE

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

    from crysgen.models.model_dir import ModelFiles
    from crysgen.pipelines.compositions import Compositions
    from crysgen.pipelines.protocol import SampleOptions
    from crysgen.representations.crystens import DecodeOptions, DecodeResult


@dataclass
class AdversarialModel(NoCompositionControl, SavedModel):
    """Generator network, its config, the CrysTens scaling and the training-data fingerprint.

    It has no composition control, and no sampler settings (it ignores ``steps`` and ``sampler``).
    """

    KINDS = ADVERSARIAL_KINDS
    DESCRIPTION = "GAN or WGAN-GP"
    NEEDS_SCALING = True

    generator: nn.Module
    net: AdversarialNetConfig
    scaling: CrysTensScaling
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The kind: "gan" or "wgan"."""
        return self.net.kind

    def contents(self) -> ModelContents:
        """The generator's config and weights, the scaling."""
        return ModelContents(self.net.kind, {"net": self.net.to_dict()}, self.generator.state_dict(),
                             self.data, self.scaling)

    @classmethod
    def from_files(cls, files: ModelFiles) -> AdversarialModel:
        """The model of a loaded "gan" or "wgan" directory (see :meth:`SavedModel.from_pretrained`)."""
        net = AdversarialNetConfig(**files.config["net"])
        generator = build_generator(net)
        generator.load_state_dict(files.state_dict)
        generator.eval()
        assert files.scaling is not None  # NEEDS_SCALING: load_model_dir checked it is there
        return cls(generator, net, files.scaling, files.data)

    def sample(self, n: int, *, seed: int | list[int] = 0, device: str = "cpu",
               batch_size: int = 256, **_: Any) -> np.ndarray:
        """``n`` CrysTens tensors, float32 (n, 4, 64, 64) in [0, 1].

        Args:
            n: number of tensors.
            seed: seeds the CPU generator that draws z, so samples do not depend on the device.
            device: "cpu" or "cuda".
            batch_size: tensors per forward pass.
            **_: diffusion sampler options (``steps``, ``sampler``), which a GAN does not use.
        """
        import torch

        gen = torch_generator(seed)
        net = self.generator.to(device).eval()
        out = []
        for start in range(0, n, batch_size):
            z = torch.randn((min(batch_size, n - start), self.net.latent_dim), generator=gen)
            with torch.no_grad():
                out.append(net(z.to(device)).squeeze(1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, LAYERS, SIZE, SIZE), np.float32)

    # ------------------------------------------------------------------ the Generator protocol
    def default_batch_size(self, device: str) -> int:
        """256 on CUDA, 16 on a CPU."""
        return batch_size_for(device, cpu=16)

    def prepare(self, options: SampleOptions, *, device: str = "cpu") -> dict[str, Any]:
        """Nothing of its own (see :class:`~crysgen.pipelines.protocol.Generator`).

        Raises:
            CrysgenError: for options of voxel VAE or atom diffusion models.
        """
        return prepare_crystens(options)

    def generate(self, n: int, *, seed: int | list[int] = 0, device: str = "cpu", batch_size: int = 256,
                 ids: list[str] | None = None, compositions: Compositions | None = None, workers: int = 1,
                 decode: DecodeOptions | None = None, on_batch: Callable[[int], None] | None = None,
                 on_tensors: Callable[[np.ndarray], None] | None = None, **_: Any) -> DecodeResult:
        """``n`` crystals: :meth:`sample`, then decoding (in ``workers`` processes).

        Arguments: :class:`~crysgen.pipelines.protocol.Generator`; ``compositions`` are refused,
        ``steps`` and ``sampler`` ignored.
        """
        self.refuse_compositions(compositions)
        tensors = self.sample(n, seed=seed, device=device, batch_size=batch_size)
        return decode_tensors(tensors, self.scaling, decode, ids=ids, workers=workers, on_batch=on_batch,
                              on_tensors=on_tensors)
