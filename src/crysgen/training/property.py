"""`crysgen train property`: a CGCNN regressor or classifier on a property column, with Lightning.

Court et al.'s transfer learning is an option: ``init`` names a property model (a pre-trained
cgcnn one such as ``formation_energy``, or a crysgen model directory) whose element embedding
and graph convolutions initialise the new network; ``freeze_conv`` keeps them fixed (their
batch-norm statistics too), otherwise they are fine-tuned.

A run directory holds ``model/`` (the model directory), ``metrics.json`` (MAE and SMAPE on the
held-out split, sizes, settings), ``parity.png`` and CSV logs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.errors import CrysgenError
from crysgen.models.cgcnn import CGCNN, CGCNNConfig
from crysgen.properties.model import PropertyModel
from crysgen.properties.predict import mean_absolute_error, smape
from crysgen.representations.graph import CrystalGraph, GraphBatch, build_graph, collate


@dataclass(frozen=True)
class PropertyTrainConfig:
    """Settings of a property training run.

    Attributes:
        epochs: passes over the training crystals.
        batch_size: crystals per step.
        lr: AdamW learning rate (cosine decay to 0 over the run).
        weight_decay: AdamW weight decay.
        val_fraction: share of the data held out when no validation file is given.
        seed: seeds the split, the initialisation and the batches.
        classification: train a two-class classifier on a 0/1 target instead of a regressor.
        atom_fea_len: hidden atom feature width (ignored with ``init``: taken from it).
        n_conv: graph convolutions (ignored with ``init``).
    """

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    seed: int = 0
    classification: bool = False
    atom_fea_len: int = 64
    n_conv: int = 4


class GraphDataset(torch.utils.data.Dataset):
    """Crystal graphs with their targets."""

    def __init__(self, graphs: list[CrystalGraph], y: np.ndarray) -> None:
        self.graphs, self.y = graphs, y

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> tuple[CrystalGraph, float]:
        return self.graphs[i], float(self.y[i])


def _collate(items: list[tuple[CrystalGraph, float]]) -> tuple[GraphBatch, torch.Tensor]:
    return collate([g for g, _ in items]), torch.tensor([y for _, y in items], dtype=torch.float32)


class PropertyModule(L.LightningModule):
    """CGCNN + loss (MSE on normalised targets, or NLL for a classifier) + optimiser."""

    def __init__(self, net: CGCNN, *, mean: float, std: float, config: PropertyTrainConfig,
                 freeze_conv: bool) -> None:
        super().__init__()
        self.net, self.mean, self.std, self.cfg, self.freeze_conv = net, mean, std, config, freeze_conv
        if freeze_conv:
            for p in net.conv_parameters():
                p.requires_grad_(False)

    def on_train_epoch_start(self) -> None:
        """Frozen layers keep their batch-norm statistics."""
        if self.freeze_conv:
            self.net.embedding.eval()
            self.net.convs.eval()

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move a (GraphBatch, targets) pair."""
        g, y = batch
        return g.to(device), y.to(device)

    def _loss(self, batch: tuple[GraphBatch, torch.Tensor]) -> torch.Tensor:
        g, y = batch
        out = self.net(g)
        if self.net.config.classification:
            return torch.nn.functional.nll_loss(out, y.long())
        return torch.nn.functional.mse_loss(out[:, 0], (y - self.mean) / self.std)

    def training_step(self, batch: tuple[GraphBatch, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimiser step."""
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch[1]))
        return loss

    def validation_step(self, batch: tuple[GraphBatch, torch.Tensor], batch_idx: int) -> None:
        """Held-out loss."""
        self.log("val_loss", self._loss(batch), prog_bar=True, batch_size=len(batch[1]))

    def configure_optimizers(self) -> Any:
        """AdamW with cosine decay over the run."""
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def graphs_with_target(crystals: CrystalSet, target: str) -> tuple[list[CrystalGraph], np.ndarray]:
    """Graphs and values of the crystals whose ``target`` is known (NaN rows are left out).

    Raises:
        CrysgenError: if the CrystalSet has no such property column.
    """
    if target not in crystals.properties:
        have = ", ".join(sorted(crystals.properties)) or "none"
        raise CrysgenError(f"no property {target!r} in the data (columns kept by `data prepare`: {have})")
    y = np.asarray(crystals.properties[target], dtype=float)
    keep = np.flatnonzero(np.isfinite(y))
    if len(keep) < 2:
        raise CrysgenError(f"property {target!r} has fewer than 2 known values")
    graphs = [build_graph(crystals.to_structure(int(i))) for i in keep]
    return graphs, y[keep]


def train_property(
    data: str | Path,
    out: str | Path,
    *,
    target: str,
    config: PropertyTrainConfig | None = None,
    val: str | Path | None = None,
    init: str | None = None,
    freeze_conv: bool = False,
    models_dir: str | Path | None = None,
    unit: str = "",
    accelerator: str = "auto",
    progress: bool = True,
) -> Path:
    """Train a CGCNN property model; returns the model directory.

    Args:
        data: training CrystalSet (.npz) with a ``target`` property column.
        out: run directory (new).
        target: the property column.
        config: run settings (defaults if None).
        val: CrystalSet for validation and the reported metrics; None holds out
            ``config.val_fraction`` of ``data`` (seeded).
        init: property model name or directory whose embedding + convolutions start the run.
        freeze_conv: keep the initialised layers fixed (needs ``init``).
        models_dir: where model names and ``atom_init.json`` are looked up.
        unit: the target's unit, for the model's metadata and the CSV column of `predict`.
        accelerator: Lightning accelerator.
        progress: show the progress bar.

    Raises:
        CrysgenError: for a missing column, a bad option, or an existing run directory.
    """
    from lightning.pytorch.loggers import CSVLogger

    from crysgen.properties.registry import load_property_model
    from crysgen.properties.registry import models_dir as resolve_models_dir
    from crysgen.representations.graph import load_atom_features

    config = config or PropertyTrainConfig()
    out = Path(out)
    if (out / "model" / "config.json").exists():
        raise CrysgenError(f"{out} already holds a trained model; use a new --out")
    if freeze_conv and init is None:
        raise CrysgenError("--freeze-conv needs --init (the layers to freeze come from that model)")
    t_start = time.perf_counter()
    cs = CrystalSet.load(data)
    graphs, y = graphs_with_target(cs, target)
    rng = np.random.default_rng(config.seed)
    if val is None:
        perm = rng.permutation(len(graphs))
        n_val = max(1, round(config.val_fraction * len(graphs)))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        val_graphs, y_val = [graphs[i] for i in val_idx], y[val_idx]
        graphs, y = [graphs[i] for i in train_idx], y[train_idx]
    else:
        val_graphs, y_val = graphs_with_target(CrystalSet.load(val), target)
    if config.classification and not set(np.unique(y)) <= {0.0, 1.0}:
        raise CrysgenError(f"classification needs a 0/1 target; {target!r} has other values")
    L.seed_everything(config.seed, workers=True)
    base = load_property_model(init, models_dir) if init is not None else None
    n_out = 2 if config.classification else 1
    if base is not None:
        net_cfg = CGCNNConfig(**{**base.net.config.to_dict(), "n_out": n_out,
                                 "classification": config.classification})
        net = CGCNN(config=net_cfg, atom_features=base.net.atom_features, graph=base.net.graph)
        net.embedding.load_state_dict(base.net.embedding.state_dict())
        net.convs.load_state_dict(base.net.convs.state_dict())
    else:
        table = load_atom_features(resolve_models_dir(models_dir) / "atom_init.json")
        net_cfg = CGCNNConfig(atom_feature_len=table.shape[1], atom_fea_len=config.atom_fea_len,
                              n_conv=config.n_conv, n_out=n_out, classification=config.classification)
        net = CGCNN(config=net_cfg, atom_features=torch.from_numpy(table))
    mean = 0.0 if config.classification else float(y.mean())
    std = 1.0 if config.classification else float(y.std() or 1.0)
    module = PropertyModule(net, mean=mean, std=std, config=config, freeze_conv=freeze_conv)
    loader = torch.utils.data.DataLoader(GraphDataset(graphs, y), batch_size=config.batch_size,
                                         shuffle=True, collate_fn=_collate)
    val_loader = torch.utils.data.DataLoader(GraphDataset(val_graphs, y_val),
                                             batch_size=config.batch_size * 4, collate_fn=_collate)
    use_gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    out.mkdir(parents=True, exist_ok=True)
    trainer = L.Trainer(max_epochs=config.epochs, accelerator="gpu" if use_gpu else "cpu", devices=1,
                        logger=CSVLogger(out, name="logs"), enable_progress_bar=progress,
                        enable_model_summary=False, enable_checkpointing=False,
                        check_val_every_n_epoch=max(1, config.epochs // 10), num_sanity_val_steps=0,
                        log_every_n_steps=10)
    trainer.fit(module, loader, val_loader)
    seconds = time.perf_counter() - t_start
    model = PropertyModel(net.cpu().eval(), target, unit, mean, std,
                          ("0", "1") if config.classification else (),
                          {"data": Path(data).name, "n_train": len(graphs), "n_val": len(val_graphs),
                           "init": init, "freeze_conv": freeze_conv, "config": asdict(config)})
    pred = model.predict(val_graphs)
    metrics: dict[str, Any] = {"target": target, "unit": unit, "n_train": len(graphs),
                               "n_val": len(val_graphs), "init": init, "freeze_conv": freeze_conv,
                               "config": asdict(config), "train_seconds": round(seconds, 1)}
    if config.classification:
        metrics["val_accuracy"] = float((pred.argmax(1) == y_val).mean())
    else:
        metrics |= {"val_mae": mean_absolute_error(y_val, pred), "val_smape": smape(y_val, pred)}
        plot_parity(y_val, pred, out / "parity.png", f"{target} ({unit})" if unit else target)
    model.info["val_metrics"] = {k: v for k, v in metrics.items() if k.startswith("val_")}
    model.save_pretrained(out / "model")
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return out / "model"


def plot_parity(y: np.ndarray, p: np.ndarray, path: Path, label: str) -> Path:
    """Predicted vs true scatter with the y = x line and the MAE in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(y, p, s=4, alpha=0.4)
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.set_title(f"n = {len(y)}, MAE = {mean_absolute_error(y, p):.4g}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
