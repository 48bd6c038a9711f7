"""The voxel models as model directories hold them: segmenter, conditional VAE, spec, latent prior.

A ``voxel_segmenter`` model directory holds the UNet; a ``voxel_vae`` directory holds the VAE
and, in ``segmenter/``, a copy of the segmenter it was trained against, so one directory is
enough to sample. ``voxel.json`` (:class:`VoxelSpec`) holds the grid constants, the condition
property and its decile edges, and the class weights; ``latent_prior.npz`` (:class:`LatentPrior`,
written with every trained VAE) the Gaussian matched to the training crystals' posteriors.

:class:`VoxelBundle` saves and loads a VAE directory and encodes crystals (training fits the
latent prior with it); the model that samples, :class:`crysgen.pipelines.voxel.VoxelModel`, adds
the decoder side (latents, grids, segmentation, watershed) to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.errors import CrysgenError
from crysgen.models.saved import ModelContents, SavedModel
from crysgen.models.unet3d import UNet3D
from crysgen.models.voxel_vae import VoxelVAE
from crysgen.representations.voxel import VoxelConfig, network_input
from crysgen.representations.watershed import WatershedOptions

if TYPE_CHECKING:
    from crysgen.models.model_dir import ModelFiles, Writer

SPEC_FILE = "voxel.json"
PRIOR_FILE = "latent_prior.npz"
SEGMENTER_DIR = "segmenter"
B = TypeVar("B", bound="VoxelBundle")


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
        merge_tol: Å; decoded regions closer than this are one site (the watershed's
            ``merge_tol``): the training crystals' nearest-neighbour distance at its 0.1 %
            quantile, so that two regions closer than almost any two atoms of the data become
            one atom (a noisy segmenter splits one atom's voxels between species, and each
            species' part would otherwise stay a site). None (models trained before):
            :class:`~crysgen.representations.watershed.WatershedOptions`' default.
    """

    voxel: VoxelConfig = field(default_factory=VoxelConfig)
    condition: str = ""
    edges: list[float] = field(default_factory=list)
    class_weights: list[float] = field(default_factory=list)
    channel_weights: list[float] = field(default_factory=list)
    channel_scale: list[float] = field(default_factory=list)
    readback: str = "level"
    merge_tol: float | None = None

    def watershed(self, merge_tol: float | None = None) -> WatershedOptions:
        """The decoding settings of this model.

        The watershed defaults with ``merge_tol`` (Å) if given, else the model's own, else theirs.
        """
        tol = merge_tol if merge_tol is not None else self.merge_tol
        return WatershedOptions() if tol is None else WatershedOptions(merge_tol=tol)

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
             "channel_scale": self.channel_scale, "readback": self.readback, "merge_tol": self.merge_tol}
        return write_text_atomic(Path(path), json.dumps(d, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> VoxelSpec:
        """Read :meth:`save`'s JSON."""
        d = json.loads(Path(path).read_text())
        return cls(VoxelConfig.from_dict(d["voxel"]), d["condition"], list(d["edges"]),
                   list(d["class_weights"]), list(d.get("channel_weights", [])),
                   list(d.get("channel_scale", [])), d.get("readback", "level"), d.get("merge_tol"))


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
class VoxelBundle(SavedModel):
    """A conditional VAE with its segmenter as saved: VAE, segmenter, spec, data, latent prior.

    Training builds and exports it (and fits its prior with :meth:`encode_grids`);
    :class:`crysgen.pipelines.voxel.VoxelModel` (what ``from_pretrained`` of that class returns)
    samples from it.
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
    def from_files(cls: type[B], files: ModelFiles) -> B:
        """The model of a loaded ``voxel_vae`` directory (see :meth:`SavedModel.from_pretrained`)."""
        vae = VoxelVAE(**files.config["net"])
        vae.load_state_dict(files.state_dict)
        segmenter = SegmenterModel.from_pretrained(files.path / SEGMENTER_DIR).net
        prior_file = files.path / PRIOR_FILE
        prior = LatentPrior.load(prior_file) if prior_file.is_file() else None
        return cls(vae.eval(), segmenter, VoxelSpec.load(files.path / SPEC_FILE), files.data, prior=prior)

    # ---------------------------------------------------------------- encoding
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
