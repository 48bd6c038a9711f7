"""`crysgen train property`: a CGCNN regressor or classifier on a property column, with Lightning.

The run directory is the shared one (:mod:`crysgen.training.runs`: resolved ``config.yaml``,
``checkpoints/``, ``logs/``, ``train_summary.json``, ``curves.png``, ``--resume``) with
``target.json`` (:class:`PropertyRunState`: the target normalisation, the network's shape and the
split, fitted when the run starts) in place of a CrysTens scaling. At every checkpoint and at the
end it writes ``model/`` (a property model directory for `crysgen predict` and
`crysgen data label`), ``metrics.json`` (MAE and SMAPE, or the accuracy, on the held-out crystals,
with sizes and settings) and, for a regressor, ``parity.png``.

Court et al.'s transfer learning is an option: ``init`` names a property model (a pre-trained
cgcnn one such as ``formation_energy``, or a crysgen model directory) whose element embedding
and graph convolutions initialise the new network; ``freeze_conv`` keeps them fixed (their
batch-norm statistics too), otherwise they are fine-tuned.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, replace
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
from crysgen.representations.graph import CrystalGraph, GraphBatch, GraphOptions, build_graph, collate
from crysgen.training.config import PropertyTrainConfig
from crysgen.training.runs import checkpoint_data, fit, open_run, read_checkpoint, training_data

__all__ = ["STATE_FILE", "PropertyModule", "PropertyRunState", "PropertyTrainConfig", "export_checkpoint",
           "graphs_with_target", "plot_parity", "train_property"]

STATE_FILE = "target.json"
"""The run directory's :class:`PropertyRunState`."""


@dataclass(frozen=True)
class PropertyRunState:
    """What a property run fits when it starts and a resumed run reads back (``target.json``).

    Attributes:
        mean: target normalisation on the training crystals (prediction = output * std + mean;
            0 for a classifier).
        std: see ``mean`` (1 for a classifier).
        net: the network's :class:`~crysgen.models.cgcnn.CGCNNConfig` (``init``'s shape when given).
        graph: its :class:`~crysgen.representations.graph.GraphOptions`.
        elements: rows of its element feature table.
        n_train: training crystals with a known target.
        n_val: held-out crystals with a known target.
        val: the validation file (absolute path), or None when ``val_fraction`` of the data is
            held out.
        init: the property model the run started from, or None.
    """

    mean: float
    std: float
    net: dict[str, Any]
    graph: dict[str, Any]
    elements: int
    n_train: int
    n_val: int
    val: str | None = None
    init: str | None = None

    def save(self, path: str | Path) -> Path:
        """Write the state as JSON (atomically)."""
        return write_text_atomic(Path(path), json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PropertyRunState:
        """Read a state written by :meth:`save`.

        Raises:
            CrysgenError: if the file is missing (not a property run) or malformed.
        """
        path = Path(path)
        if not path.is_file():
            raise CrysgenError(f"no {path.name} in {path.parent}: not a `crysgen train property` run")
        try:
            return cls(**json.loads(path.read_text()))
        except (TypeError, ValueError) as exc:
            raise CrysgenError(f"{path} is not a property run state: {exc}") from exc

    def network(self) -> CGCNN:
        """A network of the run's shape with placeholder weights (a checkpoint fills them in)."""
        config = CGCNNConfig(**self.net)
        return CGCNN(config=config, atom_features=torch.zeros(self.elements, config.atom_feature_len),
                     graph=GraphOptions(**self.graph))


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

    def __init__(self, net: CGCNN, *, mean: float, std: float, config: PropertyTrainConfig) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config.to_dict(), "mean": mean, "std": std})
        self.net, self.mean, self.std, self.cfg = net, mean, std, config
        if config.freeze_conv:
            for p in net.conv_parameters():
                p.requires_grad_(False)

    def on_train_epoch_start(self) -> None:
        """Frozen layers keep their batch-norm statistics."""
        if self.cfg.freeze_conv:
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
        self.log("val_loss", self._loss(batch), prog_bar=True, batch_size=len(batch[1]), sync_dist=True)

    def iteration(self, trainer: L.Trainer) -> int:
        """Optimiser steps taken."""
        return int(trainer.global_step)

    def configure_optimizers(self) -> Any:
        """AdamW on the trainable parameters, the rate decaying to 0 on a cosine over ``max_steps``."""
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        total = max(1, self.cfg.max_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def target_values(crystals: CrystalSet, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the crystals whose ``target`` is known, and the values (NaN rows are left out).

    Raises:
        CrysgenError: if the CrystalSet has no such property column or fewer than 2 known values.
    """
    if target not in crystals.properties:
        have = ", ".join(sorted(crystals.properties)) or "none"
        raise CrysgenError(f"no property {target!r} in the data (columns kept by `data prepare`: {have})")
    y = np.asarray(crystals.properties[target], dtype=float)
    keep = np.flatnonzero(np.isfinite(y))
    if len(keep) < 2:
        raise CrysgenError(f"property {target!r} has fewer than 2 known values")
    return keep, y[keep]


def graphs_with_target(crystals: CrystalSet, target: str) -> tuple[list[CrystalGraph], np.ndarray]:
    """Graphs and values of the crystals whose ``target`` is known (see :func:`target_values`)."""
    rows, y = target_values(crystals, target)
    return [build_graph(crystals.to_structure(int(i))) for i in rows], y


@dataclass
class Split:
    """The training crystals and the held-out ones (rows of ``held_out``), with their targets."""

    train_rows: np.ndarray
    y_train: np.ndarray
    held_out: CrystalSet
    val_rows: np.ndarray
    y_val: np.ndarray


def split_data(crystals: CrystalSet, config: PropertyTrainConfig, val: str | Path | None) -> Split:
    """Train on ``crystals``, hold out ``val`` (a CrystalSet file) or a seeded ``val_fraction``.

    Raises:
        CrysgenError: no training crystal left, or a classifier's target that is not 0/1.
    """
    rows, y = target_values(crystals, config.target)
    if val is None:
        perm = np.random.default_rng(config.seed).permutation(len(rows))
        n_val = max(1, round(config.val_fraction * len(rows)))
        held, train = perm[:n_val], perm[n_val:]
        split = Split(rows[train], y[train], crystals, rows[held], y[held])
    else:
        val_set = CrystalSet.load(val)
        split = Split(rows, y, val_set, *target_values(val_set, config.target))
    if not len(split.train_rows):
        raise CrysgenError(f"val_fraction {config.val_fraction} leaves no training crystal of "
                           f"{len(rows)} with a known {config.target!r}")
    values = set(np.unique(np.concatenate([split.y_train, split.y_val])))
    if config.classification and not values <= {0.0, 1.0}:
        raise CrysgenError(f"classification needs a 0/1 target; {config.target!r} has other values")
    return split


def resolve_steps(config: PropertyTrainConfig, n_train: int) -> PropertyTrainConfig:
    """``max_steps`` from ``epochs`` and ``checkpoint_every`` from the epoch length, where they are 0."""
    per_epoch = math.ceil(n_train / config.batch_size)
    return replace(config, max_steps=config.max_steps or config.epochs * per_epoch,
                   checkpoint_every=config.checkpoint_every or per_epoch * max(1, config.epochs // 10))


def new_network(config: PropertyTrainConfig, init: str | None, models_dir: str | Path | None) -> CGCNN:
    """A new run's network: embedding and convolutions from ``init``, else from scratch."""
    from crysgen.properties.registry import load_property_model
    from crysgen.properties.registry import models_dir as resolve_models_dir
    from crysgen.representations.graph import load_atom_features

    n_out = 2 if config.classification else 1
    if init is not None:
        base = load_property_model(init, models_dir)
        net_cfg = CGCNNConfig(**{**base.net.config.to_dict(), "n_out": n_out,
                                 "classification": config.classification})
        net = CGCNN(config=net_cfg, atom_features=base.net.atom_features, graph=base.net.graph)
        net.embedding.load_state_dict(base.net.embedding.state_dict())
        net.convs.load_state_dict(base.net.convs.state_dict())
        return net
    table = load_atom_features(resolve_models_dir(models_dir) / "atom_init.json")
    net_cfg = CGCNNConfig(atom_feature_len=table.shape[1], atom_fea_len=config.atom_fea_len,
                          n_conv=config.n_conv, n_out=n_out, classification=config.classification)
    return CGCNN(config=net_cfg, atom_features=torch.from_numpy(table))


def export_model(module: PropertyModule, data: dict[str, Any], out: Path, *, state: PropertyRunState,
                 val_graphs: list[CrystalGraph], y_val: np.ndarray, run_dir: Path | None = None,
                 seconds: float = 0.0) -> Path:
    """Save the module's network as a property model directory, scored on the held-out crystals.

    Writes ``out`` (its metadata: ``data``, the sizes, settings and held-out scores) and, given
    ``run_dir`` (a training run's own export), ``metrics.json`` and, for a regressor,
    ``parity.png`` there. The network is copied, so training goes on undisturbed.
    """
    cfg = module.cfg
    model = PropertyModel(copy.deepcopy(module.net).float().eval(), cfg.target, cfg.unit, module.mean,
                          module.std, ("0", "1") if cfg.classification else ())
    pred = model.predict(val_graphs, device=str(module.device))
    metrics: dict[str, Any] = {"target": cfg.target, "unit": cfg.unit, "step": data.get("step"),
                               "n_train": state.n_train, "n_val": state.n_val, "init": state.init,
                               "freeze_conv": cfg.freeze_conv, "config": cfg.to_dict(),
                               "train_seconds": round(seconds, 1)}
    if cfg.classification:
        metrics["val_accuracy"] = float((pred.argmax(1) == y_val).mean())
    else:
        metrics |= {"val_mae": mean_absolute_error(y_val, pred), "val_smape": smape(y_val, pred)}
        if run_dir is not None:
            label = f"{cfg.target} ({cfg.unit})" if cfg.unit else cfg.target
            plot_parity(y_val, pred, run_dir / "parity.png", label)
    model.info = data | {"n_train": state.n_train, "n_val": state.n_val,
                         "val": Path(state.val).name if state.val else None, "init": state.init,
                         "freeze_conv": cfg.freeze_conv, "config": cfg.to_dict(),
                         "val_metrics": {k: v for k, v in metrics.items() if k.startswith("val_")}}
    model.save_pretrained(out)
    if run_dir is not None:
        write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return out


def held_out(run: Path, config: PropertyTrainConfig, state: PropertyRunState,
             data: str | Path | None) -> tuple[CrystalSet, np.ndarray, np.ndarray]:
    """A run's held-out crystals, the rows with a known target and the values, as the run split them.

    They are the run's ``--val`` file or, without one, the seeded share of its training set
    (``data``, checked against the run's fingerprint).

    Raises:
        CrysgenError: the training set is needed but not given (or another one is), the ``--val``
            file is gone, or the held-out crystals are not as many as the run's.
    """
    needed = "a property model's export is scored on the crystals its run held out"
    if state.val is not None:
        if data is not None:
            training_data(run, data, needed)
        crystals = CrystalSet.load(state.val)
        rows, y = target_values(crystals, config.target)
    else:
        split = split_data(training_data(run, data, needed + " (a share of its training set)"), config, None)
        crystals, rows, y = split.held_out, split.val_rows, split.y_val
    if len(rows) != state.n_val:
        raise CrysgenError(f"{run}: {len(rows)} held-out crystals with a known {config.target!r}; the run "
                           f"had {state.n_val}")
    return crystals, rows, y


def export_checkpoint(run: str | Path, out: str | Path, *, step: int | None = None,
                      data: str | Path | None = None) -> Path:
    """Export one of a property run's checkpoints as the model directory the run wrote there.

    The network, its normalisation and the held-out scores in its metadata are those of the
    checkpoint; the run's own ``metrics.json`` and ``parity.png`` (of its latest export) are
    left as they are.

    Args:
        run: run directory of `crysgen train property`.
        out: model directory to write.
        step: the checkpoint ``checkpoints/stepNNNNNNN.ckpt`` to export (None: ``last.ckpt``).
        data: the run's training CrystalSet, needed when the run held out a share of it (no
            ``--val`` file) to score the model.

    Raises:
        CrysgenError: if the run or the checkpoint does not exist, or the held-out crystals
            cannot be rebuilt (see :func:`held_out`).
    """
    run = Path(run)
    ckpt = read_checkpoint(run, step)
    state = PropertyRunState.load(run / STATE_FILE)
    hp = ckpt["hyper_parameters"]
    config = PropertyTrainConfig.from_dict(hp["config"])
    module = PropertyModule(state.network(), mean=float(hp["mean"]), std=float(hp["std"]), config=config)
    module.load_state_dict(ckpt["state_dict"])
    crystals, rows, y_val = held_out(run, config, state, data)
    val_graphs = [build_graph(crystals.to_structure(int(i))) for i in rows]
    return export_model(module, checkpoint_data(run, int(ckpt["global_step"])), Path(out), state=state,
                        val_graphs=val_graphs, y_val=y_val)


def train_property(
    data: str | Path,
    out: str | Path,
    *,
    target: str | None = None,
    config: PropertyTrainConfig | None = None,
    val: str | Path | None = None,
    init: str | None = None,
    freeze_conv: bool | None = None,
    models_dir: str | Path | None = None,
    unit: str | None = None,
    max_steps: int | None = None,
    devices: int = 1,
    resume: bool = False,
    accelerator: str = "auto",
    progress: bool = True,
    max_minutes: float | None = None,
) -> Path:
    """Train a CGCNN property model; returns the exported model directory.

    Args:
        data: training CrystalSet (.npz) with a ``target`` property column.
        out: run directory.
        target: the property column (sets ``config.target``).
        config: run settings (defaults if None); on resume the saved config is used.
        val: CrystalSet for validation and the reported metrics; None holds out
            ``config.val_fraction`` of ``data`` (seeded). A resumed run keeps its own.
        init: property model name or directory whose embedding + convolutions start a new run.
        freeze_conv: keep the initialised layers fixed (sets ``config.freeze_conv``; needs ``init``).
        models_dir: where model names and ``atom_init.json`` are looked up.
        unit: the target's unit (sets ``config.unit``), for the model's metadata and the CSV
            column of `predict`.
        max_steps: overrides ``config.max_steps`` (a resumed run continues up to it).
        devices: GPUs (DDP when > 1) or CPU processes.
        resume: continue from ``out/checkpoints/last.ckpt`` (same step, optimiser, split and
            normalisation); ``target``, ``unit``, ``freeze_conv`` and ``val``, when given, must
            be the run's.
        accelerator: Lightning accelerator ("auto", "cpu", "gpu").
        progress: show the progress bar.
        max_minutes: stop (checkpoint and export) after this wall time.

    Raises:
        CrysgenError: for a missing column or file, a bad option, a new run into a used
            directory, resume without a checkpoint, or settings that differ from a resumed run's.
    """
    started = time.perf_counter()
    given: dict[str, Any] = {k: v for k, v in (("target", target), ("unit", unit),
                                               ("freeze_conv", freeze_conv)) if v is not None}
    holder: dict[str, Split] = {}
    net: CGCNN | None = None
    if not resume:
        config = replace(config or PropertyTrainConfig(), **given)
        if not config.target:
            raise CrysgenError("a property run needs a target: pass --target (or set target in --config)")
        if config.freeze_conv and init is None:
            raise CrysgenError("--freeze-conv needs --init (the layers to freeze come from that model)")
        L.seed_everything(config.seed, workers=True)  # before the initialisation
        net = new_network(config, init, models_dir)  # (--init with --resume: open_run refuses it)

    def split_of(crystals: CrystalSet, c: PropertyTrainConfig) -> Split:
        if "split" not in holder:
            holder["split"] = split_data(crystals, c, val)
        return holder["split"]

    def resolve(c: PropertyTrainConfig, crystals: CrystalSet) -> PropertyTrainConfig:
        if c.max_steps and c.checkpoint_every:  # a resumed run's saved config is resolved
            return c
        return resolve_steps(c, len(split_of(crystals, c).train_rows))

    def fit_state(crystals: CrystalSet, c: PropertyTrainConfig) -> PropertyRunState:
        assert net is not None  # a new run
        s = split_of(crystals, c)
        mean = 0.0 if c.classification else float(s.y_train.mean())
        std = 1.0 if c.classification else float(s.y_train.std() or 1.0)
        return PropertyRunState(mean, std, net.config.to_dict(), asdict(net.graph), len(net.atom_features),
                                len(s.train_rows), len(s.val_rows),
                                str(Path(val).resolve()) if val is not None else None, init)

    run = open_run(data, out, config, PropertyTrainConfig, resume=resume, max_steps=max_steps, init=init,
                   resolve=resolve, fit_scaling=fit_state, load_scaling=PropertyRunState.load,
                   scaling_file=STATE_FILE)
    config, state = run.config, run.scaling
    if resume:
        _check_resumed(config, state, given, val)
        split = split_data(run.crystals, config, state.val)
        if (len(split.train_rows), len(split.val_rows)) != (state.n_train, state.n_val):
            raise CrysgenError(f"--data gives {len(split.train_rows)} training and {len(split.val_rows)} "
                               f"held-out crystals; the run had {state.n_train} and {state.n_val}")
        L.seed_everything(config.seed, workers=True)
        net = state.network()
    else:
        split = holder["split"]
    assert net is not None
    graphs = [build_graph(run.crystals.to_structure(int(i))) for i in split.train_rows]
    val_graphs = [build_graph(split.held_out.to_structure(int(i))) for i in split.val_rows]
    module = PropertyModule(net, mean=state.mean, std=state.std, config=config)
    loader = torch.utils.data.DataLoader(GraphDataset(graphs, split.y_train), batch_size=config.batch_size,
                                         shuffle=True, collate_fn=_collate)
    val_loader = torch.utils.data.DataLoader(GraphDataset(val_graphs, split.y_val),
                                             batch_size=config.batch_size * 4, collate_fn=_collate)

    def export(m: PropertyModule, fingerprint: dict[str, Any], path: Path) -> Path:
        return export_model(m, fingerprint, path, run_dir=run.out, state=state, val_graphs=val_graphs,
                            y_val=split.y_val, seconds=time.perf_counter() - started)

    return fit(run, module, loader, max_iterations=config.max_steps,
               checkpoint_every=config.checkpoint_every, log_every=config.log_every,
               precision=config.precision, samples_per_iteration=config.batch_size, export=export,
               devices=devices, accelerator=accelerator, progress=progress,
               max_minutes=max_minutes, val_loader=val_loader)


def _check_resumed(config: PropertyTrainConfig, state: PropertyRunState, given: dict[str, Any],
                   val: str | Path | None) -> None:
    """A resumed run keeps its target, unit, frozen layers and held-out crystals."""
    differ = [f"--{k.replace('_', '-')} {v!r} (the run's: {getattr(config, k)!r})"
              for k, v in given.items() if getattr(config, k) != v]
    if val is not None and (state.val is None or Path(val).resolve() != Path(state.val)):
        differ.append(f"--val {val} (the run's: {state.val or 'a share of --data'})")
    if differ:
        raise CrysgenError("a resumed run keeps its own settings; leave out or correct " + ", ".join(differ))


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
