"""crysgen's atom diffusion transformer as a model directory holds it: network, EDM settings, spec.

A model directory of kind ``atom_diffusion`` holds ``config.json`` (network and EDM settings),
``weights.safetensors`` (EMA weights) and ``atoms.json`` (the :class:`AtomSetSpec`: allowed
elements, lattice statistics, the training histogram of site counts). :class:`AtomEDMConfig` is
the model's noise and preconditioning settings, which training
(:mod:`crysgen.objectives.atom_edm`) and sampling both read. :class:`AtomDiffusionBundle` saves and
loads the directory; the model that samples, :class:`crysgen.pipelines.atoms.AtomDiffusionModel`,
adds the sampling loop to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from crysgen.errors import CrysgenError, require_non_negative
from crysgen.models.atom_transformer import AtomTransformer
from crysgen.models.saved import ModelContents, SavedModel
from crysgen.representations.atoms import AtomSetSpec

if TYPE_CHECKING:
    from crysgen.models.model_dir import ModelFiles

KIND = "atom_diffusion"
SPEC_FILE = "atoms.json"
B = TypeVar("B", bound="AtomDiffusionBundle")


SITE_WEIGHTINGS = ("crystal", "sqrt", "site")
"""The values of :attr:`AtomEDMConfig.site_weighting`."""


@dataclass(frozen=True)
class AtomEDMConfig:
    """Noise distribution, σ_data per part, loss weights and the sampler's defaults.

    Attributes:
        p_mean: mean of ln σ during training.
        p_std: std of ln σ during training.
        sigma_data_coords: σ_data of the periodic displacements (0.29 = std of U[-½, ½]).
        sigma_data_lattice: σ_data of the standardised lattice features.
        weights: loss weights of (types, coordinates, lattice).
        csp_fraction: share of training crystals whose element codes are given clean.
        sigma_min: smallest σ of the sampling schedule.
        sigma_max: largest σ of the sampling schedule.
        rho: Karras schedule exponent.
        s_churn: EDM stochastic churn (0 = deterministic Heun).
        anneal_rho: the sampler's anti-annealing (0 = off): each step's coordinate and lattice
            move is lengthened by max(1, |Δσ of a Karras schedule of exponent ``anneal_rho``| /
            |Δσ of the sampling schedule|) at the same step index, which over-denoises the low-σ
            end (sharper sites; Crystalite's sampler does this for CSP with exponent 4 against 7);
            the sampler never moves past the denoised estimate.
        anneal_rho_lattice: the lattice's own anti-annealing exponent (0 = off); None: ``anneal_rho``.
        cond_dropout: share of training crystals whose conditions (space group, number of
            elements) are withheld (0 given), each independently, so that a conditioned network
            learns the unconditional model too (classifier-free guidance).
        site_weighting: how the per-site losses (element codes, coordinates) average over a
            batch: "crystal" (each crystal's sites are averaged first, so every crystal counts
            alike and a site of a 24-site cell weighs a quarter of one of a 6-site cell) or "site"
            (every real site of the batch counts alike, so a crystal weighs in proportion to its
            sites, as DiffCSP's losses average over all atoms of a batch), or "sqrt" between the
            two (a crystal weighs in proportion to the square root of its sites). The lattice's
            loss is per crystal under all three. Training only: sampling does not read it.
        empty_sites: the most empty sites ("no atom" tokens) a de novo training crystal gets
            beside its real ones (0 = off): each such crystal gets 0 to ``empty_sites`` of them,
            uniformly, with the code of no element, random coordinates and its lattice features
            scaled per token (:func:`~crysgen.objectives.atom_edm.add_empty_sites`). The sampler
            then draws a number of tokens (the training histogram of sites plus empty sites), and
            the tokens that decode to no element are dropped: the model chooses how many atoms a
            de novo crystal holds. Crystals with given elements never get any.
        repair: the sampler's default collision repair, (σ, steps, rounds): every sample with two
            sites closer than 0.5 Å is sampled again from σ with that many Heun steps, up to that
            many rounds (``crysgen sample --repair``); None: off. Sampling only: training does not
            read it.
    """

    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data_coords: float = 0.29
    sigma_data_lattice: float = 1.0
    weights: tuple[float, float, float] = (1.0, 2.0, 1.0)
    csp_fraction: float = 0.3
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    s_churn: float = 0.0
    cond_dropout: float = 0.1
    anneal_rho: float = 0.0
    anneal_rho_lattice: float | None = None
    site_weighting: str = "crystal"
    empty_sites: int = 0
    repair: tuple[float, int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if len(self.weights) != 3 or min(self.weights) < 0:
            raise CrysgenError("edm.weights takes three non-negative numbers: types, coords, lattice")
        for name in ("csp_fraction", "cond_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise CrysgenError(f"edm.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.site_weighting not in SITE_WEIGHTINGS:
            raise CrysgenError(f"edm.site_weighting must be one of {', '.join(SITE_WEIGHTINGS)}, "
                               f"got {self.site_weighting!r}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise CrysgenError("edm: need 0 < sigma_min < sigma_max")
        if int(self.empty_sites) != self.empty_sites or self.empty_sites < 0:
            raise CrysgenError(f"edm.empty_sites must be a whole number >= 0, got {self.empty_sites}")
        object.__setattr__(self, "empty_sites", int(self.empty_sites))
        if self.repair is not None:
            r = tuple(self.repair)
            if (len(r) != 3 or not float(r[0]) > 0
                    or any(float(v) != int(v) or int(v) < 1 for v in r[1:])):
                raise CrysgenError("edm.repair takes (σ > 0, steps >= 1, rounds >= 1) or null, "
                                   f"got {self.repair!r}")
            object.__setattr__(self, "repair", (float(r[0]), int(r[1]), int(r[2])))
        require_non_negative({"edm.s_churn": self.s_churn, "edm.anneal_rho": self.anneal_rho,
                              "edm.anneal_rho_lattice": self.anneal_rho_lattice})

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self) | {"weights": list(self.weights),
                               "repair": None if self.repair is None else list(self.repair)}


@dataclass
class AtomDiffusionBundle(SavedModel):
    """A trained atom diffusion transformer as saved: network, EDM settings, spec, data fingerprint.

    Training builds and exports it; :class:`crysgen.pipelines.atoms.AtomDiffusionModel` (what
    ``from_pretrained`` of that class returns) samples from it.
    """

    KINDS = (KIND,)
    DESCRIPTION = "atom diffusion model"
    REQUIRED_FILES = (SPEC_FILE,)

    net: AtomTransformer
    edm: AtomEDMConfig
    spec: AtomSetSpec
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The kind: "atom_diffusion"."""
        return KIND

    def contents(self) -> ModelContents:
        """Network and EDM settings, EMA weights and the spec (``atoms.json``)."""
        return ModelContents(KIND, {"net": self.net.config, "edm": self.edm.to_dict()}, self.net.state_dict(),
                             self.data, files={SPEC_FILE: self.spec.save})

    @classmethod
    def from_files(cls: type[B], files: ModelFiles) -> B:
        """The model of a loaded ``atom_diffusion`` directory (see :meth:`SavedModel.from_pretrained`)."""
        net = AtomTransformer(**files.config["net"])
        net.load_state_dict(files.state_dict)
        return cls(net.eval(), AtomEDMConfig(**files.config["edm"]), AtomSetSpec.load(files.path / SPEC_FILE),
                   files.data)
