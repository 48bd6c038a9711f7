"""Run settings: one YAML file loaded into dataclasses, saved resolved into the run directory.

Every config class has ``from_dict`` (unknown keys are an error), ``to_dict`` (the resolved,
YAML-serialisable form) and ``with_max_steps`` (``--max-steps``), which is all
:func:`load_config`, :func:`save_config` and :func:`crysgen.training.runs.open_run` use.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar, cast, overload

from crysgen.errors import CrysgenError
from crysgen.models.adversarial import AdversarialNetConfig
from crysgen.models.atom_transformer import AtomNetConfig
from crysgen.models.unet2d import UNetConfig
from crysgen.objectives.atom_edm import AtomEDMConfig
from crysgen.objectives.cascade import StageConfig
from crysgen.objectives.diffusion import DiffusionConfig
from crysgen.representations.atoms import check_lattice_code
from crysgen.representations.crystens.layout import CrysTensLayout


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and loop settings.

    Attributes:
        batch_size: tensors per step (per device).
        lr: AdamW learning rate after warm-up.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up length.
        max_steps: optimiser steps in total (a resumed run continues up to it).
        ema_decay: decay of the exponential moving average used for sampling.
        ema_warmup: start the average with a smaller decay, ``min(ema_decay, (1 + n) / (10 + n))``
            after n updates, so that short runs do not export mostly early weights (runs made
            before this option existed had no warm-up).
        checkpoint_every: steps between checkpoints (and model exports).
        log_every: steps between log lines.
        seed: seeds everything.
        precision: "auto" (bf16-mixed on GPU, 32-true on CPU) or a Lightning precision string.
        grad_clip: gradient-norm clip (0 = off).
        lr_decay: after warm-up, "none" (constant rate) or "cosine" (to ``lr * lr_min_ratio`` at
            ``max_steps``, then held there).
        lr_min_ratio: the cosine's final fraction of ``lr``.
    """

    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 500
    max_steps: int = 20000
    ema_decay: float = 0.999
    ema_warmup: bool = True
    checkpoint_every: int = 500
    log_every: int = 50
    seed: int = 0
    precision: str = "auto"
    grad_clip: float = 1.0
    lr_decay: str = "none"
    lr_min_ratio: float = 0.05

    def __post_init__(self) -> None:
        if self.lr_decay not in ("none", "cosine"):
            raise CrysgenError(f"optim.lr_decay must be 'none' or 'cosine', got {self.lr_decay!r}")
        if not 0 <= self.lr_min_ratio <= 1:
            raise CrysgenError(f"optim.lr_min_ratio must be in [0, 1], got {self.lr_min_ratio}")


_Steps = TypeVar("_Steps", bound="StepsInOptim")


class StepsInOptim:
    """``with_max_steps`` of a config whose ``optim`` section counts the optimiser steps."""

    optim: Any

    def with_max_steps(self: _Steps, max_steps: int) -> _Steps:
        """This config with ``optim.max_steps`` set (``--max-steps``)."""
        # cast: this mixin is no dataclass itself; the classes that use it are
        return replace(cast(Any, self), optim=replace(self.optim, max_steps=max_steps))


@dataclass(frozen=True)
class DiffusionTrainConfig(StepsInOptim):
    """Everything `crysgen train diffusion` needs besides the data.

    ``stage`` makes the model a single 64×64 model (default) or one stage of a cascade; the
    network's input size and channels must fit the stage (checked here, not at step 1 on a GPU).
    ``crystens`` is the tensor layout (site rows S, element codes; the paper's by default): a
    single model's ``unet.sample_size`` is its size unless the YAML sets it (then they must agree);
    cascade stages need the paper's layout.
    """

    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    crystens: CrysTensLayout = field(default_factory=CrysTensLayout)

    def __post_init__(self) -> None:
        role, u = self.stage.role, self.unet
        if role != "single" and not self.crystens.is_paper:
            raise CrysgenError(f"a cascade's {role!r} stage needs the paper's CrysTens layout "
                               "(52 sites, no element code)")
        size = self.stage.low_res if role == "base" else self.crystens.size
        if u.sample_size != size:
            raise CrysgenError(f"a {role!r} stage needs unet.sample_size {size}, got {u.sample_size}")
        cond = u.channels if role == "sr" else 0
        if u.cond_channels != cond:
            raise CrysgenError(f"a {role!r} stage needs unet.cond_channels {cond}, got {u.cond_channels}")
        d = self.diffusion
        if role != "single" and (d.objective != "ddpm" or d.region_weights is not None):
            raise CrysgenError(f"a cascade's {role!r} stage trains with diffusion.objective ddpm and "
                               "no region_weights")

    def to_dict(self) -> dict[str, Any]:
        """Resolved, JSON/YAML-serialisable form."""
        return {"unet": self.unet.to_dict(), "diffusion": self.diffusion.to_dict(),
                "optim": asdict(self.optim), "stage": self.stage.to_dict(),
                "crystens": self.crystens.to_dict()}

    def with_layout(self, layout: CrysTensLayout) -> DiffusionTrainConfig:
        """This config for another CrysTens layout (a single model's input size follows it)."""
        return replace(self, crystens=layout, unet=replace(self.unet, sample_size=layout.size))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionTrainConfig:
        """Build from a nested dict (unknown keys are an error, so typos do not pass silently).

        A single model's ``unet.sample_size`` defaults to the ``crystens`` layout's size.
        """
        data = dict(data or {})
        _check_keys(data, {"unet": UNetConfig, "diffusion": DiffusionConfig, "optim": OptimConfig,
                           "stage": StageConfig, "crystens": CrysTensLayout})
        try:
            layout = CrysTensLayout.from_dict(data.get("crystens"))
            stage = StageConfig(**(data.get("stage") or {}))
            unet = dict(data.get("unet") or {})
            if stage.role == "single":
                unet.setdefault("sample_size", layout.size)
            return cls(
                unet=UNetConfig.from_dict(unet),
                diffusion=DiffusionConfig(**(data.get("diffusion") or {})),
                optim=OptimConfig(**(data.get("optim") or {})),
                stage=stage,
                crystens=layout,
            )
        except TypeError as exc:
            raise CrysgenError(f"bad config: {exc}") from exc


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile`` modes a training config may name."""


def check_compile(value: bool | str) -> None:
    """Raise for a ``compile`` setting that is neither a bool nor one of :data:`COMPILE_MODES`."""
    if not isinstance(value, bool) and value not in COMPILE_MODES:
        raise CrysgenError(f"compile: {value!r} is neither true/false nor one of {', '.join(COMPILE_MODES)}")


def compile_mode_of(value: bool | str) -> str | None:
    """The ``torch.compile`` mode of a ``compile`` setting, or None when it runs eagerly."""
    if value is False:
        return None
    return "default" if value is True else str(value)


@dataclass(frozen=True)
class AdversarialOptimConfig:
    """Optimiser and loop settings of a GAN or WGAN-GP run.

    ``channels_last``, ``compile``, ``fused`` and ``micro_batch`` are speed options: none changes
    what the networks compute (float rounding aside), each is off by default.

    Attributes:
        batch_size: tensors per step (per device); each critic update draws a fresh batch.
        lr: Adam learning rate (both networks).
        betas: Adam betas.
        eps: Adam epsilon (Keras's default 1e-7).
        n_critic: critic updates per generator update (WGAN-GP; the GAN takes its two
            discriminator updates, real then fake, per iteration, as the Keras code does).
        gp_weight: gradient-penalty weight λ (WGAN-GP).
        max_steps: generator updates (iterations) in total; a resumed run continues up to it.
        checkpoint_every: iterations between checkpoints (and model exports).
        log_every: iterations between log lines.
        seed: seeds everything.
        precision: "auto" (bf16-mixed on GPU, 32-true on CPU) or a Lightning precision string;
            the gradient penalty is always computed in float32.
        channels_last: keep both networks' 5-D weights and the real batches (N, 1, 4, 64, 64)
            in ``torch.channels_last_3d`` memory format (cuDNN's channels-last kernels; the
            depth-1 convolutions then run as channels-last 2-D ones without a copy); weights
            with a single input or output channel stay contiguous (see
            :func:`crysgen.training.adversarial.channels_last`).
        compile: ``torch.compile`` the generator's and the critic's forward: False (eager),
            True (mode "default") or a mode of :data:`COMPILE_MODES` ("reduce-overhead" adds
            CUDA graphs). The gradient penalty's critic forward stays eager: compiled graphs
            have no double backward.
        fused: fused Adam kernels (``torch.optim.Adam(fused=True)``); where the parameters'
            device has none, the default Adam with a warning.
        micro_batch: compute each update over ``batch_size`` tensors in micro-batches of this
            many (0: the whole batch at once), accumulating gradients scaled by the micro-batch's
            share of the batch: the same mean losses and gradients (float rounding aside). The
            spectral-norm power iteration of every forward is replayed from the same state in
            each micro-batch, so every micro-batch sees the weights the whole batch would. The
            critic's dropout masks are drawn per micro-batch (the same distribution, other
            draws). WGAN-GP only: the GAN's BatchNorm would normalise over micro-batches, which
            changes its function. Must divide ``batch_size``.
    """

    batch_size: int = 64
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-7
    n_critic: int = 1
    gp_weight: float = 10.0
    max_steps: int = 42000
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0
    precision: str = "auto"
    channels_last: bool = False
    compile: bool | str = False
    fused: bool = False
    micro_batch: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if len(self.betas) != 2 or self.n_critic < 1 or self.batch_size < 1:
            raise CrysgenError("optim: betas needs 2 values; n_critic and batch_size must be >= 1")
        check_compile(self.compile)
        if self.micro_batch < 0 or (self.micro_batch and self.batch_size % self.micro_batch):
            raise CrysgenError(f"optim.micro_batch must be 0 or divide batch_size {self.batch_size}, "
                               f"got {self.micro_batch}")

    @property
    def compile_mode(self) -> str | None:
        """The ``torch.compile`` mode, or None when the networks run eagerly."""
        return compile_mode_of(self.compile)


ADVERSARIAL_DEFAULTS: dict[str, dict[str, Any]] = {
    # seed code §3.1: Adam 1e-5 (β1 0.9), batch 64, 100 epochs of floor(floor(N/64)/2)
    # iterations (100 × 420 = 42,000 for the paper's 53,856 crystals)
    "gan": {"batch_size": 64, "lr": 1e-5, "betas": (0.9, 0.999), "n_critic": 1, "max_steps": 42000},
    # §3.2: Adam 1e-4, β (0, 0.9), λ 10, 5 critic steps, batch 256 (the signature default);
    # paper Appendix B.2: 100 epochs of floor(53856 / 256) = 210 generator steps
    "wgan": {"batch_size": 256, "lr": 1e-4, "betas": (0.0, 0.9), "n_critic": 5, "max_steps": 21000},
}
"""Per-kind optimiser defaults, from the authors' code."""


@dataclass(frozen=True)
class AdversarialTrainConfig(StepsInOptim):
    """Everything `crysgen train gan|wgan` needs besides the data."""

    net: AdversarialNetConfig = field(default_factory=AdversarialNetConfig)
    optim: AdversarialOptimConfig = field(default_factory=AdversarialOptimConfig)

    def __post_init__(self) -> None:
        if self.net.kind == "gan" and self.optim.n_critic != 1:
            raise CrysgenError("the vanilla GAN takes one discriminator iteration per generator "
                               f"step (n_critic 1), got {self.optim.n_critic}")
        if self.net.kind == "gan" and self.optim.micro_batch not in (0, self.optim.batch_size):
            raise CrysgenError("optim.micro_batch: the GAN's BatchNorm normalises over the batch, so "
                               "micro-batches would change its function (WGAN-GP only)")

    @classmethod
    def default(cls, kind: str) -> AdversarialTrainConfig:
        """The authors' settings for ``kind`` ("gan" or "wgan")."""
        return cls.from_dict({"net": {"kind": kind}})

    def to_dict(self) -> dict[str, Any]:
        """Resolved, JSON/YAML-serialisable form."""
        optim = asdict(self.optim) | {"betas": list(self.optim.betas)}
        return {"net": self.net.to_dict(), "optim": optim}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdversarialTrainConfig:
        """Build from a nested dict; unset optimiser keys take the defaults of ``net.kind``."""
        data = dict(data or {})
        _check_keys(data, {"net": AdversarialNetConfig, "optim": AdversarialOptimConfig})
        try:
            net = AdversarialNetConfig(**(data.get("net") or {}))
            optim = AdversarialOptimConfig(**(ADVERSARIAL_DEFAULTS[net.kind] | (data.get("optim") or {})))
        except TypeError as exc:
            raise CrysgenError(f"bad config: {exc}") from exc
        return cls(net=net, optim=optim)


VOXEL_DEFAULTS: dict[str, dict[str, Any]] = {
    # seed_code.md §6.3: Adam 3e-6, batch 10, 50 epochs; §6.4: Adam 5e-4, batch 20, 50 epochs
    "segmenter": {"batch_size": 10, "lr": 3e-6, "max_steps": 50000},
    "vae": {"batch_size": 20, "lr": 5e-4, "max_steps": 25000},
}
"""Per-kind optimiser defaults of the voxel pipeline, from the authors' code."""


@dataclass(frozen=True)
class VoxelOptimConfig:
    """Optimiser and loop settings of a voxel segmenter or VAE run.

    Attributes:
        batch_size: crystals per step (per device).
        lr: Adam learning rate.
        max_steps: optimiser steps in total (a resumed run continues up to it).
        rotate: random 90° rotations of every training grid (the authors' augmentation).
        checkpoint_every: steps between checkpoints (and model exports).
        log_every: steps between log lines.
        seed: seeds everything.
        precision: "auto" (bf16-mixed on GPU, 32-true on CPU) or a Lightning precision string.
        workers: processes that voxelise the training set before training (0: all CPUs).
    """

    batch_size: int = 10
    lr: float = 3e-6
    max_steps: int = 50000
    rotate: bool = True
    checkpoint_every: int = 1000
    log_every: int = 50
    seed: int = 0
    precision: str = "auto"
    workers: int = 0


@dataclass(frozen=True)
class VoxelTrainConfig(StepsInOptim):
    """Everything `crysgen train segmenter|vae` needs besides the data.

    Attributes:
        kind: "segmenter" or "vae".
        width: multiplier of the networks' filter counts (1.0 = the authors').
        voxel: grid constants (seed_code.md §6.2).
        condition: the VAE's condition property (a CrystalSet property name).
        num_conditions: quantile classes of the condition (10 deciles).
        alpha: weight of the deep-feature-consistent loss.
        beta: weight of the KL term.
        segmenter: the trained segmenter's model directory (VAE runs; its features are the DFC
            loss and it is copied into the VAE's model directory).
        coordinates: how a rotated training grid gets its coordinate channels: "rotated" (the
            authors': the channel values turn with the grid, so a channel may ramp along any axis
            in either direction and the decoder must also encode the orientation) or "grid"
            (rebuilt after the turn from the lengths that now lie along each axis: channel k
            always ramps up along array axis k, as on an unrotated grid).
        channel_weights: weights of the 4 channels in the VAE's MSE: "uniform" (the authors'
            plain mean), "variance" (density 1, each coordinate channel the ratio of the
            density's across-crystal variance per voxel to its own, fitted on the training set
            and saved in voxel.json; the coordinate channels then count as much as the density)
            or 4 numbers. Fitted on the grids the VAE sees (after ``channel_scale``).
        channel_scale: what the VAE's grids are divided by: "none" (the authors': electrons/Å³
            and Å as they are, several times the unit scale of the decoder's final BatchNorm →
            ReLU, which Adam's lr-sized steps take thousands of steps to stretch) or "rms"
            (each channel's root mean square over training grids, saved in voxel.json; the
            decoder then outputs grid / rms).
        optim: optimiser settings (defaults per kind: :data:`VOXEL_DEFAULTS`).
    """

    kind: str = "segmenter"
    width: float = 1.0
    voxel: dict[str, Any] = field(default_factory=dict)
    condition: str = "formation_energy_per_atom"
    num_conditions: int = 10
    alpha: float = 0.5
    beta: float = 3e-4
    segmenter: str = ""
    coordinates: str = "rotated"
    channel_weights: str | list[float] = "uniform"
    channel_scale: str = "none"
    optim: VoxelOptimConfig = field(default_factory=VoxelOptimConfig)

    def __post_init__(self) -> None:
        if self.kind not in VOXEL_DEFAULTS:
            raise CrysgenError(f"voxel kind must be one of {', '.join(VOXEL_DEFAULTS)}, got {self.kind!r}")
        if self.num_conditions < 2:
            raise CrysgenError("num_conditions must be at least 2")
        if self.coordinates not in ("rotated", "grid"):
            raise CrysgenError(f"coordinates must be 'rotated' or 'grid', got {self.coordinates!r}")
        if self.channel_scale not in ("none", "rms"):
            raise CrysgenError(f"channel_scale must be 'none' or 'rms', got {self.channel_scale!r}")
        w = self.channel_weights
        if isinstance(w, str):
            if w not in ("uniform", "variance"):
                raise CrysgenError(f"channel_weights must be 'uniform', 'variance' or 4 numbers, got {w!r}")
        elif len(w) != 4 or not all(isinstance(v, int | float) and v >= 0 for v in w):
            raise CrysgenError(f"channel_weights as numbers must be 4 non-negative values, got {w!r}")

    @classmethod
    def default(cls, kind: str) -> VoxelTrainConfig:
        """The authors' settings for ``kind``."""
        return cls.from_dict({"kind": kind})

    def to_dict(self) -> dict[str, Any]:
        """Resolved, YAML-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VoxelTrainConfig:
        """Build from a nested dict; unset optimiser keys take the defaults of ``kind``."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise CrysgenError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        _check_keys({"optim": data.get("optim") or {}}, {"optim": VoxelOptimConfig})
        kind = data.get("kind", "segmenter")
        try:
            optim = VoxelOptimConfig(**(VOXEL_DEFAULTS.get(kind, {}) | (data.get("optim") or {})))
            return cls(**{k: v for k, v in data.items() if k != "optim"}, optim=optim)
        except TypeError as exc:
            raise CrysgenError(f"bad config: {exc}") from exc


def _check_keys(data: dict[str, Any], sections: dict[str, type]) -> None:
    """Unknown sections or keys are an error, so typos do not pass silently."""
    unknown = set(data) - set(sections)
    if unknown:
        raise CrysgenError(f"unknown config section(s): {', '.join(sorted(unknown))}")
    for name, klass in sections.items():
        bad = set(data.get(name, {}) or {}) - {f.name for f in fields(klass)}
        if bad:
            raise CrysgenError(f"unknown key(s) in {name}: {', '.join(sorted(bad))}")


@dataclass(frozen=True)
class AtomDataConfig:
    """How an atom diffusion run reads its crystals.

    Attributes:
        max_atoms: S, sites per crystal at most (0: the training set's largest).
        niggli: Niggli-reduce every cell before encoding (as DiffCSP and CDVAE do).
        translate: shift each training crystal by a random vector every step (the data are
            invariant to it; the network's coordinate features are not).
        permute_axes: list each training crystal's cell axes in a random order every step
            (:func:`~crysgen.objectives.atom_edm.permute_axes`: the same crystal, or its mirror
            image), so that the lattice of a composition is harder to memorise than in the one
            Niggli order; validation keeps the Niggli order.
        lattice_code: how the lattice is encoded, one of
            :data:`~crysgen.representations.atoms.LATTICE_CODES` (``lengths_angles``: ln lengths
            and angles; ``cholesky``: the log-diagonal and shears of the metric's Cholesky factor).
            A run started with ``--init`` must use its init model's.
    """

    max_atoms: int = 0
    niggli: bool = True
    translate: bool = True
    permute_axes: bool = False
    lattice_code: str = "lengths_angles"

    def __post_init__(self) -> None:
        check_lattice_code(self.lattice_code)


@dataclass(frozen=True)
class AtomTrainConfig(StepsInOptim):
    """Everything `crysgen train atom-diffusion` needs besides the data.

    ``compile`` runs the network's training forward through ``torch.compile``: False (off),
    True (its default mode) or a mode name from :data:`COMPILE_MODES` (``"reduce-overhead"``
    adds CUDA graphs, which fit here: every batch has the same shape).
    """

    net: AtomNetConfig = field(default_factory=AtomNetConfig)
    edm: AtomEDMConfig = field(default_factory=AtomEDMConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=256, lr=3e-4, ema_decay=0.9995,
                                                                 warmup_steps=1000, max_steps=100000,
                                                                 checkpoint_every=2000))
    data: AtomDataConfig = field(default_factory=AtomDataConfig)
    compile: bool | str = False

    def __post_init__(self) -> None:
        check_compile(self.compile)

    @property
    def compile_mode(self) -> str | None:
        """The ``torch.compile`` mode, or None when the network runs eagerly."""
        return compile_mode_of(self.compile)

    def to_dict(self) -> dict[str, Any]:
        """Resolved, JSON/YAML-serialisable form."""
        return {"net": self.net.to_dict(), "edm": self.edm.to_dict(), "optim": asdict(self.optim),
                "data": asdict(self.data), "compile": self.compile}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AtomTrainConfig:
        """Build from a nested dict (unknown keys are an error).

        Unset optimiser keys keep the atom-diffusion defaults.
        """
        data = dict(data or {})
        compile_ = data.pop("compile", False)
        _check_keys(data, {"net": AtomNetConfig, "edm": AtomEDMConfig, "optim": OptimConfig,
                           "data": AtomDataConfig})
        try:
            optim = asdict(cls().optim) | (data.get("optim") or {})
            return cls(net=AtomNetConfig(**(data.get("net") or {})),
                       edm=AtomEDMConfig(**(data.get("edm") or {})), optim=OptimConfig(**optim),
                       data=AtomDataConfig(**(data.get("data") or {})), compile=compile_)
        except TypeError as exc:
            raise CrysgenError(f"bad config: {exc}") from exc


@dataclass(frozen=True)
class PropertyTrainConfig:
    """Everything `crysgen train property` needs besides the data (one flat section).

    The loop counts optimiser steps, as every trainer does; ``epochs`` gives their number
    unless ``max_steps`` is set, and the run directory's ``config.yaml`` holds the resolved
    ``max_steps`` and ``checkpoint_every``.

    Attributes:
        target: the property column to learn (a run needs one; "" is only the unset default).
        unit: the target's unit, for the model's metadata and the CSV column of `crysgen predict`.
        classification: train a two-class classifier on a 0/1 target instead of a regressor.
        freeze_conv: keep the element embedding and graph convolutions taken from ``--init``
            fixed (their batch-norm statistics too); needs ``--init``.
        epochs: passes over the training crystals (when ``max_steps`` is 0).
        max_steps: optimiser steps in total (0: ``epochs`` × batches per epoch); the learning
            rate decays to 0 over them on a cosine; a resumed run continues up to it.
        batch_size: crystals per step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        val_fraction: share of the data held out when no validation file is given.
        seed: seeds the split, the initialisation and the batches.
        atom_fea_len: hidden atom feature width (ignored with ``--init``: taken from it).
        n_conv: graph convolutions (ignored with ``--init``).
        checkpoint_every: steps between checkpoints, held-out scores and model exports (0: every
            tenth of the epochs, at least once an epoch).
        log_every: steps between log lines.
        precision: Lightning precision string; "auto" is bf16-mixed on a GPU and 32-true on the CPU.
    """

    target: str = ""
    unit: str = ""
    classification: bool = False
    freeze_conv: bool = False
    epochs: int = 100
    max_steps: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    seed: int = 0
    atom_fea_len: int = 64
    n_conv: int = 4
    checkpoint_every: int = 0
    log_every: int = 10
    precision: str = "32-true"

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                    "atom_fea_len": self.atom_fea_len, "n_conv": self.n_conv, "log_every": self.log_every}
        bad = [f"{k} must be positive, got {v}" for k, v in positive.items() if not v > 0]
        bad += [f"{k} must be >= 0, got {v}" for k, v in (("max_steps", self.max_steps),
                ("checkpoint_every", self.checkpoint_every), ("weight_decay", self.weight_decay))
                if not v >= 0]
        if not 0 < self.val_fraction < 1:
            bad.append(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if bad:
            raise CrysgenError("property config: " + "; ".join(bad))

    def with_max_steps(self, max_steps: int) -> PropertyTrainConfig:
        """This config with ``max_steps`` set (``--max-steps``)."""
        return replace(self, max_steps=max_steps)

    def to_dict(self) -> dict[str, Any]:
        """Resolved, YAML-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PropertyTrainConfig:
        """Build from a flat dict (unknown keys are an error)."""
        return _from_flat(cls, data)


F = TypeVar("F")


def _from_flat(cls: type[F], data: dict[str, Any] | None, unknown: set[str] | None = None) -> F:
    """``cls(**data)`` of a flat config section.

    Raises:
        CrysgenError: for keys that are no field of ``cls`` (and ``unknown``: keys found unknown
            further down), and for a bad value's TypeError.
    """
    data = dict(data or {})
    unknown = (unknown or set()) | (set(data) - {f.name for f in fields(cls)})  # type: ignore[arg-type]  # a dataclass
    if unknown:
        raise CrysgenError(f"unknown config key(s): {', '.join(sorted(unknown))}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise CrysgenError(f"bad config: {exc}") from exc


@dataclass
class CompositionTrainConfig:
    """Settings of ``crysgen train composition`` (one flat section; ``net`` sizes the network).

    Attributes:
        net: :class:`~crysgen.models.composition_lm.CompositionLMConfig` keys; ``max_sites`` and
            ``max_elements`` default to the training crystals' largest.
        epochs: passes over the training crystals.
        batch_size: compositions per step.
        lr: peak AdamW learning rate (cosine decay to 0 after 5 % warm-up).
        weight_decay: AdamW weight decay.
        seed: seeds the initialisation and the batches.
    """

    net: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [f"{k} must be positive, got {v}" for k, v in
               (("epochs", self.epochs), ("batch_size", self.batch_size), ("lr", self.lr)) if not v > 0]
        if not self.weight_decay >= 0:
            bad.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if bad:
            raise CrysgenError("composition config: " + "; ".join(bad))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompositionTrainConfig:
        """Build from a flat dict (unknown keys are an error)."""
        from crysgen.models.composition_lm import CompositionLMConfig

        net = (data or {}).get("net") or {}
        return _from_flat(cls, data, {f"net.{k}" for k in net} - {f"net.{f.name}" for f in
                                                                  fields(CompositionLMConfig)})

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict."""
        return asdict(self)


Config = TypeVar("Config", DiffusionTrainConfig, AdversarialTrainConfig, VoxelTrainConfig, AtomTrainConfig,
                 PropertyTrainConfig)
"""A run config class: ``from_dict``, ``to_dict`` and ``with_max_steps``."""
Settings = TypeVar("Settings", DiffusionTrainConfig, AdversarialTrainConfig, VoxelTrainConfig,
                   AtomTrainConfig, PropertyTrainConfig, CompositionTrainConfig)
"""A config class read from YAML and changed by ``--set``: ``from_dict`` and ``to_dict``."""


@overload
def load_config(path: str | Path | None) -> DiffusionTrainConfig: ...
@overload
def load_config(path: str | Path | None, klass: type[Settings]) -> Settings: ...
def load_config(path: str | Path | None,
                klass: type[Settings] | type[DiffusionTrainConfig] = DiffusionTrainConfig,
                ) -> Settings | DiffusionTrainConfig:
    """Read a YAML (or JSON) config file into ``klass``; None gives its defaults."""
    if path is None:
        return klass.from_dict({})
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CrysgenError(f"no such config file: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CrysgenError(f"{path} is not valid YAML: {exc}") from exc
    if data is not None and not isinstance(data, dict):
        raise CrysgenError(f"{path} must hold a mapping of settings, not a {type(data).__name__}")
    return klass.from_dict(data or {})


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` settings -> {dotted key: value}; each value is read as YAML.

    Example: ``["optim.lr=1e-4", "unet.block_out_channels=[32, 64, 128, 128]"]``.

    Raises:
        CrysgenError: for an item without ``=`` or with an empty key or unreadable value.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CrysgenError(f"--set {item!r}: expected KEY=VALUE (e.g. optim.lr=1e-4)")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise CrysgenError(f"--set {item!r}: the value is not valid YAML ({exc})") from exc
        out[key.strip()] = _number(parsed) if isinstance(parsed, str) else parsed
    return out


def _number(text: str) -> Any:
    """``text`` as a float where it is one (YAML 1.1 reads ``1e-4``, without a dot, as a string)."""
    try:
        return float(text)
    except ValueError:
        return text


def set_dotted(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a nested settings dict with each dotted key set.

    Raises:
        CrysgenError: where a dotted key passes through a setting that is not a section.
    """
    new = copy.deepcopy(data)
    for dotted, value in overrides.items():
        *path, last = dotted.split(".")
        node = new
        for depth, part in enumerate(path):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CrysgenError(f"--set {dotted}: {'.'.join(path[:depth + 1])} is a value, not a section")
        node[last] = value
    return new


def with_overrides(config: Settings, overrides: dict[str, Any]) -> Settings:
    """``config`` with dotted settings replaced (checked like a config file: a typo is an error)."""
    return type(config).from_dict(set_dotted(config.to_dict(), overrides))


def save_config(config: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML."""
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump(json.loads(json.dumps(config.to_dict())), sort_keys=False))
    return path
