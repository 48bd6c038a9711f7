"""Model directories: everything needed to rebuild and use a trained model, and nothing else.

Layout::

    MODEL_DIR/config.json          {"format", "kind", "crysgen_version", "config": {...}, "data": {...}}
    MODEL_DIR/weights.safetensors  parameters (EMA for diffusion models), fp16 by default
    MODEL_DIR/scaling.json         the CrysTens scaling the model was trained with
    MODEL_DIR/...                  files of the model's kind (atoms.json, voxel.json, sub-models)

This module reads and writes the files; :class:`crysgen.models.saved.SavedModel` is the
``save_pretrained``/``from_pretrained`` base that every saved-model bundle builds on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crysgen.crystal_set import part_path
from crysgen.errors import CrysgenError
from crysgen.representations.crystens import CrysTensScaling

if TYPE_CHECKING:
    import torch

FORMAT = "crysgen.model"
"""The ``format`` field of every model directory's config.json."""
WEIGHTS = "weights.safetensors"
SCALING = "scaling.json"
CONFIG = "config.json"

Writer = Callable[[Path], object]
"""Writes one file to the path it is given (a temporary name in the model directory)."""


@dataclass
class ModelFiles:
    """A model directory's content, loaded.

    Attributes:
        path: the directory.
        kind: its model kind.
        config: constructor arguments and settings (config.json's ``config``).
        state_dict: parameters, floating-point ones upcast to float32 (empty without weights).
        scaling: the CrysTens scaling, None where the directory has none.
        data: fingerprint of the training data.
        crysgen_version: the version that wrote it ("unknown" if not recorded).
    """

    path: Path
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
    state_dict: Mapping[str, torch.Tensor] | None,
    scaling: CrysTensScaling | None,
    data: dict[str, Any],
    half: bool = True,
    files: Mapping[str, Writer] | None = None,
) -> Path:
    """Write a model directory, all files or none.

    Every file is first written under a temporary name in the directory; only when all are
    written are they renamed into place, config.json last, so a failed save (a writer that
    raises, a config that is not JSON) leaves the files that were there before untouched.

    Args:
        path: the directory (created).
        kind: model kind ("diffusion", "gan", ...), used to pick the loader.
        config: constructor arguments and settings needed to rebuild the model (JSON-able).
        state_dict: parameters; None for a directory without weights of its own (a cascade).
        scaling: the CrysTens scaling of the training data (None for models that take no
            CrysTens input, such as property predictors).
        data: fingerprint of the training data (name, count, sha256).
        half: store floating-point weights as fp16.
        files: further files of the model's kind, name -> writer.

    Returns:
        ``path``.
    """
    from crysgen import __version__

    path = Path(path)
    meta = {"format": FORMAT, "kind": kind, "crysgen_version": __version__, "config": config,
            "data": data}
    text = json.dumps(meta, indent=1, sort_keys=True) + "\n"  # a config that is not JSON fails here
    writers: dict[str, Writer] = {}
    if state_dict is not None:
        writers[WEIGHTS] = _weights_writer(state_dict, half=half)
    if scaling is not None:
        writers[SCALING] = scaling.save
    writers.update(files or {})
    writers[CONFIG] = lambda p: p.write_text(text)
    write_all_or_none(path, writers)
    return path


def write_all_or_none(folder: Path, writers: Mapping[str, Writer]) -> None:
    """Write every file of ``writers`` into ``folder``, then rename them into place in order.

    Raises:
        Exception: whatever a writer raises; the temporary files are removed and the folder's
            earlier files are left as they were.
    """
    folder.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    try:
        for name, write in writers.items():
            temps[name] = part_path(folder / name)
            write(temps[name])
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise
    for name, tmp in temps.items():
        tmp.replace(folder / name)


def _weights_writer(state_dict: Mapping[str, torch.Tensor], *, half: bool) -> Writer:
    """A writer of ``state_dict`` as safetensors (floating-point tensors as fp16 if ``half``)."""
    import torch
    from safetensors.torch import save_file

    tensors = {
        k: (v.detach().to("cpu", torch.float16) if half and v.is_floating_point() else v.detach().cpu())
        .contiguous()
        for k, v in state_dict.items()
    }
    return lambda p: save_file(tensors, str(p))


def load_model_dir(path: str | Path, *, needs_scaling: bool = True, needs_weights: bool = True) -> ModelFiles:
    """Read a model directory written by :func:`save_model_dir`.

    Floating-point weights come back as float32, whatever precision they were stored in.

    Args:
        path: the directory.
        needs_scaling: the model reads CrysTens tensors, so ``scaling.json`` must be there.
        needs_weights: ``weights.safetensors`` must be there (otherwise it is read if present).

    Raises:
        CrysgenError: if the directory or one of its files is missing or malformed.
    """
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_model_meta(path)
    needed = (WEIGHTS,) * needs_weights + (SCALING,) * needs_scaling
    missing = [n for n in needed if not (path / n).is_file()]
    if missing:
        raise CrysgenError(f"{path} is not a crysgen model directory (missing {', '.join(missing)})")
    state = load_file(str(path / WEIGHTS)) if (path / WEIGHTS).is_file() else {}
    return ModelFiles(
        path=path,
        kind=meta["kind"],
        config=meta["config"],
        state_dict={k: v.float() if v.is_floating_point() else v for k, v in state.items()},
        scaling=CrysTensScaling.load(path / SCALING) if (path / SCALING).is_file() else None,
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


def weights_sha256(path: str | Path) -> dict[str, str]:
    """SHA-256 of every ``*.safetensors`` file under a model directory, by relative path.

    Recursive (a voxel VAE's directory holds its segmenter's), so that a folder sampled from a
    model can tell whether the model at that path has changed since.
    """
    import hashlib

    root = Path(path)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.safetensors"))}


def data_fingerprint(crystals: Any, name: str) -> dict[str, Any]:
    """Name, count and sha256 of a training CrystalSet (over its arrays)."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for arr in (crystals.atomic_numbers, crystals.frac_coords, crystals.lattice,
                crystals.num_sites):
        digest.update(np.ascontiguousarray(arr).tobytes())
    return {"name": name, "count": len(crystals), "sha256": digest.hexdigest()}
