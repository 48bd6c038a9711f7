"""Fill a property of a CrystalSet with a property model's predictions (``crysgen data label``).

Court et al. condition their VAE on a property known for every training crystal; perov_5 has
``heat_ref`` only in its val/test splits. Labelling the train split with a crysgen property model
trained on val lets the conditional VAE see all of it. Known values are kept unless asked
otherwise, and the CrystalSet's metadata records which values were predicted and by what.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.properties.model import PropertyModel
from crysgen.properties.predict import predict_structures


@dataclass
class LabelReport:
    """What :func:`label_property` did.

    Attributes:
        name: the property filled.
        n_predicted: crystals whose value now comes from the model.
        n_kept: crystals whose known value was kept.
        n_failed: crystals the model could not featurise (value stays NaN).
    """

    name: str
    n_predicted: int
    n_kept: int
    n_failed: int


def label_property(crystals: CrystalSet, model: PropertyModel, name: str, *, overwrite: bool = False,
                   device: str = "cpu", batch_size: int = 256,
                   source: str = "") -> tuple[CrystalSet, LabelReport]:
    """A copy of ``crystals`` whose property ``name`` is filled with ``model``'s predictions.

    Args:
        crystals: the set to label.
        model: a regression property model (its unit must be that of the property).
        name: property key to fill (created when absent).
        overwrite: also replace values that are already known.
        device: "cpu" or "cuda".
        batch_size: crystals per forward pass.
        source: a description of the model for the metadata (e.g. its directory).

    Returns:
        The labelled set (metadata ``labelled[name]`` says how) and a report.
    """
    if model.is_classifier:
        raise CrysgenError("a classifier cannot label a numeric property; give a regression model")
    n = len(crystals)
    values = crystals.properties.get(name, np.full(n, np.nan)).copy()
    todo = np.arange(n) if overwrite else np.flatnonzero(~np.isfinite(values))
    pred, featurised = predict_structures(model, [crystals.to_structure(int(i)) for i in todo],
                                          device=device, batch_size=batch_size)
    values[todo[featurised]] = pred[featurised]
    out = crystals.subset(slice(None))
    out.properties[name] = values
    n_ok = int(featurised.sum())
    report = LabelReport(name, n_ok, n - len(todo), len(todo) - n_ok)
    meta = dict(out.metadata.get("labelled", {}))
    meta[name] = {"model": source, "target": model.target, "unit": model.unit,
                  "n_predicted": report.n_predicted, "n_kept": report.n_kept, "n_failed": report.n_failed,
                  "overwrite": overwrite}
    out.metadata["labelled"] = meta
    return out, report


def label_file(data: str | Path, model_dir: str | Path, name: str, out: str | Path, **kwargs: object
               ) -> LabelReport:
    """Load a CrystalSet, label it (see :func:`label_property`) and save it to ``out``."""
    data, out = Path(data), Path(out)
    if not data.is_file():
        raise CrysgenError(f"no such file: {data}")
    if not str(out).endswith(".npz"):
        raise CrysgenError(f"--out must end in .npz, got {out}")
    if out.resolve() == data.resolve():
        raise CrysgenError("--out must differ from the input file (the input is never overwritten)")
    if not Path(model_dir).is_dir():
        raise CrysgenError(f"no such model directory: {model_dir}")
    model = PropertyModel.from_pretrained(model_dir)
    labelled, report = label_property(CrystalSet.load(data), model, name, source=str(model_dir),
                                      **kwargs)  # type: ignore[arg-type]
    labelled.save(out)
    return report
