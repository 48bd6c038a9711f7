"""Compositions to sample under composition control, shared by every model that can take one.

A model with composition control (atom diffusion, single-stage CrysTens diffusion) is asked for
crystals of given elements per site: from a formula (``crysgen sample --formula LiFePO4``, the
number of formula units given or drawn from the training histogram of site counts), from
target crystals (``--compositions TARGETS.npz``: crystal structure prediction, one row per
target and repeat), or drawn from a prior (composition first, then structure): a set of known
crystals (``--composition-prior TRAIN.npz``, each optionally changed by one ion substitution,
``--substitute``) or a composition language model (``--composition-prior MODEL_DIR``,
:mod:`crysgen.models.composition_lm`). A formula's and a composition model's sites are listed
element by element in increasing atomic number; drawn and target crystals keep their own order
(``crysgen data prepare``'s: pymatgen's, by electronegativity). The atom model is permutation
equivariant, so there the order changes which noise a site gets, not the distribution sampled; a
CrysTens model is not (its rows are the sites in order).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crysgen.crystal_set import CrystalSet, reduced_formula
from crysgen.errors import CrysgenError
from crysgen.pipelines.seeding import torch_generator
from crysgen.representations.atoms import parse_formula

if TYPE_CHECKING:
    from crysgen.models.composition_lm import CompositionModel


@dataclass
class Compositions:
    """What to sample under composition control: elements per sample, and the target of each.

    Attributes:
        atomic_numbers: int (n, S), 0 = no site.
        targets: the id of the crystal each sample is meant to reproduce ("" if none).
        drawn: int (n,) for compositions drawn from a prior (:func:`from_prior`): the row of the
            crystal each was drawn from (before any substitution); None otherwise.
    """

    atomic_numbers: np.ndarray
    targets: list[str]
    drawn: np.ndarray | None = None


def from_formula(formula: str, n: int, *, max_sites: int, num_sites_counts: np.ndarray | None,
                 known_elements: set[int] | None = None, num_atoms: int | None = None,
                 seed: int | list[int] = 0) -> Compositions:
    """``n`` samples of one formula; the site count is ``num_atoms`` or drawn per sample.

    Args:
        formula: a reduced or full formula ("LiFePO4").
        n: samples.
        max_sites: S, the most sites the model makes.
        num_sites_counts: float (>= S + 1,): training crystals per site count (index = count);
            without ``num_atoms``, each sample's number of formula units is drawn from it
            restricted to multiples of the formula's size (None: the multiples equally likely).
        known_elements: the elements the model saw in training (others: a warning); None: no check.
        num_atoms: the site count of every sample.
        seed: seeds the draw.

    Raises:
        CrysgenError: for a bad formula, or a site count that is not a multiple of the formula's
            or exceeds S (or a formula with more atoms than S).
    """
    counts = parse_formula(formula)
    if known_elements is not None:
        warn_unseen(set(counts), known_elements, formula)
    size, s = sum(counts.values()), max_sites
    if num_atoms is not None:
        if num_atoms % size or num_atoms > s or num_atoms < 1:
            raise CrysgenError(f"--num-atoms {num_atoms} is not a multiple of {formula}'s {size} "
                               f"atoms up to the model's {s} sites")
        units = np.full(n, num_atoms // size)
    else:
        import torch

        mult = np.arange(1, s // size + 1)
        if not len(mult):
            raise CrysgenError(f"{formula} has {size} atoms; the model makes at most {s} sites")
        hist = np.ones(s + 1) if num_sites_counts is None else np.asarray(num_sites_counts, float)
        weights = hist[mult * size] + 1e-3
        gen = torch_generator(seed)
        units = mult[torch.multinomial(torch.as_tensor(weights / weights.sum()), n, replacement=True,
                                       generator=gen).numpy()]
    z = np.zeros((n, s), np.int64)
    cell = np.concatenate([np.full(c, el) for el, c in sorted(counts.items())])
    for i, u in enumerate(units):
        z[i, :u * size] = np.tile(cell, u)
    return Compositions(z, [formula] * n)


def from_targets(targets: CrystalSet, *, max_sites: int, per_target: int = 1,
                 known_elements: set[int] | None = None) -> Compositions:
    """One row per (target, repeat): each target crystal's elements and site count.

    Raises:
        CrysgenError: for targets with more sites than ``max_sites`` (elements unseen in
            training: a warning).
    """
    s = max_sites
    too_big = targets.num_sites > s
    if too_big.any():
        raise CrysgenError(f"{int(too_big.sum())} target crystals have more than the model's {s} sites")
    if known_elements is not None:
        warn_unseen({int(v) for v in np.unique(targets.atomic_numbers)} - {0}, known_elements, "the targets")
    z = np.zeros((len(targets), s), np.int64)
    w = min(s, targets.atomic_numbers.shape[1])
    z[:, :w] = targets.atomic_numbers[:, :w]
    return Compositions(np.repeat(z, per_target, axis=0),
                        [str(t) for t in np.repeat(targets.ids, per_target)])


def from_prior(prior: CrystalSet | CompositionModel, n: int, *, max_sites: int,
               known_elements: set[int] | None = None, substitute: str | None = None,
               seed: int | list[int] = 0) -> tuple[Compositions, dict[str, int]]:
    """``n`` compositions drawn from known crystals (each optionally changed by a substitution) or a model.

    A :class:`~crysgen.models.composition_lm.CompositionModel` prior is sampled
    (:func:`from_model`); the rest of this describes a CrystalSet prior.

    The draw is seeded and without replacement while ``n`` does not exceed the crystals that fit
    (with replacement beyond); the samples name no target (their structures are new, not
    predictions of the drawn crystals). With ``substitute``, each drawn composition takes one ion
    substitution (:func:`crysgen.data.substitution.substitute`) to an element the model knows and
    to a composition none of ``prior``'s crystals has; a composition without such a substitution
    stays as drawn.

    Args:
        prior: the crystals compositions are drawn from (typically the model's training set).
        n: samples.
        max_sites: S: crystals with more sites are not drawn.
        known_elements: the elements the model saw in training (None: any).
        substitute: None, or change each composition by one ion substitution drawn by
            "probability" (pymatgen's data-mined p(new | old)) or "mass-balanced" (those
            probabilities tilted so that the expected change of formula mass is zero).
        seed: seeds the draw and the substitutions.

    Returns:
        The compositions, and counts: ``drawn`` (n), ``substituted`` (rows changed),
        ``by_common_states`` (of those, rows without a charge-balanced oxidation-state guess).

    Raises:
        CrysgenError: if no crystal of ``prior`` fits in ``max_sites`` sites, for an unknown
            ``substitute`` (:func:`crysgen.data.substitution.substitute` refuses it), or for
            ``substitute`` with a model prior.
    """
    from crysgen.data.substitution import substitute as substitute_ions

    if not isinstance(prior, CrystalSet):
        if substitute:
            raise CrysgenError("--substitute changes compositions drawn from known crystals; a composition "
                               "model's are new already (give --composition-prior a CrystalSet .npz)")
        return from_model(prior, n, max_sites=max_sites, known_elements=known_elements, seed=seed)

    seeds = [seed] if isinstance(seed, int) else list(seed)
    pick = draw_rows(prior, n, max_sites=max_sites, seed=seed, what="--composition-prior")
    if known_elements is not None:
        warn_unseen({int(v) for v in np.unique(prior.atomic_numbers[pick])} - {0}, known_elements,
                    "--composition-prior")
    w = min(max_sites, prior.atomic_numbers.shape[1])
    z = np.zeros((n, max_sites), np.int64)
    z[:, :w] = prior.atomic_numbers[pick, :w]
    counts = {"drawn": n, "substituted": 0, "by_common_states": 0}
    if substitute:
        avoid = {reduced_formula(r) for r in prior.atomic_numbers[prior.num_sites > 0]}
        res = substitute_ions(z, allowed=known_elements, avoid=avoid, draw=substitute,
                              seed=[*seeds, 4])
        z = res.atomic_numbers
        counts |= {"substituted": int(res.changed.sum()), "by_common_states": res.by_common_states}
    return Compositions(z, [""] * n, drawn=pick), counts


def from_model(model: CompositionModel, n: int, *, max_sites: int, known_elements: set[int] | None = None,
               seed: int | list[int] = 0) -> tuple[Compositions, dict[str, int]]:
    """``n`` compositions sampled from a composition language model.

    Only elements the structure model knows are written (the composition model's others are
    masked out, with a warning naming them) and at most ``max_sites`` sites.

    Returns:
        The compositions (no target, no drawn row) and counts: ``drawn`` (n), ``sampled`` (n).

    Raises:
        CrysgenError: if the two models share no element.
    """
    seeds = [seed] if isinstance(seed, int) else list(seed)
    if known_elements is not None:
        dropped = set(model.elements) - known_elements
        if dropped:
            from pymatgen.core import Element

            names = ", ".join(Element.from_Z(z).symbol for z in sorted(dropped))
            warnings.warn(f"--composition-prior: the structure model never saw {names}; "
                          "compositions with them are not drawn", stacklevel=3)
    s = min(max_sites, model.net.cfg.max_sites)
    z = np.zeros((n, max_sites), np.int64)
    z[:, :s] = model.sample(n, max_sites=s, elements=known_elements,
                            generator=torch_generator([*seeds, 6]))
    return Compositions(z, [""] * n), {"drawn": n, "sampled": n}


BUNDLED_COMPOSITION_MODEL = Path(__file__).resolve().parents[1] / "pretrained" / "composition_mp20"
"""The composition model fitted to the mp_20 partial training split (``--composition-prior bundled``)."""


def prior_model_dir(path: str | None) -> Path | None:
    """The composition model directory a ``--composition-prior`` names ("bundled" or a folder), else None."""
    if path == "bundled":
        return BUNDLED_COMPOSITION_MODEL
    return Path(path) if path is not None and Path(path).is_dir() else None


def load_prior(path: str, device: str = "cpu") -> CrystalSet | CompositionModel:
    """The ``--composition-prior``: "bundled", a composition model directory, or a CrystalSet .npz.

    A composition model's network is moved to ``device``.

    Raises:
        CrysgenError: for a path that is neither (or a malformed one).
    """
    from crysgen.data.guards import check_input_file

    model_dir = prior_model_dir(path)
    if model_dir is not None:
        from crysgen.models.composition_lm import CompositionModel

        model = CompositionModel.from_pretrained(model_dir)
        model.net.to(device)
        return model
    check_input_file(path, "--composition-prior")
    return CrystalSet.load(path)


def draw_rows(prior: CrystalSet, n: int, *, max_sites: int, seed: int | list[int] = 0,
              what: str = "the prior") -> np.ndarray:
    """Int (n,) rows of ``prior`` drawn (seeded) among its crystals of 1 to ``max_sites`` sites.

    Without replacement while ``n`` does not exceed the crystals that fit, with replacement beyond.

    Raises:
        CrysgenError: if no crystal fits (``what`` names the option in the message).
    """
    fits = np.flatnonzero((prior.num_sites <= max_sites) & (prior.num_sites > 0))
    if not len(fits):
        raise CrysgenError(f"{what}: no crystal has at most the model's {max_sites} sites")
    seeds = [seed] if isinstance(seed, int) else list(seed)
    rng = np.random.default_rng([*seeds, 3])
    return fits[rng.choice(len(fits), n, replace=n > len(fits))]


def warn_unseen(elements: set[int], known: set[int], what: str) -> None:
    """Warn about elements the model never saw in training (expect less of their samples)."""
    unseen = sorted(elements - known)
    if unseen:
        from pymatgen.core import Element

        names = ", ".join(Element.from_Z(z).symbol for z in unseen)
        warnings.warn(f"{what}: the model never saw {names} in training", stacklevel=3)
