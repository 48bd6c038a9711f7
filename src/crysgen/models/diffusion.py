"""The CrysTens diffusion model as a model directory holds it: schedule, cascade stage, denoiser.

:class:`DiffusionConfig` (training objective, noise schedule, prediction target) and
:class:`StageConfig` (which part of a cascade a model is) are settings of the model itself:
training (:mod:`crysgen.objectives.diffusion`, :mod:`crysgen.objectives.cascade`), sampling
(:mod:`crysgen.pipelines.diffusion`) and config.json all read them. :class:`DiffusionBundle` is
what a ``diffusion`` model directory holds, saved and loaded; the model that samples,
:class:`crysgen.pipelines.diffusion.DiffusionModel`, adds the sampling loop to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from crysgen.errors import CrysgenError
from crysgen.models.saved import ModelContents, SavedModel
from crysgen.models.unet2d import UNetConfig, build_unet
from crysgen.representations.crystens import CrysTensScaling
from crysgen.representations.crystens.layout import REGIONS, CrysTensLayout, region_map

if TYPE_CHECKING:
    from diffusers.models.unets.unet_2d import UNet2DModel

    from crysgen.models.model_dir import ModelFiles


Prediction = Literal["eps", "v", "x0"]
Schedule = Literal["cosine", "linear"]
Objective = Literal["ddpm", "edm"]
OBJECTIVES: tuple[Objective, ...] = ("ddpm", "edm")
_PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
_BETA_SCHEDULES = {"cosine": "squaredcos_cap_v2", "linear": "linear"}


@dataclass(frozen=True)
class DiffusionConfig:
    """Training objective, noise schedule and prediction target.

    Attributes:
        prediction: DDPM: what the network predicts: noise ("eps"), velocity ("v") or the clean
            tensor ("x0"). EDM has one parametrisation (its preconditioning) and ignores it.
        schedule: DDPM beta schedule ("cosine" as in Imagen, or "linear").
        timesteps: DDPM training timesteps T.
        objective: "ddpm" (the default; models saved before objectives existed) or "edm".
        sigma_data: EDM: σ_data of the tensors in [-1, 1].
        p_mean: EDM: mean of ln σ during training.
        p_std: EDM: std of ln σ during training.
        sigma_min: EDM: smallest σ of the sampling schedule.
        sigma_max: EDM: largest σ of the sampling schedule.
        rho: EDM: Karras schedule exponent.
        region_weights: loss weight per tensor region (keys among :data:`REGIONS`, missing
            ones 1); None: the plain mean over the tensor.
    """

    prediction: Prediction = "v"
    schedule: Schedule = "cosine"
    timesteps: int = 1000
    objective: Objective = "ddpm"
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    region_weights: dict[str, float] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.prediction not in _PREDICTION_TYPES:
            raise CrysgenError(f"diffusion.prediction must be one of {', '.join(_PREDICTION_TYPES)}")
        if self.schedule not in _BETA_SCHEDULES:
            raise CrysgenError(f"diffusion.schedule must be one of {', '.join(_BETA_SCHEDULES)}")
        if self.timesteps < 2:
            raise CrysgenError("diffusion.timesteps must be at least 2")
        if self.objective not in OBJECTIVES:
            raise CrysgenError(f"diffusion.objective must be one of {', '.join(OBJECTIVES)}, "
                               f"got {self.objective!r}")
        if not (0 < self.sigma_min < self.sigma_max and self.sigma_data > 0 and self.p_std > 0
                and self.rho > 0):
            raise CrysgenError("diffusion: need 0 < sigma_min < sigma_max and positive sigma_data, "
                               "p_std and rho")
        if self.region_weights is not None:
            w = dict(self.region_weights)
            bad = set(w) - set(REGIONS)
            if bad:
                raise CrysgenError(f"unknown diffusion.region_weights key(s) {', '.join(sorted(bad))}; "
                                   f"choose among {', '.join(REGIONS)}")
            if (not all(isinstance(v, int | float) and v >= 0 for v in w.values())
                    or not any(w.get(r, 1.0) for r in REGIONS)):
                raise CrysgenError("diffusion.region_weights must be non-negative numbers, not all 0")
            object.__setattr__(self, "region_weights", {k: float(v) for k, v in sorted(w.items())})

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    def scheduler(self) -> Any:
        """The training scheduler: DDPM's ``DDPMScheduler`` or EDM's ``EDMEulerScheduler``."""
        if self.objective == "edm":
            from diffusers import EDMEulerScheduler

            return EDMEulerScheduler(sigma_min=self.sigma_min, sigma_max=self.sigma_max,
                                     sigma_data=self.sigma_data, rho=self.rho, prediction_type="epsilon")
        from diffusers import DDPMScheduler

        return DDPMScheduler(
            num_train_timesteps=self.timesteps,
            beta_schedule=_BETA_SCHEDULES[self.schedule],
            prediction_type=_PREDICTION_TYPES[self.prediction],
            clip_sample=True,
            clip_sample_range=1.0,
        )

    def weight_map(self, layout: CrysTensLayout) -> np.ndarray | None:
        """float32 (size, size) loss weight of every tensor entry, or None (plain mean)."""
        if self.region_weights is None:
            return None
        per_region = np.array([self.region_weights.get(r, 1.0) for r in REGIONS], np.float32)
        return per_region[region_map(layout)]


Role = Literal["single", "base", "sr"]
ROLES: tuple[Role, ...] = ("single", "base", "sr")


@dataclass(frozen=True)
class StageConfig:
    """Which part of a cascade a model is.

    Attributes:
        role: "single" (64×64 model), "base" (low-resolution model) or "sr" (super-resolution).
        low_res: side of the base stage's tensors (the SR stage's conditioning before
            up-sampling).
        aug_max: SR training: the conditioning's noise level is drawn from [0, aug_max] × T.
        aug_sample: SR sampling: the conditioning's noise level, as a fraction of T.
    """

    role: Role = "single"
    low_res: int = 32
    aug_max: float = 0.2
    aug_sample: float = 0.05

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise CrysgenError(f"stage.role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.low_res < 4:
            raise CrysgenError(f"stage.low_res must be at least 4, got {self.low_res}")
        for name in ("aug_max", "aug_sample"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise CrysgenError(f"stage.{name} must be in [0, 1), got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    def aug_timestep(self, timesteps: int, fraction: float) -> int:
        """The integer noise level for ``fraction`` of ``timesteps`` (clamped to the schedule)."""
        return min(timesteps - 1, round(fraction * timesteps))


KIND = "diffusion"
B = TypeVar("B", bound="DiffusionBundle")


@dataclass
class DiffusionBundle(SavedModel):
    """A trained CrysTens diffusion model as saved: denoiser, schedule, scaling, data fingerprint.

    Training builds and exports it; :class:`crysgen.pipelines.diffusion.DiffusionModel` (what
    ``from_pretrained`` of that class returns) samples from it. ``stage`` says whether it is a
    whole model or one stage of a cascade (see :mod:`crysgen.objectives.cascade`); only
    single-stage models sample crystals on their own.
    A single model's tensors have the CrysTens layout of its scaling (``scaling.layout``: S site
    rows, element codes; the paper's 64×64 for models saved before layouts existed); the
    directory's config.json records it too (``config["crystens"]``).
    """

    KINDS = (KIND,)
    DESCRIPTION = "diffusion model"
    NEEDS_SCALING = True

    unet: UNet2DModel
    unet_config: UNetConfig
    diffusion: DiffusionConfig
    scaling: CrysTensScaling
    data: dict[str, Any] = field(default_factory=dict)
    stage: StageConfig = field(default_factory=StageConfig)

    @classmethod
    def create(cls: type[B], unet_config: UNetConfig, diffusion: DiffusionConfig,
               scaling: CrysTensScaling, data: dict[str, Any] | None = None,
               stage: StageConfig | None = None) -> B:
        """A new, untrained model.

        Raises:
            CrysgenError: if a single model's input size is not its scaling's layout size.
        """
        stage = stage or StageConfig()
        if stage.role == "single" and unet_config.sample_size != scaling.layout.size:
            raise CrysgenError(f"the network takes {unet_config.sample_size}² tensors but the "
                               f"scaling's CrysTens layout ({scaling.layout.sites} sites) makes "
                               f"{scaling.layout.size}²")
        return cls(build_unet(unet_config), unet_config, diffusion, scaling, dict(data or {}), stage)

    def contents(self) -> ModelContents:
        """Network config, schedule, stage and CrysTens layout, EMA weights and scaling."""
        config = {"unet": self.unet_config.to_dict(), "diffusion": self.diffusion.to_dict(),
                  "stage": self.stage.to_dict(), "crystens": self.scaling.layout.to_dict()}
        return ModelContents(KIND, config, self.unet.state_dict(), self.data, self.scaling)

    @classmethod
    def from_files(cls: type[B], files: ModelFiles) -> B:
        """The model of a loaded ``diffusion`` directory (see :meth:`SavedModel.from_pretrained`).

        Raises:
            CrysgenError: if config.json's CrysTens layout is not scaling.json's.
        """
        # directories saved before layouts existed have neither entry: the paper's layout
        layout = CrysTensLayout.from_dict(files.config.get("crystens"))
        assert files.scaling is not None  # NEEDS_SCALING: load_model_dir checked it is there
        if layout != files.scaling.layout:
            raise CrysgenError(f"{files.path}: config.json's CrysTens layout {layout.to_dict()} differs "
                               f"from scaling.json's {files.scaling.layout.to_dict()}")
        model = cls.create(UNetConfig.from_dict(files.config["unet"]),
                           DiffusionConfig(**files.config["diffusion"]), files.scaling, files.data,
                           StageConfig(**files.config.get("stage", {})))
        model.unet.load_state_dict(files.state_dict)
        model.unet.eval()
        return model

    @property
    def kind(self) -> str:
        """The kind: "diffusion" (a whole model or a cascade's stage)."""
        return KIND
