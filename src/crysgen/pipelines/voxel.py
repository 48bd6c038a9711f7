"""The voxel pipeline's models: segmenter and conditional VAE, saved, loaded and sampled.

A ``voxel_segmenter`` model directory holds the UNet; a ``voxel_vae`` directory holds the VAE
and, in ``segmenter/``, a copy of the segmenter it was trained against, so one directory is
enough to sample. ``voxel.json`` (:class:`VoxelSpec`) holds the grid constants, the condition
property and its decile edges, and the class weights.

Sampling (:meth:`VoxelModel.generate`): latents → decoder → (density, coordinates) grids → UNet
→ watershed (:mod:`crysgen.representations.watershed`) → crystals. Latents come from
N(0, I) with a chosen condition decile (random by default), from N(μ_base, σ²) around an encoded
base crystal keeping its decile (Court et al.'s targeted sampling; σ² = 0.5), or on the straight
line between two encoded crystals (latent interpolation). With ``prior="posterior"`` random
latents come instead from the Gaussian matched to the training crystals' posteriors
(:class:`LatentPrior`, ``latent_prior.npz``, written with every trained VAE): a VAE whose KL is
hundreds of nats has an aggregate posterior far from N(0, I), so N(0, I) draws decode off the
data (issue 21).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.errors import CrysgenError
from crysgen.models.saved import ModelContents, SavedModel
from crysgen.models.unet3d import UNet3D
from crysgen.models.voxel_vae import VoxelVAE
from crysgen.pipelines.protocol import NoCompositionControl, batch_size_for, refuse_atom_options
from crysgen.pipelines.seeding import torch_generator
from crysgen.representations.voxel import VoxelConfig, network_input, read_lattice
from crysgen.representations.watershed import WatershedOptions, decode

if TYPE_CHECKING:
    from collections.abc import Callable

    from crysgen.models.model_dir import ModelFiles, Writer
    from crysgen.pipelines.compositions import Compositions
    from crysgen.pipelines.protocol import SampleOptions
    from crysgen.representations.crystens import DecodeResult

SPEC_FILE = "voxel.json"
PRIOR_FILE = "latent_prior.npz"
SEGMENTER_DIR = "segmenter"
PRIORS = ("standard", "posterior")
"""Where random latents come from: N(0, I) (the authors') or the posterior-matched Gaussian."""


@dataclass
class LatentPrior:
    """A Gaussian matched to the aggregate posterior of training crystals.

    Attributes:
        mean: (latent,) the mean of the posterior means μ.
        chol: (latent, latent) lower Cholesky factor of cov(μ) + diag(mean σ²), i.e. the
            covariance of z = μ + σ·ε over the training crystals.
        n: crystals it was fitted on.
    """

    mean: np.ndarray
    chol: np.ndarray
    n: int

    @classmethod
    def fit(cls, mu: np.ndarray, logvar: np.ndarray) -> LatentPrior:
        """From posterior means and log-variances (N, latent), N ≥ 2."""
        mu, logvar = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
        if len(mu) < 2:
            raise CrysgenError("a posterior-matched prior needs at least 2 encoded crystals")
        cov = np.cov(mu, rowvar=False) + np.diag(np.exp(logvar).mean(0))
        chol = np.linalg.cholesky(cov + 1e-6 * np.eye(len(cov)))
        return cls(mu.mean(0), chol, len(mu))

    def sample(self, eps: np.ndarray) -> np.ndarray:
        """Latents (n, latent) from standard-normal draws ``eps`` (n, latent)."""
        return self.mean[None] + np.asarray(eps, np.float64) @ self.chol.T

    def save(self, path: str | Path) -> Path:
        """Write as ``.npz`` (atomically: written beside, then renamed)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, mean=self.mean, chol=self.chol, n=self.n)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatentPrior:
        """Read :meth:`save`'s file."""
        with np.load(path) as f:
            return cls(f["mean"], f["chol"], int(f["n"]))


@dataclass
class VoxelSpec:
    """What a voxel model needs besides its weights.

    Attributes:
        voxel: grid constants.
        condition: name of the condition property ("" for a segmenter).
        edges: the property's decile edges (9 values for 10 classes), from the training data.
        class_weights: (95,) inverse-frequency species weights (background 0).
        channel_weights: (4,) weights of the VAE's MSE channels fitted on the training set
            (``channel_weights: variance`` in the run config); empty: the plain mean.
        channel_scale: (4,) divisors of the grid channels on their way into the VAE (the VAE
            sees and outputs grid / scale; ``channel_scale: rms`` in the run config); empty: 1.
        readback: how decoded coordinate channels become lengths (:func:`read_lattice`'s
            method): "level" for a VAE trained on the authors' turned channels (its decoder may
            blend orientations, which shrinks slopes but keeps levels), "slope" for one trained
            with ``coordinates: grid`` (no orientation to blend; the slope is insensitive to a
            channel's offset, which the decoder's final BatchNorm bias is slow to learn).
    """

    voxel: VoxelConfig = field(default_factory=VoxelConfig)
    condition: str = ""
    edges: list[float] = field(default_factory=list)
    class_weights: list[float] = field(default_factory=list)
    channel_weights: list[float] = field(default_factory=list)
    channel_scale: list[float] = field(default_factory=list)
    readback: str = "level"

    @property
    def num_conditions(self) -> int:
        """Condition classes (len(edges) + 1)."""
        return len(self.edges) + 1

    def scale(self, channels: int = 4) -> np.ndarray:
        """float32 (channels,): what the VAE's grids are divided by (ones without channel_scale)."""
        return np.asarray(self.channel_scale or [1.0] * channels, np.float32)

    def condition_class(self, values: np.ndarray) -> np.ndarray:
        """Int (N,): the decile class of each property value."""
        values = np.asarray(values, float)
        if not np.all(np.isfinite(values)):
            raise CrysgenError(f"{int((~np.isfinite(values)).sum())} crystal(s) lack the condition "
                               f"property {self.condition!r}")
        return np.searchsorted(np.asarray(self.edges), values, side="right")

    def save(self, path: str | Path) -> Path:
        """Write as JSON."""
        d = {"voxel": self.voxel.to_dict(), "condition": self.condition, "edges": self.edges,
             "class_weights": self.class_weights, "channel_weights": self.channel_weights,
             "channel_scale": self.channel_scale, "readback": self.readback}
        return write_text_atomic(Path(path), json.dumps(d, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> VoxelSpec:
        """Read :meth:`save`'s JSON."""
        d = json.loads(Path(path).read_text())
        return cls(VoxelConfig.from_dict(d["voxel"]), d["condition"], list(d["edges"]),
                   list(d["class_weights"]), list(d.get("channel_weights", [])),
                   list(d.get("channel_scale", [])), d.get("readback", "level"))


def one_hot(classes: np.ndarray | torch.Tensor, n: int, device: Any = "cpu") -> torch.Tensor:
    """Float (N, n) one-hot rows."""
    c = (classes.to(device=device, dtype=torch.long) if isinstance(classes, torch.Tensor)
         else torch.as_tensor(np.asarray(classes), dtype=torch.long, device=device))
    return torch.nn.functional.one_hot(c, n).float()


@dataclass
class SegmenterModel(SavedModel):
    """A trained segmenter: the 3-D UNet (species per voxel) and its spec (``voxel.json``)."""

    KINDS = ("voxel_segmenter",)
    DESCRIPTION = "voxel segmenter"
    REQUIRED_FILES = (SPEC_FILE,)

    net: UNet3D
    spec: VoxelSpec
    data: dict[str, Any] = field(default_factory=dict)

    def contents(self) -> ModelContents:
        """The UNet's config and weights, ``voxel.json``."""
        return ModelContents("voxel_segmenter", {"net": self.net.config}, self.net.state_dict(), self.data,
                             files={SPEC_FILE: self.spec.save})

    @classmethod
    def from_files(cls, files: ModelFiles) -> SegmenterModel:
        """The segmenter of a loaded ``voxel_segmenter`` directory (UNet in eval mode)."""
        net = UNet3D(**files.config["net"])
        net.load_state_dict(files.state_dict)
        return cls(net.eval(), VoxelSpec.load(files.path / SPEC_FILE), files.data)


def load_segmenter(path: str | Path) -> tuple[UNet3D, VoxelSpec]:
    """A ``voxel_segmenter`` model directory's UNet (eval mode) and spec."""
    m = SegmenterModel.from_pretrained(path)
    return m.net, m.spec


@dataclass
class VoxelModel(NoCompositionControl, SavedModel):
    """A conditional VAE with its segmenter: everything `crysgen sample` needs for voxels.

    It has no composition control; its own options are the condition class, the latent prior,
    a base crystal to sample around and two to interpolate between (:meth:`prepare`).
    """

    KINDS = ("voxel_vae",)
    DESCRIPTION = "voxel VAE"
    REQUIRED_FILES = (SPEC_FILE,)

    vae: VoxelVAE
    segmenter: UNet3D
    spec: VoxelSpec
    data: dict[str, Any] = field(default_factory=dict)
    prior: LatentPrior | None = None

    @property
    def kind(self) -> str:
        """The kind: "voxel_vae"."""
        return "voxel_vae"

    def contents(self) -> ModelContents:
        """The VAE, ``voxel.json``, ``segmenter/`` and (when fitted) ``latent_prior.npz``."""
        files: dict[str, Writer] = {SPEC_FILE: self.spec.save}
        if self.prior is not None:
            files[PRIOR_FILE] = self.prior.save
        segmenter = SegmenterModel(self.segmenter, self.spec, self.data)
        return ModelContents("voxel_vae", {"net": self.vae.config}, self.vae.state_dict(), self.data,
                             files=files, parts={SEGMENTER_DIR: segmenter})

    def fit_prior(self, crystals: CrystalSet, classes: np.ndarray, *, device: str = "cpu") -> LatentPrior:
        """Fit (and keep) the posterior-matched prior on crystals with their condition classes."""
        self.prior = LatentPrior.fit(*self.encode(crystals, classes, device=device))
        return self.prior

    @classmethod
    def from_files(cls, files: ModelFiles) -> VoxelModel:
        """The model of a loaded ``voxel_vae`` directory (see :meth:`SavedModel.from_pretrained`)."""
        vae = VoxelVAE(**files.config["net"])
        vae.load_state_dict(files.state_dict)
        segmenter = SegmenterModel.from_pretrained(files.path / SEGMENTER_DIR).net
        prior_file = files.path / PRIOR_FILE
        prior = LatentPrior.load(prior_file) if prior_file.is_file() else None
        return cls(vae.eval(), segmenter, VoxelSpec.load(files.path / SPEC_FILE), files.data, prior=prior)

    # ---------------------------------------------------------------- latents
    def encode(self, crystals: CrystalSet, classes: np.ndarray, *, device: str = "cpu",
               batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """μ and log σ² (N, latent) of crystals with the given condition classes."""
        x = network_input(crystals, self.spec.voxel)
        mus, logvars = [], []
        for s in range(0, len(x), batch_size):
            mu, lv = self.encode_grids(torch.from_numpy(x[s:s + batch_size]), classes[s:s + batch_size],
                                       device=device)
            mus.append(mu)
            logvars.append(lv)
        return np.concatenate(mus), np.concatenate(logvars)

    def encode_grids(self, grids: torch.Tensor, classes: np.ndarray, *, device: str = "cpu",
                     ) -> tuple[np.ndarray, np.ndarray]:
        """μ and log σ² (B, latent) of one batch of grids (B, 4, G, G, G) in electrons/Å³ and Å.

        The grids are divided by the spec's channel scale here. The VAE runs in eval mode and is
        left in the train/eval mode it had (training exports call this).
        """
        was_training = self.vae.training
        vae = self.vae.to(device).eval()
        try:
            scale = torch.from_numpy(self.spec.scale()).to(device).view(1, -1, 1, 1, 1)
            with torch.no_grad():
                c = one_hot(classes, self.spec.num_conditions, device)
                mu, lv = vae.encode(grids.to(device).float() / scale, c)
        finally:
            self.vae.train(was_training)
        return mu.float().cpu().numpy(), lv.float().cpu().numpy()

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
                    options: WatershedOptions = WatershedOptions(), ids: list[str] | None = None,
                    workers: int = 1) -> Any:
        """Segment grids (n, 4, G, G, G) and decode them (watershed in ``workers`` processes)."""
        occupancy, species = segment_grids(self.segmenter, grids, device=device, batch_size=batch_size)
        lengths = read_lattice(grids[:, 1:], self.spec.voxel, method=self.spec.readback)
        return decode(occupancy, species, lengths, config=self.spec.voxel, options=options, ids=ids,
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

    def prepare(self, options: SampleOptions, *, device: str = "cpu") -> dict[str, Any]:
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
                                  "prior": options.prior, "total": options.n}
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
                 on_batch: Callable[[int], None] | None = None, **_: Any) -> DecodeResult:
        """``n`` crystals: latents → grids → segmentation → watershed (a DecodeResult).

        ``line`` = (μ_A, μ_B) puts sample ``offset + i`` of ``total`` at t = (offset + i)/(total − 1)
        on the segment between them (latent interpolation); otherwise see :meth:`latents`.
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
        res = as_decode_result(self.to_crystals(grids, device=device, ids=ids, workers=workers), n)
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
