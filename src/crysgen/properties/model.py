"""A property predictor: CGCNN + target normalisation + what it predicts, in one object.

Two sources: the original pre-trained cgcnn checkpoints (``.pth.tar``, read through a safe
allow-list, never arbitrary unpickling) and crysgen model directories (kind ``cgcnn``:
``config.json`` + ``weights.safetensors`` holding the network and its element table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crysgen.errors import CrysgenError
from crysgen.models.cgcnn import CGCNN, CGCNNConfig
from crysgen.models.model_dir import ModelFiles
from crysgen.models.saved import ModelContents, SavedModel
from crysgen.representations.graph import CrystalGraph, GraphOptions, collate

KIND = "cgcnn"


@dataclass
class PropertyModel(SavedModel):
    """CGCNN that predicts one property of crystals in physical units.

    Attributes:
        net: the network (outputs normalised targets, or class log-probabilities).
        target: the property's name, e.g. ``heat_ref``.
        unit: its unit, e.g. ``eV/atom`` ("" for dimensionless values and probabilities).
        mean: normalisation mean (prediction = output * std + mean).
        std: normalisation std.
        classes: class names for a classifier (index order of the network's outputs).
        info: provenance (source checkpoint, training data, metrics).

    Saved with fp32 weights by default (``HALF``): the model is small.
    """

    KINDS = (KIND,)
    DESCRIPTION = "property (cgcnn) model"
    HALF = False

    net: CGCNN
    target: str
    unit: str
    mean: float = 0.0
    std: float = 1.0
    classes: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def is_classifier(self) -> bool:
        """True for a classification model."""
        return self.net.config.classification

    @torch.no_grad()
    def predict(self, graphs: list[CrystalGraph], *, batch_size: int = 256,
                device: str = "cpu") -> np.ndarray:
        """Predictions for ``graphs``: (n,) in ``unit``, or (n, classes) probabilities."""
        net = self.net.to(device).eval()
        out = []
        for start in range(0, len(graphs), batch_size):
            y = net(collate(graphs[start:start + batch_size]).to(device)).float()
            out.append((y.exp() if self.is_classifier else y[:, 0] * self.std + self.mean).cpu().numpy())
        if not out:
            return np.zeros((0, len(self.classes)) if self.is_classifier else (0,))
        return np.concatenate(out)

    # --- model directories -------------------------------------------------------------------

    def contents(self) -> ModelContents:
        """The network (with its element table), graph options, target and normalisation."""
        config = {"net": self.net.config.to_dict(), "graph": vars(self.net.graph),
                  "target": self.target, "unit": self.unit, "mean": self.mean, "std": self.std,
                  "classes": list(self.classes)}
        return ModelContents(KIND, config, self.net.state_dict(), self.info)

    @classmethod
    def from_files(cls, files: ModelFiles) -> PropertyModel:
        """The predictor of a loaded ``cgcnn`` directory (see :meth:`SavedModel.from_pretrained`)."""
        c = files.config
        net = CGCNN(config=CGCNNConfig(**c["net"]), atom_features=files.state_dict["atom_features"],
                    graph=GraphOptions(**c["graph"]))
        net.load_state_dict(files.state_dict)
        return cls(net.eval(), c["target"], c["unit"], c["mean"], c["std"], tuple(c["classes"]),
                   files.data)

    @classmethod
    def from_cgcnn_checkpoint(cls, path: str | Path, atom_features: np.ndarray, *, target: str,
                              unit: str, classes: tuple[str, ...] = ()) -> PropertyModel:
        """Load an original cgcnn ``.pth.tar`` checkpoint (architecture read from its ``args``).

        Raises:
            CrysgenError: if the file is missing or not a cgcnn checkpoint.
        """
        path = Path(path)
        if not path.is_file():
            raise CrysgenError(f"no CGCNN checkpoint at {path}")
        ck = _safe_load(path)
        try:
            args, state = ck["args"], ck["state_dict"]
            classification = args["task"] == "classification"
            config = CGCNNConfig(
                atom_feature_len=state["embedding.weight"].shape[1],
                neighbor_feature_len=state["convs.0.fc_full.weight"].shape[1] - 2 * args["atom_fea_len"],
                atom_fea_len=args["atom_fea_len"], n_conv=args["n_conv"], h_fea_len=args["h_fea_len"],
                n_h=args["n_h"], n_out=state["fc_out.weight"].shape[0], classification=classification)
        except (KeyError, TypeError) as exc:
            raise CrysgenError(f"{path} is not a cgcnn checkpoint (missing {exc})") from exc
        if atom_features.shape[1] != config.atom_feature_len:
            raise CrysgenError(f"{path} expects {config.atom_feature_len} element features, the "
                               f"atom_init table has {atom_features.shape[1]}")
        net = CGCNN(config=config, atom_features=torch.from_numpy(atom_features))
        net.load_state_dict({**state, "atom_features": net.atom_features})
        norm = ck.get("normalizer", {"mean": 0.0, "std": 1.0})
        info = {"source": str(path.name), "epoch": int(ck.get("epoch", -1)),
                "train_size": args.get("train_size"), "data_options": args.get("data_options")}
        return cls(net.eval(), target, unit, float(norm["mean"]), float(norm["std"]), classes, info)


def _safe_load(path: Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` and the numpy scalar types cgcnn pickled."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover (numpy 1.x)
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]  # the same function
    allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
        (scalar, "numpy.core.multiarray.scalar"), scalar, np.dtype, type(np.dtype("float64"))]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CrysgenError(f"cannot read {path} as a CGCNN checkpoint: {exc}") from exc
