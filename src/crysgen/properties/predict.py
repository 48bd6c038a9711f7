"""`crysgen predict`: every requested property of every input crystal, one row per crystal.

Columns: ``id``, ``formula``, then one column per model named ``<target>_<unit>`` (units spelt
with letters only, e.g. ``formation_energy_per_atom_eV_per_atom``), moduli also in GPa, the
classifier as the probability of each class, and ``problem`` when a crystal could not be read or
featurised (its property cells stay empty).

Court et al.'s rule is applied when its models are present: where the predicted band gap is
zero or below, predicted dielectric constants and refractive indices are blanked (they are
undefined for a metal).
"""

from __future__ import annotations

import csv
import io
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crysgen.crystal_set import write_text_atomic
from crysgen.data.guards import element_problem, structure_problem
from crysgen.data.structures import InputCrystal
from crysgen.properties.model import PropertyModel
from crysgen.representations.graph import CrystalGraph, build_graph

if TYPE_CHECKING:
    from pymatgen.core import Structure

BLANKED_BY_ZERO_GAP = ("dielectric", "refractive")
"""Targets (by prefix) that Court's rule blanks where the predicted band gap is <= 0."""


def column_name(target: str, unit: str) -> str:
    """``heat_ref`` + ``eV/atom`` -> ``heat_ref_eV_per_atom``; no unit -> the target."""
    if not unit:
        return target
    unit = re.sub(r"[^A-Za-z0-9]+", "_", unit.replace("/", " per ")).strip("_")
    return f"{target}_{unit}"


@dataclass
class PredictResult:
    """Rows of `crysgen predict` and how long it took."""

    columns: list[str]
    rows: list[dict[str, Any]]
    seconds_featurize: float
    seconds_predict: float

    def to_csv(self, path: str | Path) -> Path:
        """Write the table atomically."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns)
        writer.writeheader()
        writer.writerows(self.rows)
        return write_text_atomic(Path(path), buf.getvalue())


def featurize(crystals: list[InputCrystal]) -> tuple[list[CrystalGraph | None], list[str | None]]:
    """Crystal graphs, with a reason in place of each graph that could not be built."""
    graphs: list[CrystalGraph | None] = []
    problems: list[str | None] = []
    for c in crystals:
        if c.structure is None:
            graphs.append(None)
            problems.append(c.problem)
            continue
        problem = structure_problem(c.structure) or element_problem(c.structure)
        if problem is not None:  # never hand a degenerate cell to the neighbour search
            graphs.append(None)
            problems.append(str(problem))
            continue
        try:
            g = build_graph(c.structure)
            if g.atomic_numbers.max() > 100:
                raise ValueError(f"element Z={g.atomic_numbers.max()} has no CGCNN features")
            graphs.append(g)
            problems.append(None)
        except Exception as exc:  # one bad crystal gets a reason, the run goes on
            graphs.append(None)
            problems.append(f"featurization failed: {type(exc).__name__}: {exc}")
    return graphs, problems


def predict_structures(model: PropertyModel, structures: list[Structure], *, device: str = "cpu",
                       batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """One regression model's prediction for each pymatgen structure.

    Returns:
        float (N,) predictions (NaN where the structure could not be featurised) and bool (N,)
        True where it was.
    """
    out = np.full(len(structures), np.nan)
    graphs, ok = [], []
    for i, s in enumerate(structures):
        if structure_problem(s) is not None:  # a degenerate cell keeps NaN
            continue
        try:
            graphs.append(build_graph(s))
            ok.append(i)
        except Exception:  # a structure that cannot be featurised keeps NaN
            continue
    if ok:
        out[ok] = model.predict(graphs, batch_size=batch_size, device=device)
    featurised = np.zeros(len(structures), bool)
    featurised[ok] = True
    return out, featurised


def predict_properties(crystals: list[InputCrystal], models: dict[str, PropertyModel], *,
                       batch_size: int = 256, device: str = "cpu",
                       progress: bool = False) -> PredictResult:
    """Predict every model's property for every crystal.

    Args:
        crystals: inputs from :func:`crysgen.data.structures.load_inputs`.
        models: name -> model, in column order.
        batch_size: crystals per forward pass.
        device: "cpu" or "cuda".
        progress: show a progress bar over the models.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    graphs, problems = featurize(crystals)
    t1 = time.perf_counter()
    ok = [i for i, g in enumerate(graphs) if g is not None]
    rows: list[dict[str, Any]] = [
        {"id": c.id, "formula": c.structure.composition.reduced_formula if c.structure else "",
         "problem": p or ""} for c, p in zip(crystals, problems, strict=True)]
    columns = ["id", "formula"]
    gap_column = None
    for _name, model in tqdm(models.items(), desc="predict", unit="model", disable=not progress):
        pred = model.predict([graphs[i] for i in ok], batch_size=batch_size, device=device)
        if model.is_classifier:
            names = [f"p_{c}" for c in (model.classes or range(pred.shape[1]))]
            columns += names
            for k, i in enumerate(ok):
                rows[i].update({n: float(pred[k, j]) for j, n in enumerate(names)})
            continue
        col = column_name(model.target, model.unit)
        columns.append(col)
        for k, i in enumerate(ok):
            rows[i][col] = float(pred[k])
        if model.unit == "log10 GPa":  # moduli also in GPa
            gpa = col.replace("log10_", "").replace("_log10_GPa", "_GPa")
            columns.append(gpa)
            for k, i in enumerate(ok):
                rows[i][gpa] = float(10.0 ** pred[k])
        if model.target in ("band_gap", "dir_gap", "ind_gap"):
            gap_column = gap_column or col
    if gap_column:
        blank = [c for c in columns if c.startswith(BLANKED_BY_ZERO_GAP)]
        for row in rows:
            if blank and row.get(gap_column, 1.0) != "" and float(row.get(gap_column, 1.0)) <= 0.0:
                row.update({c: "" for c in blank})
    columns.append("problem")
    for row in rows:
        for c in columns:
            row.setdefault(c, "")
    return PredictResult(columns, rows, t1 - t0, time.perf_counter() - t1)


def mean_absolute_error(y: np.ndarray, p: np.ndarray) -> float:
    """MAE over finite pairs."""
    m = np.isfinite(y) & np.isfinite(p)
    return float(np.abs(y[m] - p[m]).mean())


def smape(y: np.ndarray, p: np.ndarray) -> float:
    """Symmetric mean absolute percentage error in %, 100·mean(|p−y| / ((|y|+|p|)/2)); 0/0 counts 0."""
    m = np.isfinite(y) & np.isfinite(p)
    num, den = np.abs(p[m] - y[m]), (np.abs(y[m]) + np.abs(p[m])) / 2
    return float(100 * np.mean(np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)))
