"""Model directories: everything needed to rebuild and use a trained model, and nothing else.

Layout::

    MODEL_DIR/config.json          {"format", "kind", "crysgen_version", "config": {...}, "data": {...}}
    MODEL_DIR/weights.safetensors  parameters (EMA for diffusion models), fp16 by default
    MODEL_DIR/scaling.json         the CrysTens scaling the model was trained with
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crysgen.errors import CrysgenError
from crysgen.representations.crystens import CrysTensScaling

if TYPE_CHECKING:
    import torch

FORMAT = "crysgen.model"
"""The ``format`` field of every model directory's config.json."""


@dataclass
class ModelFiles:
    """A model directory's content, loaded."""

    kind: str
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    scaling: CrysTensScaling | None
    data: dict[str, Any]
    crysgen_version: str


def save_model_dir(
    path: str | Path,
    *,
    kind: str,
    config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    scaling: CrysTensScaling | None,
    data: dict[str, Any],
    half: bool = True,
) -> Path:
    """Write a model directory (files written to temporary names, then renamed).

    Args:
        path: the directory (created).
        kind: model kind ("diffusion", "gan", ...), used to pick the loader.
        config: constructor arguments and settings needed to rebuild the model.
        state_dict: parameters.
        scaling: the CrysTens scaling of the training data (None for models that take no
            CrysTens input, such as property predictors).
        data: fingerprint of the training data (name, count, sha256).
        half: store floating-point weights as fp16.
    """
    import torch
    from safetensors.torch import save_file

    from crysgen import __version__

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.detach().to("cpu", torch.float16) if half and v.is_floating_point() else v.detach().cpu())
        .contiguous()
        for k, v in state_dict.items()
    }
    meta = {"format": FORMAT, "kind": kind, "crysgen_version": __version__, "config": config,
            "data": data}
    writers = [("weights.safetensors", lambda p: save_file(tensors, str(p))),
               *([("scaling.json", lambda p: scaling.save(p))] if scaling is not None else []),
               ("config.json", lambda p: p.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n"))]
    for name, write in writers:
        tmp = path / f".{name}.part"
        write(tmp)
        tmp.replace(path / name)
    return path


def load_model_dir(path: str | Path, *, needs_scaling: bool = True) -> ModelFiles:
    """Read a model directory written by :func:`save_model_dir`.

    ``needs_scaling``: the model reads CrysTens tensors, so ``scaling.json`` must be there.

    Raises:
        CrysgenError: if the directory or one of its files is missing or malformed.
    """
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_model_meta(path)
    needed = ("weights.safetensors", "scaling.json") if needs_scaling else ("weights.safetensors",)
    missing = [n for n in needed if not (path / n).is_file()]
    if missing:
        raise CrysgenError(f"{path} is not a crysgen model directory (missing {', '.join(missing)})")
    return ModelFiles(
        kind=meta["kind"],
        config=meta["config"],
        state_dict=load_file(str(path / "weights.safetensors")),
        scaling=CrysTensScaling.load(path / "scaling.json") if (path / "scaling.json").is_file() else None,
        data=meta.get("data", {}),
        crysgen_version=meta.get("crysgen_version", "unknown"),
    )


def read_model_meta(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a model directory of any kind (``meta["kind"]`` picks the loader).

    Raises:
        CrysgenError: if it is missing, not JSON, or not a crysgen model config.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "is not a crysgen model directory"
        raise CrysgenError(f"{path} {what} (missing config.json)")
    try:
        meta = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise CrysgenError(f"{path / 'config.json'} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "kind" not in meta:
        raise CrysgenError(f"{path / 'config.json'} is not a crysgen model config")
    return meta


def data_fingerprint(crystals: Any, name: str) -> dict[str, Any]:
    """Name, count and sha256 of a training CrystalSet (over its arrays)."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for arr in (crystals.atomic_numbers, crystals.frac_coords, crystals.lattice,
                crystals.num_sites):
        digest.update(np.ascontiguousarray(arr).tobytes())
    return {"name": name, "count": len(crystals), "sha256": digest.hexdigest()}
