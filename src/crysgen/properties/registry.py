"""Property models by name: the pre-trained cgcnn set and any crysgen-trained model directory.

Models are looked up in a models directory given by ``--models-dir`` or the environment variable
``CRYSGEN_MODELS_DIR`` (never a path written into the code). The pre-trained cgcnn checkpoints
and their ``atom_init.json`` are expected there under their original file names (as in cgcnn's
``pre-trained/`` folder); a crysgen model directory in it is found by its folder name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from crysgen.errors import CrysgenError
from crysgen.properties.model import PropertyModel

ENV_VAR = "CRYSGEN_MODELS_DIR"


@dataclass(frozen=True)
class PretrainedSpec:
    """One of the original cgcnn models.

    Attributes:
        file: checkpoint file name in the models directory.
        target: what it predicts (the CSV column stem).
        unit: unit of the prediction.
        classes: class names of a classifier, in output order.
    """

    file: str
    target: str
    unit: str
    classes: tuple[str, ...] = ()


PRETRAINED: dict[str, PretrainedSpec] = {
    "formation_energy": PretrainedSpec("formation-energy-per-atom.pth.tar", "formation_energy_per_atom",
                                       "eV/atom"),
    "final_energy": PretrainedSpec("final-energy-per-atom.pth.tar", "final_energy_per_atom", "eV/atom"),
    "band_gap": PretrainedSpec("band-gap.pth.tar", "band_gap", "eV"),
    "fermi_energy": PretrainedSpec("efermi.pth.tar", "fermi_energy", "eV"),
    # Materials Project elastic moduli as log10 of GPa (de Jong et al. 2015, the cgcnn data);
    # the normaliser means 1.98 / 1.63 are 94 / 43 GPa on that scale
    "bulk_modulus": PretrainedSpec("bulk-moduli.pth.tar", "log10_bulk_modulus", "log10 GPa"),
    "shear_modulus": PretrainedSpec("shear-moduli.pth.tar", "log10_shear_modulus", "log10 GPa"),
    "poisson_ratio": PretrainedSpec("poisson-ratio.pth.tar", "poisson_ratio", ""),
    # class order checked on known crystals (tests/properties): NaCl and MgO come out as
    # class 0, Cu and Al as class 1, so 0 = semiconductor/insulator and 1 = metal
    "metal_classifier": PretrainedSpec("semi-metal-classification.pth.tar", "metal_semiconductor", "",
                                       ("semiconductor", "metal")),
}
"""Names of the original pre-trained cgcnn models (txie-93/cgcnn ``pre-trained/``)."""

DEFAULT_MODELS = tuple(PRETRAINED)
"""What ``crysgen predict`` runs when no ``--models`` is given."""


def models_dir(explicit: str | Path | None = None) -> Path:
    """The models directory: ``explicit``, else ``$CRYSGEN_MODELS_DIR``.

    Raises:
        CrysgenError: if neither is set or the folder does not exist.
    """
    path = explicit or os.environ.get(ENV_VAR)
    if not path:
        raise CrysgenError(f"no models directory: pass --models-dir DIR or set {ENV_VAR} to the folder "
                           "that holds the cgcnn checkpoints (e.g. cgcnn's pre-trained/ folder with "
                           "its atom_init.json) and crysgen-trained model directories")
    path = Path(path)
    if not path.is_dir():
        raise CrysgenError(f"models directory {path} does not exist")
    return path


def available_models(directory: str | Path | None = None) -> list[str]:
    """Names that :func:`load_property_model` resolves in the models directory."""
    root = models_dir(directory)
    names = [n for n, spec in PRETRAINED.items() if (root / spec.file).is_file()]
    names += sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())
    return names


def load_property_model(name: str, directory: str | Path | None = None) -> PropertyModel:
    """A property model by name (pre-trained cgcnn or crysgen model dir) or by its directory path.

    Raises:
        CrysgenError: for an unknown name (the message lists the known ones) or a broken model.
    """
    if Path(name).is_dir() and (Path(name) / "config.json").is_file():
        return PropertyModel.from_pretrained(name)
    root = models_dir(directory)
    if name in PRETRAINED:
        from crysgen.representations.graph import load_atom_features

        spec = PRETRAINED[name]
        atom_init = root / "atom_init.json"
        if not atom_init.is_file():
            raise CrysgenError(f"{root} has no atom_init.json (the cgcnn element features the "
                               "pre-trained models need)")
        return PropertyModel.from_cgcnn_checkpoint(root / spec.file, load_atom_features(atom_init),
                                                   target=spec.target, unit=spec.unit,
                                                   classes=spec.classes)
    if (root / name / "config.json").is_file():
        return PropertyModel.from_pretrained(root / name)
    raise CrysgenError(f"unknown property model {name!r} in {root}; known: "
                       f"{', '.join(available_models(root)) or 'none'}")
