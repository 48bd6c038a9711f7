"""A trained GAN or WGAN-GP generator as a crysgen model that samples (noise -> tensors).

The model directory (kind "gan" or "wgan", the generator only) is saved and loaded by
:class:`crysgen.models.adversarial.AdversarialBundle`; :class:`AdversarialModel` adds sampling.
Sampling runs the generator in eval mode (BatchNorm with its running statistics, as Keras's
``predict`` does) on z ~ N(0, I) drawn from a seeded CPU generator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from crysgen.models.adversarial import AdversarialBundle
from crysgen.pipelines.crystens import decode_tensors, prepare_crystens
from crysgen.pipelines.protocol import NoCompositionControl, batch_size_for
from crysgen.pipelines.seeding import torch_generator
from crysgen.representations.crystens.layout import LAYERS, SIZE

if TYPE_CHECKING:
    from collections.abc import Callable

    from crysgen.pipelines.compositions import Compositions
    from crysgen.pipelines.protocol import SampleOptions
    from crysgen.representations.crystens import DecodeOptions, DecodeResult


class AdversarialModel(AdversarialBundle, NoCompositionControl):
    """A trained GAN or WGAN-GP that samples (noise -> tensors -> crystals).

    It has no composition control, and no sampler settings (it ignores ``steps`` and ``sampler``).
    ``AdversarialModel.from_pretrained(path)`` loads a model directory (see
    :class:`~crysgen.models.adversarial.AdversarialBundle`, which training writes).
    """

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

    def prepare(self, options: SampleOptions, *, device: str = "cpu",
                compositions: Compositions | None = None) -> dict[str, Any]:
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
