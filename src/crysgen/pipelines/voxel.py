"""The voxel pipeline: sampling crystals from a conditional VAE and its segmenter.

The model directories (``voxel_segmenter``, ``voxel_vae`` with its ``segmenter/``, ``voxel.json``,
``latent_prior.npz``) are saved and loaded by :mod:`crysgen.models.voxel`; :class:`VoxelModel`
adds sampling to :class:`~crysgen.models.voxel.VoxelBundle`.

Sampling (:meth:`VoxelModel.generate`): latents → decoder → (density, coordinates) grids → UNet
→ watershed (:mod:`crysgen.representations.watershed`) → crystals. Latents come from
N(0, I) with a chosen condition decile (random by default), from N(μ_base, σ²) around an encoded
base crystal keeping its decile (Court et al.'s targeted sampling; σ² = 0.5), or on the straight
line between two encoded crystals (latent interpolation). With ``prior="posterior"`` random
latents come instead from the Gaussian matched to the training crystals' posteriors
(:class:`~crysgen.models.voxel.LatentPrior`, ``latent_prior.npz``, written with every trained
VAE): a VAE whose KL is hundreds of nats has an aggregate posterior far from N(0, I), so N(0, I)
draws decode off the data (issue 21).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.models.voxel import PRIOR_FILE, VoxelBundle, one_hot
from crysgen.models.voxel import LatentPrior as LatentPrior  # re-exported, as the next three
from crysgen.models.voxel import SegmenterModel as SegmenterModel
from crysgen.models.voxel import VoxelSpec as VoxelSpec
from crysgen.models.voxel import load_segmenter as load_segmenter
from crysgen.pipelines.protocol import NoCompositionControl, batch_size_for, refuse_atom_options
from crysgen.pipelines.seeding import torch_generator
from crysgen.representations.voxel import read_lattice
from crysgen.representations.watershed import WatershedOptions, decode

if TYPE_CHECKING:
    from collections.abc import Callable

    from crysgen.models.unet3d import UNet3D
    from crysgen.pipelines.compositions import Compositions
    from crysgen.pipelines.protocol import SampleOptions
    from crysgen.representations.crystens import DecodeResult

PRIORS = ("standard", "posterior")
"""Where random latents come from: N(0, I) (the authors') or the posterior-matched Gaussian."""


class VoxelModel(VoxelBundle, NoCompositionControl):
    """A conditional VAE with its segmenter: everything `crysgen sample` needs for voxels.

    ``VoxelModel.from_pretrained(path)`` loads a model directory (see
    :class:`~crysgen.models.voxel.VoxelBundle`, which training writes). It has no composition
    control; its own options are the condition class, the latent prior, a base crystal to sample
    around and two to interpolate between (:meth:`prepare`).
    """

    # ---------------------------------------------------------------- latents
    def latents(self, n: int, *, seed: int | list[int] = 0, condition: int | None = None,
                around: np.ndarray | None = None, sigma2: float = 0.5, prior: str = "standard",
                ) -> tuple[np.ndarray, np.ndarray]:
        """Latents (n, latent) and condition classes (n,).

        Args:
            n: how many.
            seed: seeds the CPU generator.
            condition: decile class 0..9 for every sample; None: random per sample.
            around: μ of a base crystal (latent,): z ~ N(μ, σ²) instead of the prior.
            sigma2: the variance around the base.
            prior: one of :data:`PRIORS`, for latents not drawn around a base.

        Raises:
            CrysgenError: an unknown prior, a posterior prior the model directory lacks, or a bad
                condition class.
        """
        if prior not in PRIORS:
            raise CrysgenError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
        if prior == "posterior" and around is None and self.prior is None:
            raise CrysgenError(f"this model directory has no {PRIOR_FILE} (trained before issue 21): "
                               "sample with the standard prior, or retrain / --init to fit one")
        gen = torch_generator(seed)
        latent = self.vae.config["latent"]
        eps = torch.randn((n, latent), generator=gen).numpy()
        k = self.spec.num_conditions
        if condition is None:
            classes = torch.randint(0, k, (n,), generator=gen).numpy()
        else:
            if not 0 <= condition < k:
                raise CrysgenError(f"condition must be a decile class 0..{k - 1}, got {condition}")
            classes = np.full(n, condition)
        if around is not None:
            z = np.asarray(around)[None] + np.sqrt(sigma2) * eps
        elif prior == "posterior":
            assert self.prior is not None  # refused above without one
            z = self.prior.sample(eps)
        else:
            z = eps
        return z.astype(np.float32), classes

    # ---------------------------------------------------------------- decoding
    def decode_grids(self, z: np.ndarray, classes: np.ndarray, *, device: str = "cpu",
                     batch_size: int = 64) -> np.ndarray:
        """float32 (n, 4, G, G, G) decoded grids (density, electrons/Å³; coordinates, Å)."""
        vae = self.vae.to(device).eval()
        scale = self.spec.scale()[:, None, None, None]
        out = []
        with torch.no_grad():
            for s in range(0, len(z), batch_size):
                c = one_hot(classes[s:s + batch_size], self.spec.num_conditions, device)
                zb = torch.from_numpy(z[s:s + batch_size]).to(device)
                out.append(vae.decode(zb, c).float().cpu().numpy() * scale)
        return np.concatenate(out) if out else np.zeros((0, 4, *(self.spec.voxel.grid,) * 3), np.float32)

    def to_crystals(self, grids: np.ndarray, *, device: str = "cpu", batch_size: int = 32,
                    options: WatershedOptions | None = None, ids: list[str] | None = None,
                    workers: int = 1) -> Any:
        """Segment grids (n, 4, G, G, G) and decode them (watershed in ``workers`` processes).

        ``options`` default: the model's own (:meth:`VoxelSpec.watershed`).
        """
        occupancy, species = segment_grids(self.segmenter, grids, device=device, batch_size=batch_size)
        lengths = read_lattice(grids[:, 1:], self.spec.voxel, method=self.spec.readback)
        return decode(occupancy, species, lengths, config=self.spec.voxel,
                      options=options or self.spec.watershed(), ids=ids,
                      workers=workers)

    def base(self, ref: str, condition: int | None = None, *, device: str = "cpu") -> tuple[np.ndarray, int]:
        """μ (latent,) and condition class of a base crystal.

        Args:
            ref: ``DATA.npz:ID`` (a crystal of a CrystalSet; its class comes from the condition
                property when the set has it) or a CIF file.
            condition: the class to use (needed when ``ref`` carries no property value).
            device: where to run the encoder.
        """
        cs = load_reference(ref)
        if condition is None:
            values = cs.properties.get(self.spec.condition, np.array([np.nan]))
            if not np.isfinite(values[0]):
                raise CrysgenError(f"{ref} has no {self.spec.condition!r} value: "
                                   "pass --condition 0..9")
            condition = int(self.spec.condition_class(cs.properties[self.spec.condition])[0])
        mu, _ = self.encode(cs, np.array([condition]), device=device)
        return mu[0], condition

    # ---------------------------------------------------------------- the Generator protocol
    def default_batch_size(self, device: str) -> int:
        """256 on CUDA, 16 on a CPU."""
        return batch_size_for(device, cpu=16)

    def prepare(self, options: SampleOptions, *, device: str = "cpu",
                compositions: Compositions | None = None) -> dict[str, Any]:
        """Condition, prior, σ², and the encoded base crystal(s) of ``--around``/``--interpolate``.

        Raises:
            CrysgenError: for options of atom diffusion models, both ``around`` and
                ``interpolate``, an unknown prior or a posterior prior the directory lacks, and
                base crystals that cannot be read or classed.
        """
        refuse_atom_options(options)
        if options.around is not None and options.interpolate is not None:
            raise CrysgenError("--around and --interpolate exclude each other")
        kwargs: dict[str, Any] = {"condition": options.condition, "sigma2": options.sigma2,
                                  "prior": options.prior, "total": options.n,
                                  "merge_tol": self.spec.watershed(options.merge_tol).merge_tol}
        if options.around is None and options.interpolate is None:
            self.latents(1, prior=options.prior)  # an unknown prior or a missing prior file: refused here
        if options.around is not None:
            kwargs["around"], kwargs["condition"] = self.base(options.around, options.condition,
                                                                device=device)
        if options.interpolate is not None:
            (mu_a, c_a), (mu_b, _) = (self.base(r, options.condition, device=device)
                                      for r in options.interpolate)
            kwargs["line"], kwargs["condition"] = (mu_a, mu_b), c_a
        return kwargs

    def generate(self, n: int, *, seed: int | list[int] = 0, device: str = "cpu", batch_size: int = 64,
                 ids: list[str] | None = None, condition: int | None = None,
                 around: np.ndarray | None = None, sigma2: float = 0.5, prior: str = "standard",
                 line: tuple[np.ndarray, np.ndarray] | None = None, offset: int = 0, total: int = 0,
                 workers: int = 1, compositions: Compositions | None = None,
                 on_batch: Callable[[int], None] | None = None, merge_tol: float | None = None,
                 **_: Any) -> DecodeResult:
        """``n`` crystals: latents → grids → segmentation → watershed (a DecodeResult).

        ``line`` = (μ_A, μ_B) puts sample ``offset + i`` of ``total`` at t = (offset + i)/(total − 1)
        on the segment between them (latent interpolation); otherwise see :meth:`latents`.
        ``merge_tol`` (Å) overrides the model's (:meth:`VoxelSpec.watershed`);
        ``compositions`` are refused; ``on_batch`` gets ``n`` at the end; CrysTens ``decode``
        options are ignored (see :class:`~crysgen.pipelines.protocol.Generator`).
        """
        self.refuse_compositions(compositions)
        if line is not None:
            t = (offset + np.arange(n)) / max(total - 1, 1)
            z = ((1 - t)[:, None] * line[0][None] + t[:, None] * line[1][None]).astype(np.float32)
            classes = np.full(n, 0 if condition is None else condition)
        else:
            z, classes = self.latents(n, seed=seed, condition=condition, around=around, sigma2=sigma2,
                                      prior=prior)
        grids = self.decode_grids(z, classes, device=device, batch_size=batch_size)
        res = as_decode_result(self.to_crystals(grids, device=device, ids=ids, workers=workers,
                                                options=self.spec.watershed(merge_tol)), n)
        if on_batch is not None:
            on_batch(n)
        return res


def load_reference(ref: str) -> CrystalSet:
    """One crystal from ``DATA.npz:ID`` or a CIF file, as a CrystalSet of length 1."""
    if ":" in ref and ref.split(":", 1)[0].endswith(".npz"):
        path, ident = ref.split(":", 1)
        cs = CrystalSet.load(path)
        hit = np.flatnonzero(cs.ids == ident)
        if not len(hit):
            raise CrysgenError(f"no crystal with id {ident!r} in {path}")
        return cs.subset(hit[:1])
    if not Path(ref).is_file():
        raise CrysgenError(f"base crystal {ref!r}: give DATA.npz:ID or a CIF file")
    from pymatgen.core import Structure

    try:
        structure = Structure.from_file(ref)
    except Exception as exc:
        raise CrysgenError(f"cannot read {ref}: {exc}") from exc
    return CrystalSet.from_structures([structure], ids=[Path(ref).stem])


def segment_grids(segmenter: UNet3D, grids: np.ndarray, *, device: str = "cpu", batch_size: int = 32,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy probabilities float32 (n, G, G, G) and species argmax uint8 (n, G, G, G)."""
    net = segmenter.to(device).eval()
    occ, spc = [], []
    with torch.no_grad():
        for s in range(0, len(grids), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(grids[s:s + batch_size])).to(device)
            logits, occ_logits = net(x)
            occ.append(torch.sigmoid(occ_logits.float()).cpu().numpy())
            spc.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
    g = grids.shape[-1]
    if not occ:
        return np.zeros((0, g, g, g), np.float32), np.zeros((0, g, g, g), np.uint8)
    return np.concatenate(occ), np.concatenate(spc)


def as_decode_result(res: Any, n: int) -> DecodeResult:
    """A watershed result as the CrysTens ``DecodeResult`` that `crysgen sample` writes out."""
    from crysgen.representations.crystens import DIAGNOSTICS, DecodeResult
    from crysgen.representations.crystens.decode import DecodeFailure

    diagnostics = {k: np.full(n, np.nan) for k in DIAGNOSTICS}
    diagnostics["num_atoms"][res.index] = res.crystals.num_sites
    return DecodeResult(res.crystals, res.index, diagnostics,
                        [DecodeFailure(i, r) for i, r in res.failures])
