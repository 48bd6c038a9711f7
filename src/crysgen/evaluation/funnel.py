"""The filter funnel of Court et al.'s targeted sampling (their Table 2).

Around one base crystal, ``n`` latents z ~ N(μ_base, σ²) are decoded with the base's condition
class, and the candidates pass, in this order:

1. **decoded**: the watershed gave a crystal;
2. **valid**: every interatomic distance ≥ 0.5 Å (:func:`~crysgen.evaluation.validity.structurally_valid`);
3. **same stoichiometry**: the same anonymized formula as the base (ABC3 for a perovskite ABO3:
   the paper's "same stoichiometric formula", which lets the elements change);
4. **novel**: matches no training crystal (StructureMatcher, :mod:`crysgen.evaluation.novelty`);
5. **property match**: the property model's prediction within ``tolerance`` (20 %) of the
   base's value (its value in the data; predicted by the same model when missing);
6. **unique**: matches no earlier survivor.

Counts at every step are returned with the surviving candidates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from crysgen.crystal_set import CrystalSet
from crysgen.evaluation.novelty import novel_mask, unique_mask
from crysgen.evaluation.validity import structurally_valid
from crysgen.properties.predict import predict_structures

if TYPE_CHECKING:
    from crysgen.pipelines.voxel import VoxelModel

STEPS = ("sampled", "decoded", "valid", "same_stoichiometry", "novel", "property_match", "unique")


@dataclass
class FunnelResult:
    """One base crystal's funnel.

    Attributes:
        base_id: the base crystal's id.
        base_formula: its reduced formula.
        base_property: the property value the candidates are compared with.
        counts: step name (:data:`STEPS`) -> candidates left after it.
        candidates: the survivors (ids ``sample_i``), with the predicted property.
        seconds: wall time of the whole funnel.
    """

    base_id: str
    base_formula: str
    base_property: float
    counts: dict[str, int]
    candidates: CrystalSet = field(repr=False)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the candidates as formulas)."""
        from crysgen.evaluation.diversity import reduced_formulas

        d = asdict(self)
        d.pop("candidates")
        d["candidate_formulas"] = reduced_formulas(self.candidates)
        return d


def targeted_funnel(model: VoxelModel, base: CrystalSet, training: list[Any], property_model: Any, *,
                    n: int = 1000, sigma2: float = 0.5, tolerance: float = 0.2, seed: int = 0,
                    device: str = "cpu", batch_size: int = 256, workers: int = 1) -> FunnelResult:
    """Sample ``n`` candidates around ``base`` and filter them as Court et al. did.

    Args:
        model: a :class:`~crysgen.pipelines.voxel.VoxelModel`.
        base: one crystal (a CrystalSet of length 1); its condition property, when known, picks
            the condition class, else the property model's prediction does.
        training: the training structures (pymatgen), for novelty.
        property_model: a regression :class:`~crysgen.properties.model.PropertyModel` of the
            VAE's condition property.
        n: latents drawn.
        sigma2: latent variance around the base (the paper's 0.5).
        tolerance: relative property window (0.2 = within 20 % of the base's value).
        seed: seeds the latents.
        device: where the networks run.
        batch_size: grids per forward pass.
        workers: watershed processes.
    """
    import time

    t0 = time.perf_counter()
    spec = model.spec
    base_structure = base.to_structure(0)
    value = float(base.properties.get(spec.condition, np.array([np.nan]))[0])
    if not np.isfinite(value):
        value = float(predict_structures(property_model, [base_structure], device=device)[0][0])
    condition = int(spec.condition_class(np.array([value]))[0])
    mu, _ = model.encode(base, np.array([condition]), device=device)
    res = model.generate(n, seed=seed, device=device, batch_size=batch_size, condition=condition,
                         around=mu[0], sigma2=sigma2, ids=[f"sample_{i:06d}" for i in range(n)],
                         workers=workers)
    cs = res.crystals
    counts = {"sampled": n, "decoded": len(cs)}
    structures = cs.to_structures()
    keep = np.array([structurally_valid(s) for s in structures], bool)
    counts["valid"] = int(keep.sum())
    anon = base_structure.composition.anonymized_formula
    keep &= np.array([s.composition.anonymized_formula == anon for s in structures], bool)
    counts["same_stoichiometry"] = int(keep.sum())
    idx = np.flatnonzero(keep)
    novel = novel_mask([structures[i] for i in idx], training)
    idx = idx[novel]
    counts["novel"] = len(idx)
    pred, _ = predict_structures(property_model, [structures[i] for i in idx], device=device)
    close = np.abs(pred - value) <= tolerance * abs(value)
    idx, pred = idx[close], pred[close]
    counts["property_match"] = len(idx)
    uniq = unique_mask([structures[i] for i in idx])
    idx, pred = idx[uniq], pred[uniq]
    counts["unique"] = len(idx)
    candidates = cs.subset(idx)
    candidates.properties = {spec.condition: pred}
    return FunnelResult(str(base.ids[0]), base_structure.composition.reduced_formula, value, counts,
                        candidates, time.perf_counter() - t0)


def average_counts(results: list[FunnelResult]) -> dict[str, dict[str, float]]:
    """Mean count and mean fraction of ``sampled`` at every step, over bases."""
    out = {}
    for step in STEPS:
        c = np.array([r.counts[step] for r in results], float)
        s = np.array([r.counts["sampled"] for r in results], float)
        out[step] = {"mean_count": round(float(c.mean()), 2),
                     "mean_percent": round(float((c / s).mean() * 100), 2)}
    return out
