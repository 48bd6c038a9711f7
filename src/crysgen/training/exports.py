"""A run's checkpoint as a model directory, whichever trainer wrote the run.

Every run exports ``model/`` at each checkpoint; exporting another checkpoint (the one of the
lowest validation loss, or the one at an equal step budget) takes the trainer that wrote the run,
named by the ``kind`` of that exported ``model/config.json``. Exports that are fitted on the
training crystals (a property model's held-out scores, a voxel VAE's latent prior) take them as
``data``: a run directory does not keep them.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from crysgen.errors import CrysgenError

EXPORTERS: dict[str, str] = {
    "diffusion": "crysgen.training.diffusion",
    "atom_diffusion": "crysgen.training.atoms",
    "gan": "crysgen.training.adversarial",
    "wgan": "crysgen.training.adversarial",
    "cgcnn": "crysgen.training.property",
    "voxel_segmenter": "crysgen.training.voxel",
    "voxel_vae": "crysgen.training.voxel",
}
"""Model directory kind -> the training module whose ``export_checkpoint(run, out, step=)`` rebuilds it."""

TAKE_DATA = frozenset({"cgcnn", "voxel_segmenter", "voxel_vae"})
"""Kinds whose ``export_checkpoint`` also takes ``data=``, the run's training CrystalSet."""


def run_kind(run: str | Path) -> str:
    """The kind of model a run directory trains (from its exported ``model/config.json``).

    Raises:
        CrysgenError: if ``run`` has no readable ``model/config.json`` (not a crysgen run, or one
            that never reached a checkpoint).
    """
    path = Path(run) / "model" / "config.json"
    try:
        return str(json.loads(path.read_text())["kind"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CrysgenError(f"{run}: not a training run with an exported model ({path}: {exc})") from exc


def export_checkpoint(run: str | Path, out: str | Path, *, step: int | None = None,
                      data: str | Path | None = None) -> Path:
    """Export one of a run's checkpoints (EMA weights where the run keeps them) as a model directory.

    Args:
        run: run directory of `crysgen train diffusion`, `atom-diffusion`, `gan`, `wgan`,
            `property`, `segmenter` or `vae`.
        out: model directory to write.
        step: the checkpoint ``checkpoints/stepNNNNNNN.ckpt`` to export (None: ``last.ckpt``).
        data: the run's training CrystalSet, for a property run that held out a share of it and
            a VAE run (checked against the run's data fingerprint).

    Raises:
        CrysgenError: for a directory that is not such a run, a missing checkpoint, a run of a
            kind whose checkpoints cannot be exported, ``data`` for a kind that has no use for it,
            or training data needed but not given (or not the run's).
    """
    kind = run_kind(run)
    if kind not in EXPORTERS:
        raise CrysgenError(f"{run}: exporting a checkpoint of a {kind!r} run is not supported "
                           f"(runs of {', '.join(sorted(EXPORTERS))} are)")
    if data is not None and kind not in TAKE_DATA:
        raise CrysgenError(f"--data: exporting a checkpoint of a {kind!r} run does not use the training data")
    extra = {"data": data} if kind in TAKE_DATA else {}
    return Path(importlib.import_module(EXPORTERS[kind]).export_checkpoint(run, out, step=step, **extra))
