"""What a generator is to its callers: the options of a sampling run and the :class:`Generator` protocol.

`crysgen sample` (:func:`crysgen.pipelines.sampling.sample_to_dir`), the evaluation and the benchmarks load a
model directory with :func:`crysgen.pipelines.generators.load_generator` and use the model only
through :class:`Generator`. Every kind satisfies it (mypy checks ``load_generator``'s return type):
CrysTens diffusion, cascade, GAN/WGAN-GP, voxel VAE and atom diffusion. A model refuses the
options it does not take with a :class:`~crysgen.errors.CrysgenError`: composition options in
``compositions_from_formula``/``compositions_from_targets``, the others in ``prepare``, so a
sampling run fails before anything is sampled or written.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from crysgen.data.substitution import DRAWS
from crysgen.errors import CrysgenError, require_non_negative

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from crysgen.crystal_set import CrystalSet
    from crysgen.models.composition_lm import CompositionModel
    from crysgen.pipelines.compositions import Compositions
    from crysgen.representations.crystens import DecodeOptions, DecodeResult
    from crysgen.representations.crystens.decode import DecodeMode

Sampler = Literal["ddpm", "ddim", "dpmsolver"]
"""A CrysTens diffusion sampler (:func:`crysgen.pipelines.diffusion.make_scheduler`)."""
SAMPLERS: tuple[Sampler, ...] = ("ddpm", "ddim", "dpmsolver")


PRECISIONS = ("auto", "fp32", "bf16")
"""``SampleOptions.precision``'s values."""


def substitute_draw(value: bool | str | None) -> str | None:
    """``--substitute``'s draw: a name of :data:`crysgen.data.substitution.DRAWS` or None (off).

    True and False, the option's form before it named a draw (older sample_config.json files),
    mean "probability" and None.

    Raises:
        CrysgenError: for a name that is not a draw.
    """
    if isinstance(value, bool):
        return "probability" if value else None
    if value is not None and value not in DRAWS:
        raise CrysgenError(f"--substitute must be one of {', '.join(DRAWS)}, got {value!r}")
    return value


def restart_schedule(value: str | Sequence[float] | None, *,
                     flag: str = "--restart") -> tuple[float, int, int] | None:
    """``--restart``'s (or ``--repair``'s) setting as (σ, steps, rounds), or None (off).

    Args:
        value: "SIGMA:STEPS[:ROUNDS]" (the CLI's form; ROUNDS defaults to 1), a (σ, steps) or
            (σ, steps, rounds) sequence, or None.
        flag: the option's name in messages.

    Raises:
        CrysgenError: for another form, σ ≤ 0, or fewer than one step or round (the model's own
            σ range is checked where the model is known: ``AtomDiffusionModel.checked_restart``).
    """
    if value is None:
        return None
    parts = value.split(":") if isinstance(value, str) else list(value)
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        sigma, steps, rounds = float(parts[0]), float(parts[1]), float(parts[2]) if len(parts) == 3 else 1.0
    except (TypeError, ValueError):
        raise CrysgenError(f"{flag} must be SIGMA:STEPS or SIGMA:STEPS:ROUNDS (e.g. 0.1:20), "
                           f"got {value!r}") from None
    if not (sigma > 0 and steps == int(steps) >= 1 and rounds == int(rounds) >= 1):
        raise CrysgenError(f"{flag} needs SIGMA > 0, STEPS >= 1 and ROUNDS >= 1 (whole numbers), "
                           f"got {value!r}")
    return sigma, int(steps), int(rounds)


@dataclass(frozen=True)
class SampleOptions:
    """Options of `crysgen sample` (all of them decide which crystals come out).

    ``symprec`` (auto decoding only) snaps each decoded crystal to the symmetry spglib finds
    at that tolerance in Å, when that keeps its number of sites. ``condition``, ``around``,
    ``sigma2`` and ``interpolate`` are for voxel VAE models (:mod:`crysgen.pipelines.voxel`):
    the condition decile class, a base crystal (``DATA.npz:ID`` or a CIF) to sample around with
    latent variance ``sigma2``, and two base crystals to interpolate between (``n`` points);
    ``prior`` ("standard" N(0, I) or "posterior", the Gaussian matched to the training posteriors)
    is where a voxel VAE's other latents come from, and ``merge_tol`` (Å; None: the model's own,
    ``voxel.json``) how close two decoded regions must be to count as one site.
    ``formula`` (with ``num_atoms``, else site counts drawn per sample) and ``compositions`` (a
    CrystalSet of target crystals, ``per_target`` samples each, ``n`` = their product) fix the
    elements of every sample: models with composition control (atom diffusion, single-stage
    CrysTens diffusion; :mod:`crysgen.pipelines.compositions`). ``space_group`` (1-230) with
    classifier-free ``guidance`` asks for a space group; ``churn`` is EDM's S_churn and
    ``anneal_rho`` the sampler's anti-annealing exponent (``anneal_rho_lattice``: the lattice's
    own; 0: off; None for any: the model's);
    ``limit_element_count`` snaps each de novo sample of an element-count model to at most the
    count it was conditioned on (default: every site on its own): atom diffusion models only
    (:mod:`crysgen.pipelines.atoms`). ``composition_prior`` (a CrystalSet) gives each of the ``n``
    samples the composition of a crystal drawn from it, changed by one ion substitution with
    ``substitute`` ("probability" or "mass-balanced", :data:`crysgen.data.substitution.DRAWS`;
    True, as older sample_config.json files have it, means "probability"; False means None)
    (composition first, then structure; models with composition control).
    ``symmetry_prior`` (a CrystalSet) gives each sample the symmetry of one of its crystals, kept
    at every sampling step (atom diffusion models; :mod:`crysgen.pipelines.symmetry`).
    ``precision`` is the atom diffusion network's arithmetic: "bf16" (autocast, as it was trained),
    "fp32", or "auto" (bf16 on CUDA, fp32 on a CPU); the sampler's own steps and the symmetry
    projection stay in float32. ``template_start`` (σ) starts every sample that has a template
    and given elements from the template crystal itself noised to that σ (atom diffusion models;
    :meth:`crysgen.pipelines.atoms.AtomDiffusionModel.sample_sets`).
    ``template_ranker`` ("bundled" or a ranker file) chooses each given composition's template
    among its fitting crystals of ``symmetry_prior`` with a learned ranker instead of the most
    alike exchange of elements (:mod:`crysgen.pipelines.template_ranking`).
    ``restart`` (σ, steps, rounds) noises every finished sample again to σ and samples it back
    down with that many Heun steps, ``rounds`` times (restart sampling; atom diffusion models;
    :meth:`crysgen.pipelines.atoms.AtomDiffusionModel.sample_sets`).
    ``repair`` (σ, steps, rounds) samples again, in the same way, only the samples with two sites
    closer than 0.5 Å, each time from a fresh position for the later site of every such pair
    (atom diffusion models; None: the model's own ``edm.repair``, "off": none).
    ``cell`` (a, b, c in Å, α, β, γ in degrees) holds every sample's cell fixed, e.g. one indexed
    from a powder pattern, so that only the sites are sampled: with ``formula`` and ``num_atoms``
    (atom diffusion models; the cell is Niggli-reduced first, the models' convention).
    """

    n: int
    steps: int = 50
    sampler: Sampler = "ddim"
    seed: int = 0
    decode_mode: DecodeMode = "auto"
    symprec: float | None = None
    chunk_size: int = 256
    save_tensors: bool = False
    condition: int | None = None
    around: str | None = None
    sigma2: float = 0.5
    prior: str = "standard"
    merge_tol: float | None = None
    interpolate: tuple[str, str] | None = None
    formula: str | None = None
    num_atoms: int | None = None
    compositions: str | None = None
    per_target: int = 1
    space_group: int | None = None
    guidance: float = 1.0
    churn: float | None = None
    anneal_rho: float | None = None
    anneal_rho_lattice: float | None = None
    limit_element_count: bool = False
    composition_prior: str | None = None
    substitute: str | None = None
    symmetry_prior: str | None = None
    precision: str = "auto"
    template_start: float | None = None
    template_ranker: str | None = None
    restart: tuple[float, int, int] | None = None
    repair: tuple[float, int, int] | str | None = None
    cell: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise CrysgenError(f"-n must be at least 1, got {self.n}")
        if self.chunk_size < 1:
            raise CrysgenError(f"chunk size must be at least 1, got {self.chunk_size}")
        if self.merge_tol is not None and not self.merge_tol > 0:
            raise CrysgenError(f"--merge-tol must be positive (Å), got {self.merge_tol}")
        require_non_negative({"--churn": self.churn, "--anneal-rho": self.anneal_rho,
                              "--anneal-rho-lattice": self.anneal_rho_lattice})
        object.__setattr__(self, "substitute", substitute_draw(self.substitute))  # frozen
        if self.precision not in PRECISIONS:
            raise CrysgenError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        object.__setattr__(self, "restart", restart_schedule(self.restart))  # frozen
        if self.repair != "off":
            object.__setattr__(self, "repair", restart_schedule(self.repair, flag="--repair"))


class Generator(Protocol):
    """A loaded model as `crysgen sample`, the evaluation and the benchmarks use it.

    A sampling run calls ``compositions_from_formula`` or ``compositions_from_targets`` (only
    when composition options are given), ``prepare`` once, ``default_batch_size`` when no batch
    size is given, then ``generate`` per chunk with ``prepare``'s keyword arguments.
    """

    @property
    def kind(self) -> str:
        """The model directory's kind: "diffusion", "cascade", "gan", "wgan", "voxel_vae", ..."""

    @property
    def data(self) -> dict[str, Any]:
        """Fingerprint of the training data (name, sha256, count; the training step if exported)."""

    def default_batch_size(self, device: str) -> int:
        """Crystals per forward pass on ``device`` when the caller gives none."""

    def compositions_from_formula(self, formula: str, n: int, *, num_atoms: int | None = None,
                                  seed: int | list[int] = 0) -> Compositions:
        """``n`` samples of one formula (see :func:`crysgen.pipelines.compositions.from_formula`).

        Raises:
            CrysgenError: for a model without composition control, and for a formula it cannot
                make.
        """

    def compositions_from_targets(self, targets: CrystalSet, per_target: int = 1) -> Compositions:
        """One sample per (target, repeat) (see :func:`crysgen.pipelines.compositions.from_targets`).

        Raises:
            CrysgenError: for a model without composition control, and for targets it cannot make.
        """

    def compositions_from_prior(self, prior: CrystalSet | CompositionModel, n: int, *,
                                substitute: str | None = None, seed: int | list[int] = 0,
                                ) -> tuple[Compositions, dict[str, int]]:
        """``n`` compositions drawn from known crystals or a composition model, with the draw's counts.

        See :func:`crysgen.pipelines.compositions.from_prior`.

        Raises:
            CrysgenError: for a model without composition control, and for a prior it cannot use.
        """

    def prepare(self, options: SampleOptions, *, device: str = "cpu",
                compositions: Compositions | None = None) -> dict[str, Any]:
        """The keyword arguments of :meth:`generate` that carry out the model's part of ``options``.

        Options of another kind of model are refused, and so are bad ones this model can tell
        (a space group it was not trained on, a missing base crystal), before any sampling.
        ``options.formula`` and ``options.compositions`` are not its part: they reach
        :meth:`generate` as ``compositions``, and ``prepare`` sees them too (the elements every
        sample will have, for options that depend on them, e.g. symmetry templates).

        Raises:
            CrysgenError: for an option this model does not take or cannot carry out.
        """

    def generate(self, n: int, *, seed: int | list[int] = 0, device: str = "cpu", batch_size: int = 256,
                 ids: list[str] | None = None, compositions: Compositions | None = None, offset: int = 0,
                 workers: int = 1, decode: DecodeOptions | None = None,
                 on_batch: Callable[[int], None] | None = None,
                 on_tensors: Callable[[np.ndarray], None] | None = None, **options: Any) -> DecodeResult:
        """``n`` crystals, decoded, with per-sample diagnostics and failure reasons.

        Args:
            n: how many.
            seed: seeds the CPU generator all noise comes from (``[seed, chunk]`` in a run).
            device: where the networks run.
            batch_size: crystals per forward pass.
            ids: one id per sample (default "0", "1", ...).
            compositions: from ``compositions_from_*``: rows ``offset`` … ``offset + n`` fix the
                elements of the samples (a model without composition control refuses them).
            offset: the first sample's index in the run.
            workers: processes for decoding (does not change the crystals).
            decode: how CrysTens tensors become crystals (models that decode otherwise ignore it).
            on_batch: called with a number of finished samples, n in all over the call.
            on_tensors: called with the raw CrysTens tensors (n, 4, size, size) before they are
                decoded, by the models that make them.
            **options: ``prepare``'s keyword arguments.
        """


class NoCompositionControl(ABC):
    """The composition helpers of a :class:`Generator` without composition control: they refuse."""

    @property
    @abstractmethod
    def kind(self) -> str:
        """The model directory's kind."""

    def compositions_from_formula(self, formula: str, n: int, *, num_atoms: int | None = None,
                                  seed: int | list[int] = 0) -> Compositions:
        """Refused (CrysgenError): this model cannot fix the elements of its samples."""
        raise self._no_control()

    def compositions_from_targets(self, targets: CrystalSet, per_target: int = 1) -> Compositions:
        """Refused (CrysgenError): this model cannot fix the elements of its samples."""
        raise self._no_control()

    def compositions_from_prior(self, prior: CrystalSet | CompositionModel, n: int, *,
                                substitute: str | None = None, seed: int | list[int] = 0,
                                ) -> tuple[Compositions, dict[str, int]]:
        """Refused (CrysgenError): this model cannot fix the elements of its samples."""
        raise self._no_control()

    def refuse_compositions(self, compositions: Compositions | None) -> None:
        """For ``generate``: refuse any compositions (CrysgenError); None passes."""
        if compositions is not None:
            raise self._no_control()

    def _no_control(self) -> CrysgenError:
        return CrysgenError("--formula, --compositions and --composition-prior need a model with "
                            "composition control (atom diffusion or single-stage CrysTens diffusion); "
                            f"this is a {self.kind} model")


def refuse_voxel_options(options: SampleOptions) -> None:
    """Refuse the options only a voxel VAE takes (CrysgenError)."""
    if (options.condition is not None or options.around is not None or options.interpolate is not None
            or options.prior != "standard" or options.merge_tol is not None):
        raise CrysgenError("--condition, --around, --interpolate, --prior and --merge-tol apply to voxel VAE "
                           "models only")


def refuse_atom_options(options: SampleOptions) -> None:
    """Refuse the options only an atom diffusion model takes (CrysgenError)."""
    if (options.space_group is not None or options.churn is not None or options.anneal_rho is not None
            or options.anneal_rho_lattice is not None
            or options.limit_element_count or options.symmetry_prior is not None
            or options.precision != "auto" or options.template_start is not None
            or options.template_ranker is not None or options.restart is not None
            or options.repair is not None or options.cell is not None):
        raise CrysgenError("--space-group, --churn, --anneal-rho(-lattice), --limit-element-count, "
                           "--symmetry-prior, --template-start, --template-ranker, --restart, --repair, "
                           "--cell and --precision "
                           "apply to atom diffusion models only")


def batch_size_for(device: str, *, cpu: int) -> int:
    """256 crystals per forward pass on CUDA, ``cpu`` on a CPU (a model's measured best of 16 and 64)."""
    return 256 if device.startswith("cuda") else cpu
