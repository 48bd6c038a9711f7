"""A run's checkpoint as a model directory, whichever trainer wrote the run.

Every run exports ``model/`` at each checkpoint; exporting another checkpoint (the one of the
lowest validation loss, or the one at an equal step budget) takes the trainer that wrote the run,
named by the ``kind`` of that exported ``model/config.json``.
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
}
"""Model directory kind -> the training module whose ``export_checkpoint(run, out, step=)`` rebuilds it."""


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


def export_checkpoint(run: str | Path, out: str | Path, *, step: int | None = None) -> Path:
    """Export one of a run's checkpoints (EMA weights where the run keeps them) as a model directory.

    Args:
        run: run directory of `crysgen train diffusion`, `atom-diffusion`, `gan` or `wgan`.
        out: model directory to write.
        step: the checkpoint ``checkpoints/stepNNNNNNN.ckpt`` to export (None: ``last.ckpt``).

    Raises:
        CrysgenError: for a directory that is not such a run, a missing checkpoint, or a run of a
            kind whose checkpoints cannot be exported.
    """
    kind = run_kind(run)
    if kind not in EXPORTERS:
        raise CrysgenError(f"{run}: exporting a checkpoint of a {kind!r} run is not supported "
                           f"(runs of {', '.join(sorted(EXPORTERS))} are)")
    return Path(importlib.import_module(EXPORTERS[kind]).export_checkpoint(run, out, step=step))
