"""crysgen's atom diffusion transformer: the sampling loop of the saved model.

The model directory (kind ``atom_diffusion``: network and EDM settings, EMA weights and the
:class:`~crysgen.representations.atoms.AtomSetSpec`) is saved and loaded by
:class:`crysgen.models.atoms.AtomDiffusionBundle`; :class:`AtomDiffusionModel` adds sampling.

Sampling: the number of sites comes from the training histogram (de novo) or from a composition;
element codes and lattice start as N(0, σ_max²) noise and coordinates uniform on the torus; the
Karras σ schedule is EDM's (that of diffusers' ``EDMEulerScheduler``); each step is EDM's Heun step (with
optional churn), where the coordinates move along the periodic displacement and are wrapped back
into [0, 1). With a composition, the element codes are held at their clean values (crystal
structure prediction) and the decoder takes the elements as given.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError, require_non_negative
from crysgen.models.atoms import AtomDiffusionBundle
from crysgen.objectives.atom_edm import Constants, Parts, denoise, wrap
from crysgen.pipelines.collisions import colliding_sites
from crysgen.pipelines.compositions import Compositions, from_formula, from_prior, from_targets
from crysgen.pipelines.protocol import batch_size_for, refuse_voxel_options, restart_schedule
from crysgen.pipelines.seeding import torch_generator
from crysgen.pipelines.symmetry import (
    SymmetryBatch,
    Templates,
    fit_rows,
    match_templates,
    project,
    templates_of_rows,
)
from crysgen.representations.atoms import (
    AtomSets,
    decode,
    encode,
    lattice_features,
    nearest_elements,
    num_elements,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from crysgen.models.atoms import AtomEDMConfig
    from crysgen.models.composition_lm import CompositionModel
    from crysgen.pipelines.protocol import SampleOptions
    from crysgen.representations.crystens import DecodeResult
    from crysgen.representations.symmetry import SiteSymmetry

__all__ = ["AtomDiffusionModel", "Compositions", "edm_heun", "size_batches"]

RESTART_SEED = 1_000_003  # the restart rounds' noise streams: seeds [*seed, RESTART_SEED + round, i]
REPAIR_SEED = 2_000_003  # the repair rounds' noise streams: seeds [*seed, REPAIR_SEED + round, i]


class AtomDiffusionModel(AtomDiffusionBundle):
    """A trained atom diffusion transformer that samples: the saved bundle and the sampling loop.

    ``AtomDiffusionModel.from_pretrained(path)`` loads a model directory (see
    :class:`~crysgen.models.atoms.AtomDiffusionBundle`, which training writes).
    """

    # ------------------------------------------------------------------ compositions
    def compositions_from_formula(self, formula: str, n: int, *, num_atoms: int | None = None,
                                  seed: int | list[int] = 0) -> Compositions:
        """``n`` samples of one formula; see :func:`crysgen.pipelines.compositions.from_formula`.

        Without ``num_atoms``, each sample's number of formula units is drawn from the training
        histogram of site counts restricted to multiples of the formula's size.
        """
        return from_formula(formula, n, max_sites=self.spec.max_atoms,
                            num_sites_counts=np.asarray(self.spec.num_atoms_counts, float),
                            known_elements=set(self.spec.elements), num_atoms=num_atoms, seed=seed)

    def compositions_from_targets(self, targets: CrystalSet, per_target: int = 1) -> Compositions:
        """One row per (target, repeat); see :func:`crysgen.pipelines.compositions.from_targets`."""
        return from_targets(targets, max_sites=self.spec.max_atoms, per_target=per_target,
                            known_elements=set(self.spec.elements))

    def compositions_from_prior(self, prior: CrystalSet | CompositionModel, n: int, *,
                                substitute: str | None = None, seed: int | list[int] = 0,
                                ) -> tuple[Compositions, dict[str, int]]:
        """``n`` drawn compositions; see :func:`crysgen.pipelines.compositions.from_prior`."""
        return from_prior(prior, n, max_sites=self.spec.max_atoms, known_elements=set(self.spec.elements),
                          substitute=substitute, seed=seed)

    def check_space_group(self, space_group: int | None) -> None:
        """Refuse a space group this model cannot sample (CrysgenError); None passes."""
        if space_group is None:
            return
        if not self.net.cfg.space_groups:
            raise CrysgenError("this model was trained without space-group conditioning "
                               "(net.space_groups); --space-group needs one that was")
        if not 1 <= int(space_group) <= 230:
            raise CrysgenError(f"--space-group must be 1-230, got {space_group}")

    def default_batch_size(self, device: str) -> int:
        """256 on CUDA, 64 on a CPU (the faster of 16 and 64 measured on 2 cores)."""
        return batch_size_for(device, cpu=64)

    def prepare(self, options: SampleOptions, *, device: str = "cpu",
                compositions: Compositions | None = None) -> dict[str, Any]:
        """Steps, space group, guidance, churn, the element-count limit and symmetry templates.

        The churn is resolved: ``options.churn``, else the model's own ``edm.s_churn`` (what a
        bundled model sets as its sampler default), and so are the anti-annealing exponent
        (``edm.anneal_rho``), the collision repair (``edm.repair``; ``options.repair`` "off": none)
        and the precision ("auto": bf16 on
        CUDA, fp32 on a CPU), so the returned settings say what ran.
        With ``options.symmetry_prior``, ``templates`` holds every sample's template
        (:meth:`symmetry_templates`).

        Raises:
            CrysgenError: for options of voxel VAE models, a space group this model cannot
                sample, --limit-element-count for a model not conditioned on the count, and a
                missing or unusable --symmetry-prior.
        """
        refuse_voxel_options(options)
        self.check_space_group(options.space_group)
        if options.limit_element_count and not self.net.cfg.num_elements:
            raise CrysgenError("--limit-element-count applies to models conditioned on the number of "
                               "elements (net.num_elements); this one is not")
        templates = None
        if options.symmetry_prior is not None:
            self.refuse_beside_templates(options.space_group)  # before the prior is read
            templates = self.symmetry_templates(options, compositions)
        precision = options.precision
        if precision == "auto":
            precision = "bf16" if device.startswith("cuda") else "fp32"
        anneal = self.edm.anneal_rho if options.anneal_rho is None else float(options.anneal_rho)
        anneal_l = (self.edm.anneal_rho_lattice if options.anneal_rho_lattice is None
                    else float(options.anneal_rho_lattice))
        return {"steps": options.steps, "space_group": options.space_group, "guidance": options.guidance,
                "churn": self.edm.s_churn if options.churn is None else float(options.churn),
                "anneal_rho": anneal, "anneal_rho_lattice": anneal_l,
                "limit_element_count": options.limit_element_count, "templates": templates,
                "precision": precision, "template_start": options.template_start,
                "restart": self.checked_restart(options.restart),
                "repair": self.checked_restart(self.edm.repair if options.repair is None else
                                               None if isinstance(options.repair, str) else options.repair,
                                               flag="--repair"),
                "lattices": None if options.cell is None else self.given_cells(options)}

    def given_cells(self, options: SampleOptions) -> np.ndarray:
        """Float (n, 6) ``options.cell`` Niggli-reduced (the models' cell convention), once per sample.

        Raises:
            CrysgenError: without ``--formula`` and ``--num-atoms`` (the sites the cell holds), beside
                a symmetry prior, or for a cell that is not six numbers :func:`check_cells` takes.
        """
        from pymatgen.core import Lattice

        if options.formula is None or options.num_atoms is None:
            raise CrysgenError("--cell needs --formula and --num-atoms (the sites that cell holds)")
        if options.symmetry_prior is not None:
            raise CrysgenError("--cell cannot be combined with --symmetry-prior")
        cell = np.asarray(options.cell, np.float64)
        if cell.shape != (6,):
            raise CrysgenError(f"--cell takes six numbers a,b,c,alpha,beta,gamma; got {options.cell}")
        check_cells(cell[None], f"--cell {options.cell}")
        reduced = Lattice.from_parameters(*cell).get_niggli_reduced_lattice()
        return np.tile([*reduced.abc, *reduced.angles], (options.n, 1))

    def symmetry_templates(self, options: SampleOptions,
                           compositions: Compositions | None = None) -> Templates:
        """Every sample's symmetry template from ``options.symmetry_prior``.

        De novo: crystals drawn from the prior (seeded by ``options.seed``). With compositions
        drawn from the same file (--composition-prior): the crystal each was drawn from, fitted
        to its substituted elements. With other compositions (--compositions, --formula): the
        prior crystal that fits each best (:func:`~crysgen.pipelines.symmetry.match_templates`),
        or the one ``options.template_ranker`` scores highest.

        Raises:
            CrysgenError: for a missing or unreadable file, no crystal that fits the model, or a
                template ranker without given compositions.
        """
        from pathlib import Path

        from crysgen.data.guards import check_input_file
        from crysgen.pipelines.compositions import draw_rows

        assert options.symmetry_prior is not None  # the caller's condition
        check_input_file(options.symmetry_prior, "--symmetry-prior")
        ranker = None
        if options.template_ranker is not None:
            from crysgen.pipelines.template_ranking import load_ranker

            ranker = load_ranker(options.template_ranker)  # before the prior is read: fails fast
        prior = CrystalSet.load(options.symmetry_prior)
        same_file = (compositions is not None and compositions.drawn is not None
                     and options.composition_prior is not None
                     and Path(options.composition_prior).resolve() == Path(options.symmetry_prior).resolve())
        if ranker is not None and (compositions is None or same_file):
            raise CrysgenError("--template-ranker chooses the templates of given compositions "
                               "(--compositions, --formula, or a --composition-prior other than "
                               "--symmetry-prior)")
        if compositions is None:
            rows = draw_rows(prior, options.n, max_sites=self.spec.max_atoms, seed=[options.seed, 6],
                             what="--symmetry-prior")
            return templates_of_rows(prior, rows)
        if not same_file:
            return match_templates(compositions.atomic_numbers, prior, ranker=ranker)
        assert compositions.drawn is not None  # same_file's condition
        return fit_rows(prior, compositions.drawn.tolist(), compositions.atomic_numbers)

    def refuse_beside_templates(self, space_group: int | None) -> None:
        """Refuse symmetry templates with a space group or on an element-count model (CrysgenError).

        Each template brings its own space group, and a ``net.num_elements`` model draws its
        element counts with site counts that a template would overrule.
        """
        if self.net.cfg.num_elements:
            raise CrysgenError("symmetry templates (--symmetry-prior) are not available for models "
                               "conditioned on the number of elements (net.num_elements)")
        if space_group is not None:
            raise CrysgenError("--space-group and --symmetry-prior exclude each other (each template "
                               "brings its own space group)")

    def check_templates(self, templates: Templates, n: int, atomic_numbers: np.ndarray | None,
                        space_group: int | None = None) -> None:
        """Refuse templates that do not fit the samples or the model (CrysgenError).

        One per sample, at most S sites each, with given elements as many sites as each row, and
        nothing :meth:`refuse_beside_templates` refuses.
        """
        self.refuse_beside_templates(space_group)
        if len(templates) != n:
            raise CrysgenError(f"{len(templates)} symmetry templates for {n} samples")
        sizes = templates.num_sites
        if sizes.max(initial=0) > self.spec.max_atoms:
            raise CrysgenError(f"a symmetry template has more than the model's {self.spec.max_atoms} sites")
        if atomic_numbers is not None:
            real = (np.asarray(atomic_numbers) > 0).sum(1)
            if np.any((sizes > 0) & (sizes != real)):
                raise CrysgenError("a symmetry template has another number of sites than its composition")

    def check_template_start(self, sigma: float, templates: Templates | None,
                             atomic_numbers: np.ndarray | None) -> None:
        """Refuse a template start without templates or given elements, or outside (σ_min, σ_max]."""
        if templates is None:
            raise CrysgenError("--template-start needs symmetry templates (--symmetry-prior)")
        if atomic_numbers is None:
            raise CrysgenError("--template-start needs the elements given (--compositions, --formula or "
                               "--composition-prior): a template's own elements are not kept")
        if not self.edm.sigma_min < sigma <= self.edm.sigma_max:
            raise CrysgenError(f"--template-start must lie in ({self.edm.sigma_min:g}, "
                               f"{self.edm.sigma_max:g}] (this model's σ range), got {sigma:g}")

    def checked_restart(self, restart: tuple[float, int, int] | None, *,
                        flag: str = "--restart") -> tuple[float, int, int] | None:
        """``restart`` (any form :func:`restart_schedule` takes) as (σ, steps, rounds) or None.

        ``flag`` names the option in messages (``--restart``, ``--repair``: the same form).

        Raises:
            CrysgenError: for what :func:`restart_schedule` refuses, or σ outside this model's range
                (σ_min, σ_max].
        """
        checked = restart_schedule(restart, flag=flag)
        if checked is not None and not self.edm.sigma_min < checked[0] <= self.edm.sigma_max:
            raise CrysgenError(f"{flag}'s σ must lie in ({self.edm.sigma_min:g}, {self.edm.sigma_max:g}] "
                               f"(this model's σ range), got {checked[0]:g}")
        return checked

    def template_parts(self, symmetries: list[SiteSymmetry | None], width: int, dim: int) -> Parts:
        """The templates' own coordinates and cells as clean parts of width W (element codes zero).

        Raises:
            CrysgenError: for a template without its cell (``SiteSymmetry.cell``).
        """
        b = len(symmetries)
        frac = np.zeros((b, width, 3), np.float32)
        cells = np.zeros((b, 6))
        sites = np.ones(b, np.int64)
        for j, sym in enumerate(symmetries):
            if sym is None or sym.cell is None:
                raise CrysgenError("a symmetry template without its cell cannot be a starting point")
            frac[j, :sym.num_sites] = np.mod(sym.positions, 1.0)
            cells[j], sites[j] = sym.cell, sym.num_sites
        feats = lattice_features(cells, sites, self.spec).astype(np.float32)
        return Parts(torch.zeros(b, width, dim), torch.as_tensor(frac), torch.as_tensor(feats))

    def draw_num_atoms(self, n: int, seed: int | list[int] = 0) -> np.ndarray:
        """Int (n,) site counts from the training histogram."""
        return _draw(np.asarray(self.spec.num_atoms_counts, float), n, seed)

    def draw_tokens(self, n: int, seed: int | list[int] = 0) -> np.ndarray:
        """Int (n,) numbers of tokens (sites plus empty sites) for a model with ``edm.empty_sites``.

        Their histogram is the one training made: each crystal's sites plus 0 to
        ``edm.empty_sites`` empty ones, uniformly (the site histogram convolved with that).
        """
        counts = np.convolve(np.asarray(self.spec.num_atoms_counts, float), np.ones(self.edm.empty_sites + 1))
        return _draw(counts, n, seed)

    def draw_sizes(self, n: int, seed: int | list[int] = 0) -> tuple[np.ndarray, np.ndarray]:
        """Int (n,) site counts and (n,) distinct-element counts, drawn jointly.

        They come from the training histogram ``spec.size_counts``.

        Raises:
            CrysgenError: when the spec has no such histogram.
        """
        counts = np.asarray(self.spec.size_counts, float)
        if counts.size == 0 or counts.sum() == 0:
            raise CrysgenError("this model's atoms.json has no size_counts (sites x elements) histogram")
        flat = _draw(counts.ravel(), n, seed)
        return flat // counts.shape[1], flat % counts.shape[1]

    # ------------------------------------------------------------------ sampling
    def sample_sets(self, n: int, *, steps: int = 50, seed: int | list[int] = 0, device: str = "cpu",
                    batch_size: int = 256, atomic_numbers: np.ndarray | None = None,
                    progress: bool = False, on_batch: Any = None, space_group: int | None = None,
                    guidance: float = 1.0, churn: float | None = None, anneal_rho: float | None = None,
                    anneal_rho_lattice: float | None = None, templates: Templates | None = None,
                    precision: str = "fp32", template_start: float | None = None,
                    restart: tuple[float, int, int] | None = None,
                    repair: tuple[float, int, int] | None = None,
                    lattices: np.ndarray | None = None) -> AtomSets:
        """``n`` generated atom sets (element codes still continuous; see :func:`decode`).

        Args:
            n: how many.
            steps: Heun steps (about 2 network evaluations each).
            seed: seeds the noise: crystal i draws its own from a CPU generator seeded
                ``[*seed, i]`` (:func:`crystal_noise`), so neither the device nor the batching
                changes which crystals come out (beyond float rounding).
            device: where the network runs.
            batch_size: crystals per forward pass: on a CPU, batches also group crystals of
                similar size (:func:`size_batches`), on a GPU (where a forward pass costs its
                kernel launches more than its padding) every batch is padded to its largest crystal.
            atomic_numbers: int (n, S) given elements per sample (composition control), or None.
            progress: a progress bar over batches.
            on_batch: called with the number of crystals after every batch (for a caller's bar).
            space_group: 1-230: sample that space group (classifier-free guidance; the model
                must have been trained with ``net.space_groups``); None: unconditional.
                A ``net.num_elements`` model is always conditioned on each sample's number of
                distinct elements: drawn with its number of sites from the training histogram,
                or counted in ``atomic_numbers``.
            guidance: the guidance weight w: D = D_none + w (D_group - D_none); 1 uses the
                conditional denoiser alone (one network evaluation).
            churn: EDM's S_churn (fresh noise before every step, σ raised by up to √2; 0:
                deterministic); None: the model's own setting.
            anneal_rho: anti-annealing: the coordinates' and the lattice's steps lengthened as
                :func:`anneal_factors` says (0: off); None: the model's own ``edm.anneal_rho``.
            anneal_rho_lattice: the lattice's own exponent; None: the model's
                ``edm.anneal_rho_lattice`` (None there: the coordinates' exponent).
            templates: per sample a symmetry to keep (:mod:`crysgen.pipelines.symmetry`): every
                denoised estimate is projected onto it, a de novo sample takes its number of
                sites, and a ``net.space_groups`` model is conditioned on its space group (with
                ``guidance``); None, or a None template: no symmetry.
            precision: the network's arithmetic: "fp32", or "bf16" (autocast around the network
                alone; the sampler's steps and the projection stay float32).
            template_start: σ to start from each sample's template crystal instead of from noise
                (its own coordinates and cell, noised to this σ, then ``steps`` Heun steps from
                it down to σ_min; :func:`edm_heun`'s ``start``): with given elements, the
                template refined by the model. Samples without a template start from noise.
                None: every sample from noise.
            restart: (σ, steps, rounds): each finished sample is noised again to σ (coordinates,
                lattice and, de novo, element codes; fresh noise from a CPU generator seeded
                ``[*seed, RESTART_SEED + round, i]``) and sampled back down to σ_min with
                ``steps`` Heun steps, ``rounds`` times (restart sampling, Xu et al. 2023: the
                added noise contracts the errors the first pass made above σ); given elements and
                templates stay as they were. None: one pass.
            repair: (σ, steps, rounds): after the passes above, each sample with two real sites
                closer than 0.5 Å (:func:`~crysgen.pipelines.collisions.colliding_sites`) is
                sampled again from σ like a restart, the later site of every such pair started
                from a fresh uniform position (the same stream as its restart noise,
                ``[*seed, REPAIR_SEED + round, i]``); up to ``rounds`` times, each round only the
                samples still colliding. Samples without a collision are left as they are.
                None: no repair.
            lattices: float (n, 6) cells a, b, c (Å), α, β, γ (degrees) to hold fixed (in the
                model's cell convention: Niggli-reduced for the shipped models), e.g. a cell
                indexed from a powder pattern: only the sites are sampled (:func:`edm_heun`'s
                ``given_lattice``). None: the lattice is sampled.

        Raises:
            CrysgenError: for a space group outside 1-230, a model without space-group input,
                a negative churn, templates for another number of samples or sites, templates
                with a model conditioned on the number of elements, an unknown precision, or a
                template start without templates, without given elements or outside the
                model's σ range, a restart or repair σ outside it, or unusable ``lattices``.
        """
        from tqdm.auto import tqdm

        self.check_space_group(space_group)
        require_non_negative({"--churn": churn, "--anneal-rho": anneal_rho,
                              "--anneal-rho-lattice": anneal_rho_lattice})
        edm = self.edm if churn is None else replace(self.edm, s_churn=float(churn))
        edm = edm if anneal_rho is None else replace(edm, anneal_rho=float(anneal_rho))
        if anneal_rho_lattice is not None:
            edm = replace(edm, anneal_rho_lattice=float(anneal_rho_lattice))
        empty = self.edm.empty_sites if atomic_numbers is None else 0
        s = self.spec.max_atoms + empty
        seeds = [int(v) for v in np.atleast_1d(seed)]
        count_elements = self.net.cfg.num_elements
        if empty and count_elements:
            raise CrysgenError("a model with empty sites cannot also be conditioned on its number of "
                               "elements")
        elements = None
        template_groups = None
        if templates is not None:
            self.check_templates(templates, n, atomic_numbers, space_group)
            if self.net.cfg.space_groups:
                template_groups = np.array([0 if t is None else t.space_group for t in templates.symmetries])
        if template_start is not None:
            self.check_template_start(template_start, templates, atomic_numbers)
        restart = self.checked_restart(restart)
        repair = self.checked_restart(repair, flag="--repair")
        if atomic_numbers is None:
            size_seed = [*np.atleast_1d(seed).tolist(), 1]
            if count_elements:
                num, elements = self.draw_sizes(n, seed=size_seed)
            elif empty:
                num = self.draw_tokens(n, seed=size_seed)
            else:
                num = self.draw_num_atoms(n, seed=size_seed)
            if templates is not None:
                num = np.where(templates.num_sites > 0, templates.num_sites, num)
            mask = np.arange(s)[None] < num[:, None]
            z = None
        else:
            z = np.asarray(atomic_numbers, np.int64)
            mask = z > 0
            elements = num_elements(z) if count_elements else None
        if lattices is not None and empty:
            raise CrysgenError("a given cell needs given elements with a model that has empty sites")
        held = None if lattices is None else self.held_lattices(lattices, mask, templates)
        codes = torch.as_tensor(self.spec.codes())
        if precision not in ("fp32", "bf16"):
            raise CrysgenError(f"precision must be fp32 or bf16, got {precision!r}")
        net: torch.nn.Module = self.net.to(device).eval()
        if precision == "bf16":
            net = InBf16(net, torch.device(device).type)
        consts = Constants.from_spec(self.spec)
        dim = codes.shape[1]
        out_t = np.zeros((n, s, dim), np.float32)
        out_f = np.zeros((n, s, 3), np.float32)
        out_l = np.zeros((n, 6), np.float32)
        out_r = np.zeros(n, np.int64)  # repair rounds per sample
        width = np.where(mask.any(1), s - np.argmax(mask[:, ::-1], 1), 0)  # sites up to the last real one
        slack = 1.25 if torch.device(device).type == "cpu" else float("inf")
        has_template = np.zeros(n, bool)
        if template_start is not None and templates is not None:
            has_template = np.array([t is not None for t in templates.symmetries], bool)
        parts = [part for batch in size_batches(width, batch_size, slack=slack)
                 for part in (batch[has_template[batch]], batch[~has_template[batch]]) if len(part)]
        for idx in tqdm(parts, disable=not progress, desc="sample", unit="batch"):
            w = max(int(width[idx].max()), 1)  # padding beyond every crystal of the batch is cut off
            m = torch.as_tensor(mask[idx, :w])
            b = len(idx)
            noise, steps_noise = crystal_noise(seeds, idx, width[idx], w, dim,
                                               steps if edm.s_churn > 0 else 0)
            start, edm_batch = None, edm
            if has_template[idx[0]]:
                assert templates is not None and template_start is not None  # has_template's condition
                start = self.template_parts([templates.symmetries[i] for i in idx], w, dim)
                edm_batch = replace(edm, sigma_max=float(template_start))
            given = None if z is None else codes[torch.as_tensor(z[idx, :w])]
            conditions = {}
            if space_group is not None:
                conditions["space_group"] = torch.full((b,), int(space_group), dtype=torch.long)
            elif template_groups is not None:  # each sample conditioned on its template's group
                conditions["space_group"] = torch.as_tensor(template_groups[idx], dtype=torch.long)
            if elements is not None:
                conditions["num_elements"] = torch.as_tensor(elements[idx], dtype=torch.long)
            symmetry = (None if templates is None
                        else SymmetryBatch.of([templates.symmetries[i] for i in idx], w))
            held_l = None if held is None else torch.as_tensor(held[idx])
            with torch.no_grad():
                x = edm_heun(net, noise, m, given, edm_batch, consts, steps=steps, device=device,
                             churn_noise=steps_noise, conditions=conditions, guidance=guidance,
                             symmetry=symmetry, start=start, given_lattice=held_l)
                if restart is not None:
                    sigma_r, steps_r, rounds = restart
                    for r in range(rounds):
                        noise, steps_noise = crystal_noise([*seeds, RESTART_SEED + r], idx, width[idx], w,
                                                           dim, steps_r if edm.s_churn > 0 else 0)
                        x = edm_heun(net, noise, m, given, replace(edm, sigma_max=sigma_r), consts,
                                     steps=steps_r, device=device, churn_noise=steps_noise,
                                     conditions=conditions, guidance=guidance, symmetry=symmetry, start=x,
                                     given_lattice=held_l)
                if repair is not None:
                    x, rounds_done = self.repaired(x, net, m, given, edm, consts, repair, seeds=seeds,
                                                   rows=idx, width=width[idx], dim=dim, device=device,
                                                   conditions=conditions, guidance=guidance,
                                                   symmetry=symmetry, given_lattice=held_l)
                    out_r[idx] = rounds_done
            out_t[idx, :w] = x.types.cpu().numpy()
            out_f[idx, :w] = x.frac.cpu().numpy()
            out_l[idx] = x.lattice.cpu().numpy()
            if on_batch is not None:
                on_batch(b)
        return AtomSets(out_t, out_f, out_l, mask, np.zeros_like(mask, np.int64) if z is None else z,
                        num_elements=elements if z is None else None,
                        repair_rounds=None if repair is None else out_r)

    def held_lattices(self, lattices: np.ndarray, mask: np.ndarray,
                      templates: Templates | None) -> np.ndarray:
        """Float32 (n, 6) standardised features of the cells to hold (``sample_sets``' ``lattices``).

        Raises:
            CrysgenError: for another number of cells than samples, cells :func:`check_cells`
                refuses, or cells beside symmetry templates (whose metric the projection sets).
        """
        cells = np.asarray(lattices, np.float64)
        if cells.shape != (len(mask), 6):
            raise CrysgenError(f"expected one cell (a, b, c, alpha, beta, gamma) per sample, {len(mask)} "
                               f"in all; got an array of shape {cells.shape}")
        check_cells(cells, "a given cell")
        if templates is not None:
            raise CrysgenError("a given cell cannot be combined with symmetry templates")
        return lattice_features(cells, mask.sum(1), self.spec).astype(np.float32)

    def repaired(self, x: Parts, net: torch.nn.Module, mask: torch.Tensor, given: torch.Tensor | None,
                 edm: AtomEDMConfig, consts: Constants,
                 repair: tuple[float, int, int], *, seeds: list[int], rows: np.ndarray, width: np.ndarray,
                 dim: int, device: str, conditions: dict[str, torch.Tensor], guidance: float,
                 symmetry: SymmetryBatch | None,
                 given_lattice: torch.Tensor | None = None) -> tuple[Parts, np.ndarray]:
        """One sampled batch with its colliding samples sampled again (``sample_sets``' ``repair``).

        Args:
            x: the batch as sampled, (B, W, ·) parts on ``device``.
            net: the denoiser (as the first pass ran it).
            mask: bool (B, W) the sites the sampler holds (de novo with empty sites, those whose
                element code is nearest to no element's are no atoms, read afresh every round).
            given: (B, W, D) given element codes, or None.
            edm: the sampler's settings (churn, annealing) of the first pass.
            consts: data statistics.
            repair: (σ, steps, rounds).
            seeds: the run's seed.
            rows: int (B,) the samples' indices in the run (their noise streams).
            width: int (B,) sites each sample needs.
            dim: the element code size.
            device: where the network runs.
            conditions: the first pass's conditions, int (B,) each.
            guidance: the first pass's guidance weight.
            symmetry: the first pass's templates, or None.
            given_lattice: (B, 6) the first pass's held lattice features, or None.

        Returns:
            The batch with every repaired sample replaced (the rest bit for bit as given), and
            int (B,) the rounds in which each sample was sampled again (0: never).
        """
        sigma, steps, rounds = repair
        mask = mask.to(device)
        symmetry = None if symmetry is None else symmetry.to(device)
        done = np.zeros(len(rows), np.int64)
        for r in range(rounds):
            real = mask
            if given is None and self.edm.empty_sites:  # a de novo model's empty sites are no atoms
                codes = x.types.float().cpu().numpy()
                atoms = nearest_elements(codes, [0, *self.spec.elements], self.spec) > 0
                real = mask & torch.as_tensor(atoms, device=device)
            hit = colliding_sites(x, mask, consts, real=real)
            redo = hit.any(1).nonzero().flatten()
            if not len(redo):
                break
            sub = redo.cpu().numpy()
            done[sub] += 1
            noise, churn = crystal_noise([*seeds, REPAIR_SEED + r], rows[sub], width[sub], mask.shape[1], dim,
                                         steps if edm.s_churn > 0 else 0)
            moved = torch.where(hit[redo][..., None], noise[1].to(device), x.frac[redo])  # fresh uniform
            start = Parts(x.types[redo], moved, x.lattice[redo])
            sym = None if symmetry is None else symmetry.rows(redo)
            y = edm_heun(net, noise, mask[redo], None if given is None else given[sub],
                         replace(edm, sigma_max=sigma), consts, steps=steps, device=device, churn_noise=churn,
                         conditions={k: v[sub] for k, v in conditions.items()}, guidance=guidance,
                         symmetry=sym, start=start,
                         given_lattice=None if given_lattice is None else given_lattice[sub])
            x = Parts(*(a.index_copy(0, redo, b.to(a.dtype)) for a, b in zip(x, y, strict=True)))
        return x, done

    def generate(self, n: int, *, steps: int = 50, seed: int | list[int] = 0, device: str = "cpu",
                 batch_size: int = 256, ids: list[str] | None = None,
                 compositions: Compositions | None = None, offset: int = 0,
                 on_batch: Callable[[int], None] | None = None, space_group: int | None = None,
                 guidance: float = 1.0, churn: float | None = None, anneal_rho: float | None = None,
                 anneal_rho_lattice: float | None = None,
                 limit_element_count: bool = False, templates: Templates | None = None,
                 precision: str = "fp32", template_start: float | None = None,
                 restart: tuple[float, int, int] | None = None,
                 repair: tuple[float, int, int] | None = None,
                 lattices: np.ndarray | None = None, **_: Any) -> DecodeResult:
        """``n`` crystals as a CrysTens-style ``DecodeResult`` (what `crysgen sample` writes out).

        ``compositions`` (rows ``offset`` … ``offset + n``) fixes the elements of every sample;
        ``space_group``, ``guidance``, ``churn``, ``anneal_rho(_lattice)`` and ``precision``: see
        :meth:`sample_sets`;
        ``templates`` (rows ``offset`` … ``offset + n``, from :meth:`prepare` with
        ``--symmetry-prior``), ``template_start``, ``restart`` and ``repair`` too; ``lattices``
        (rows ``offset`` … ``offset + n``) cells to hold fixed. Every site snaps to
        its nearest element, unless ``limit_element_count``: then a ``net.num_elements`` model's de
        novo samples snap to at most the number of distinct elements each was conditioned on
        (:func:`~crysgen.representations.atoms.nearest_elements_at_most`; on mp_20 this halved
        W(#elements) and cost compositional validity). The rest as in
        :class:`~crysgen.pipelines.protocol.Generator` (``workers``, CrysTens ``decode`` options
        and ``on_tensors`` unused: the decoder runs in this process and makes no tensors).
        """
        from crysgen.pipelines.voxel import as_decode_result

        z = None if compositions is None else compositions.atomic_numbers[offset:offset + n]
        rows = None if templates is None else Templates(templates.symmetries[offset:offset + n],
                                                        templates.sources[offset:offset + n])
        sets = self.sample_sets(n, steps=steps, seed=seed, device=device, batch_size=batch_size,
                                atomic_numbers=z, on_batch=on_batch, space_group=space_group,
                                guidance=guidance, churn=churn, anneal_rho=anneal_rho,
                                anneal_rho_lattice=anneal_rho_lattice, templates=rows, precision=precision,
                                template_start=template_start, restart=restart, repair=repair,
                                lattices=None if lattices is None else lattices[offset:offset + n])
        res = decode(sets, self.spec, ids=ids, atomic_numbers=z,
                     max_elements=sets.num_elements if limit_element_count else None,
                     empty_sites=self.edm.empty_sites > 0 and z is None)
        return replace(as_decode_result(res, n), repair_rounds=sets.repair_rounds)

    def encode(self, crystals: CrystalSet) -> AtomSets:
        """The model's encoding of crystals (in the cells given).

        The shipped models train on Niggli-reduced cells (``data.niggli``): a crystal meant for the
        denoiser (a start, a template, a benchmark target) should be reduced first with
        :func:`~crysgen.representations.atoms.niggli_reduce`; in another cell convention the network
        misplaces atoms it would otherwise restore (docs/atom_diffusion.md).
        """
        return encode(crystals, self.spec)


def check_cells(cells: np.ndarray, what: str) -> None:
    """Refuse cells a, b, c (Å), α, β, γ (degrees) (N, 6) that no crystal can have.

    Raises:
        CrysgenError: naming ``what``, for a number that is not finite, a length that is not
            positive, an angle outside (0, 180) degrees, or angles no three vectors meet at (the
            metric's determinant over (abc)² not positive: no volume).
    """
    if not np.isfinite(cells).all() or (cells[:, :3] <= 0).any() or (cells[:, 3:] <= 0).any() \
            or (cells[:, 3:] >= 180).any():
        raise CrysgenError(f"{what} needs finite positive lengths (Å) and angles strictly between 0 and "
                           "180 degrees")
    ca, cb, cg = np.cos(np.radians(cells[:, 3:])).T
    if not (1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg > 1e-9).all():
        raise CrysgenError(f"{what} has no volume (no three vectors meet at these angles)")


def _draw(counts: np.ndarray, n: int, seed: int | list[int]) -> np.ndarray:
    """Int (n,) indices into a histogram of counts, drawn with replacement in proportion."""
    p = torch.as_tensor(counts)
    return torch.multinomial(p / p.sum(), n, replacement=True, generator=torch_generator(seed)).numpy()


def crystal_noise(seed: list[int], rows: np.ndarray, sites: np.ndarray, width: int, dim: int, steps: int,
                  ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None]:
    """Every crystal's own sampling noise, padded into one batch.

    Crystal ``rows[j]`` draws from a CPU generator seeded ``[*seed, rows[j]]``, for its own
    ``sites[j]`` sites only: uniform coordinates first, then unit normal element codes and
    lattice, then (``steps`` > 0) the churn noise of every step. So a crystal's noise depends
    neither on the batch it is sampled in nor on the device, and its starting point not on the
    churn.

    Args:
        seed: the run's seed (e.g. ``[seed, chunk]``).
        rows: int (B,) the crystals' indices in the run.
        sites: int (B,) their numbers of sites (up to the last real one).
        width: W ≥ max(sites), the batch's padded width.
        dim: D, the element code size.
        steps: sampler steps that take churn noise (0: none).

    Returns:
        ((element codes (B, W, D), coordinates (B, W, 3), lattice (B, 6)), churn noise
        (steps, B, W·(D+3)+6) in :func:`edm_heun`'s layout, or None); padding sites are zero.
    """
    b = len(rows)
    types, frac, lattice = torch.zeros(b, width, dim), torch.zeros(b, width, 3), torch.empty(b, 6)
    churn_t, churn_f, churn_l = (torch.zeros(steps, b, width, dim), torch.zeros(steps, b, width, 3),
                                 torch.empty(steps, b, 6))
    for j, (row, k) in enumerate(zip(np.asarray(rows).tolist(), np.asarray(sites).tolist(), strict=True)):
        gen = torch_generator([*seed, row])
        frac[j, :k] = torch.rand(k, 3, generator=gen)
        start = torch.randn(k * dim + 6, generator=gen)
        types[j, :k] = start[:k * dim].view(k, dim)
        lattice[j] = start[k * dim:]
        if steps:
            per_step = torch.randn(steps, k * (dim + 3) + 6, generator=gen)
            churn_t[:, j, :k] = per_step[:, :k * dim].view(steps, k, dim)
            churn_f[:, j, :k] = per_step[:, k * dim:k * (dim + 3)].view(steps, k, 3)
            churn_l[:, j] = per_step[:, k * (dim + 3):]
    churn = (torch.cat([churn_t.reshape(steps, b, -1), churn_f.reshape(steps, b, -1), churn_l], -1)
             if steps else None)
    return (types, frac, lattice), churn


def size_batches(width: np.ndarray, batch_size: int, *, slack: float = 1.25) -> list[np.ndarray]:
    """Batches of crystals of similar size, so that little of each batch is padding.

    Crystals are taken in order of size (stable) and a batch is closed when it holds
    ``batch_size`` crystals or when padding everything to the next crystal's size would make its
    sites exceed ``slack`` times the real ones.

    Args:
        width: int (n,) sites each crystal needs (up to its last real site).
        batch_size: most crystals per batch.
        slack: padded sites allowed per real site.

    Returns:
        Index arrays into ``width`` covering every crystal once.
    """
    order = np.argsort(width, kind="stable")
    batches: list[np.ndarray] = []
    start, real = 0, 0
    for i, k in enumerate(order):
        size = max(int(width[k]), 1)
        if i > start and (i - start >= batch_size or (i - start + 1) * size > slack * (real + size)):
            batches.append(order[start:i])
            start, real = i, 0
        real += size
    if len(order):
        batches.append(order[start:])
    return batches


def anneal_factors(steps: int, sigma_min: float, sigma_max: float, rho: float,
                   anneal_rho: float) -> list[float]:
    """Per sampler step, how much longer the coordinates' and the lattice's move is (anti-annealing).

    Step i's factor is max(1, |Δσ_i of a Karras schedule of exponent ``anneal_rho``| / |Δσ_i of
    the sampling schedule of exponent ``rho``|), both over the same ``steps`` levels from
    ``sigma_max`` to ``sigma_min`` (the last step, to σ = 0, spans σ_min in both: factor 1).
    With ``anneal_rho`` < ``rho`` the factors grow towards low σ, so the sampler moves sites
    further towards the denoised estimate than the schedule asks: over-denoising, like sampling
    at a lower temperature. The sampler stops each lengthened move at the estimate itself (a move
    of at most σ), which with few steps the factors alone would overshoot (R = 4 against ρ = 7:
    3.5x the way at 10 steps, 1.3x at 50).

    Args:
        steps: sampler steps.
        sigma_min: smallest σ.
        sigma_max: largest σ.
        rho: the sampling schedule's exponent.
        anneal_rho: the exponent of the schedule whose steps set the length; 0: off (all 1).

    Returns:
        ``steps`` factors, each at least 1.
    """
    if anneal_rho <= 0:
        return [1.0] * steps
    base = karras_sigmas(steps, sigma_min, sigma_max, rho)
    alt = karras_sigmas(steps, sigma_min, sigma_max, anneal_rho)
    return [max(1.0, abs(alt[i + 1] - alt[i]) / abs(base[i + 1] - base[i])) for i in range(steps)]


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """EDM's σ levels (Karras et al. 2022, eq. 5), from σ_max down to σ_min, then 0: ``steps + 1`` values.

    The same float32 values as diffusers' ``EDMEulerScheduler(...).set_timesteps(steps).sigmas``
    (tested), computed here because importing diffusers takes about 5 s of a CPU sampling run.
    """
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = ((hi + ramp * (lo - hi)) ** rho).to(torch.float32)  # computed in float64, kept in float32
    return [*sigmas.to(torch.float64).tolist(), 0.0]


class InBf16(torch.nn.Module):
    """A network run under bf16 autocast (as Lightning's ``bf16-mixed`` trained it).

    Only the network's matrix products run in bf16; the caller casts its outputs to float32
    (:func:`~crysgen.objectives.atom_edm.denoise`), so the sampler's steps stay float32.
    """

    def __init__(self, net: torch.nn.Module, device_type: str) -> None:
        super().__init__()
        self.net = net
        self.device_type = device_type

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The network's forward under autocast."""
        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
            return self.net(*args, **kwargs)


def edm_heun(net: torch.nn.Module, noise: tuple[torch.Tensor, torch.Tensor, torch.Tensor], mask: torch.Tensor,
             given: torch.Tensor | None, cfg: AtomEDMConfig, consts: Constants, *, steps: int,
             device: str, churn_noise: torch.Tensor | None = None,
             conditions: dict[str, torch.Tensor] | None = None, guidance: float = 1.0,
             symmetry: SymmetryBatch | None = None, start: Parts | None = None,
             given_lattice: torch.Tensor | None = None) -> Parts:
    """EDM's stochastic Heun sampler (Karras et al. 2022, Alg. 2) on atom sets.

    Args:
        net: the denoiser.
        noise: unit normal element codes (B, S, D), uniform coordinates (B, S, 3), unit normal
            lattice (B, 6), drawn by the caller (CPU generator).
        mask: bool (B, S).
        given: (B, S, D) clean element codes to hold fixed, or None.
        cfg: EDM settings (σ range, ρ, churn).
        consts: data statistics.
        steps: number of σ levels before 0.
        device: where to run.
        churn_noise: (steps, B, S·(D+3)+6) unit normals for the churn (used when s_churn > 0).
        conditions: int (B,) tensors by the network's keyword (``space_group``,
            ``num_elements``); none: unconditional.
        guidance: classifier-free guidance weight (1: the conditional denoiser alone; else
            D = D_none + w (D_cond - D_none), D_none with every condition withheld).
        symmetry: the samples' templates: every denoised estimate, and the result, is projected
            onto them (:func:`crysgen.pipelines.symmetry.project`); None: no projection.
        start: clean parts to start from (SDEdit, Meng et al. 2022): noised to σ = ``cfg.sigma_max``
            with the same unit noise (the coordinates' uniform draw u taken through the normal
            quantile Φ⁻¹(u), wrapped), so the sampler refines them over the σ levels below;
            None: from pure noise (coordinates uniform).
        given_lattice: (B, 6) clean standardised lattice features to hold fixed, or None: the
            network sees them noised to each step's σ with the crystal's own lattice noise
            (``noise[2]``; replacement, as in inpainting), and the result carries them unchanged.

    Returns:
        The final denoised parts (coordinates in [0, 1)).
    """
    sigmas = karras_sigmas(steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)
    mask = mask.to(device)
    symmetry = None if symmetry is None else symmetry.to(device)
    m = mask[..., None].float()
    b = len(mask)
    is_given = torch.full((b,), given is not None, device=device)
    types = given.to(device) if given is not None else noise[0].to(device) * sigmas[0]
    if start is None:
        x = Parts(types * m, noise[1].to(device) * m, noise[2].to(device) * sigmas[0])
    else:
        gauss = torch.special.ndtri(noise[1].clamp(1e-6, 1 - 1e-6)).to(device)
        if given is None:
            types = start.types.to(device) + types
        x = Parts(types * m, wrap(start.frac.to(device) + sigmas[0] * gauss) * m,
                  start.lattice.to(device) + noise[2].to(device) * sigmas[0])
    gamma_max = min(cfg.s_churn / steps, 2**0.5 - 1)
    cond = {k: v.to(device) for k, v in (conditions or {}).items()}
    if given_lattice is not None:
        given_lattice, lattice_noise = given_lattice.to(device), noise[2].to(device)

    def d_of(x: Parts, sigma: float) -> Parts:
        """dx/dσ (the coordinates' along the periodic displacement)."""
        s = torch.full((b,), sigma, device=device)
        if given_lattice is not None:
            x = Parts(x.types, x.frac, given_lattice + sigma * lattice_noise)
        den = denoise(net, x, s, mask, is_given, cfg, consts, conditions=cond)
        if cond and guidance != 1.0:
            none = denoise(net, x, s, mask, is_given, cfg, consts,
                           conditions={k: torch.zeros_like(v) for k, v in cond.items()})
            den = Parts(*(u + guidance * (c - u) for c, u in zip(den, none, strict=True)))
        if symmetry is not None:
            den = project(den, symmetry, mask, consts, types=given is None)
        dt = (x.types - den.types) / sigma if given is None else torch.zeros_like(x.types)
        return Parts(dt * m, -(den.frac - x.frac) / sigma * m, (x.lattice - den.lattice) / sigma)

    longer = anneal_factors(steps, cfg.sigma_min, cfg.sigma_max, cfg.rho, cfg.anneal_rho)
    lattice_rho = cfg.anneal_rho if cfg.anneal_rho_lattice is None else cfg.anneal_rho_lattice
    longer_l = anneal_factors(steps, cfg.sigma_min, cfg.sigma_max, cfg.rho, lattice_rho)
    for i in range(steps):
        sig, nxt = sigmas[i], sigmas[i + 1]
        if gamma_max > 0 and churn_noise is not None:  # raise σ a little by adding fresh noise
            hat = sig * (1 + gamma_max)
            k = (hat**2 - sig**2) ** 0.5
            eps = churn_noise[i].to(device)
            nt, nc = x.types[0].numel(), x.frac[0].numel()
            kt = 0.0 if given is not None else k
            x = Parts(x.types + kt * eps[:, :nt].view_as(x.types) * m,
                      wrap(x.frac + k * eps[:, nt:nt + nc].view_as(x.frac)) * m,
                      x.lattice + k * eps[:, nt + nc:])
            sig = hat
        d1 = d_of(x, sig)
        step = nxt - sig
        # the coordinates' and the lattice's steps, lengthened at most to the denoised estimate
        far, far_l = (step * min(f[i], sig / (sig - nxt)) for f in (longer, longer_l))
        x1 = Parts(x.types + step * d1.types, wrap(x.frac + far * d1.frac) * m,
                   x.lattice + far_l * d1.lattice)
        if nxt > 0:
            d2 = d_of(x1, nxt)
            x1 = Parts(x.types + step * (d1.types + d2.types) / 2,
                       wrap(x.frac + far * (d1.frac + d2.frac) / 2) * m,
                       x.lattice + far_l * (d1.lattice + d2.lattice) / 2)
        x = x1
    if symmetry is not None:
        x = project(x, symmetry, mask, consts, types=given is None)
        x = Parts(x.types, wrap(x.frac) * m, x.lattice)
    if given_lattice is not None:
        x = Parts(x.types, x.frac, given_lattice)
    return x
