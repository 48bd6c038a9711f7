"""Fitting a composition language model (:mod:`crysgen.models.composition_lm`) to known crystals.

``crysgen train composition --data TRAIN.npz --val VAL.npz --out DIR`` fits the network to the
cell compositions of the training crystals (every crystal counts once, so compositions shared by
polymorphs weigh more, as in the data) by next-token cross-entropy with AdamW and a cosine
learning rate. The model is small (about 0.6 M parameters by default) and trains in minutes on a
CPU; a plain loop does it (no Lightning run directory, checkpoints or resume: a run that is
stopped is started again). With ``--val`` the saved weights are those of the epoch with the lowest
validation negative log-likelihood, so that a model that starts to memorise its training
compositions is not the one kept.

The output directory is a model directory (``config.json``, ``weights.safetensors``) with
``metrics.csv`` (per epoch: train and validation NLL in nats per composition) and
``curves.png``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.models.model_dir import data_fingerprint
from crysgen.training.config import CompositionTrainConfig


def _sizes(crystals: list[CrystalSet], net: dict[str, Any]) -> dict[str, Any]:
    """``net`` with ``max_sites`` / ``max_elements`` set to the data's largest where unset.

    Raises:
        CrysgenError: if a crystal has more sites or elements than ``net`` allows.
    """
    from crysgen.representations.atoms import num_elements

    sites = max(int(c.num_sites.max()) for c in crystals)
    elements = max(int(num_elements(c.atomic_numbers).max()) for c in crystals)
    out = {"max_sites": sites, "max_elements": elements} | net
    if sites > out["max_sites"] or elements > out["max_elements"]:
        raise CrysgenError(f"the crystals have up to {sites} sites and {elements} elements; net.max_sites "
                           f"{out['max_sites']} / net.max_elements {out['max_elements']} are too small")
    return out


def train_composition_model(data: str | Path, out: str | Path, *,
                            config: CompositionTrainConfig | None = None, val: str | Path | None = None,
                            device: str = "cpu", progress: bool = True) -> Path:
    """Fit a composition language model and write its model directory.

    Args:
        data: training CrystalSet .npz.
        out: the model directory (created; a model already there is replaced only at the end).
        config: settings (default: :class:`CompositionTrainConfig`'s).
        val: validation CrystalSet .npz: its NLL is logged and picks the epoch whose weights are kept.
        device: torch device of the training.
        progress: show a progress bar over the epochs.

    Returns:
        ``out``.

    Raises:
        CrysgenError: for a missing or empty data file, or crystals the network cannot write.
    """
    import torch
    from tqdm.auto import tqdm

    from crysgen.models.composition_lm import CompositionLM, CompositionModel, sequence_nll
    from crysgen.representations.composition_tokens import encode_compositions

    config = config or CompositionTrainConfig()
    train_set = _load(data, "--data")
    val_set = _load(val, "--val") if val is not None else None
    net_cfg = _sizes([train_set] + ([val_set] if val_set is not None else []), config.net)
    torch.manual_seed(config.seed)
    net = CompositionLM(**net_cfg).to(device)
    vocab = net.cfg.vocab
    train_tokens = torch.from_numpy(encode_compositions(train_set.atomic_numbers, vocab))
    val_tokens = (torch.from_numpy(encode_compositions(val_set.atomic_numbers, vocab))
                  if val_set is not None else None)
    steps_per_epoch = math.ceil(len(train_tokens) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = max(1, total // 20)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(k, total) / total)))
    gen = torch.Generator().manual_seed(config.seed)
    rows: list[dict[str, float]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    bar = tqdm(range(config.epochs), desc="composition model", unit="epoch", disable=not progress)
    for epoch in bar:
        net.train()
        order = torch.randperm(len(train_tokens), generator=gen)
        total_nll = 0.0
        for k in range(steps_per_epoch):
            batch = train_tokens[order[k * config.batch_size:(k + 1) * config.batch_size]].to(device)
            loss = sequence_nll(net, batch).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            total_nll += float(loss.detach()) * len(batch)
        row = {"epoch": epoch + 1, "train_nll": total_nll / len(train_tokens)}
        if val_tokens is not None:
            row["val_nll"] = _mean_nll(net, val_tokens, device)
            if best is None or row["val_nll"] < best[0]:
                best = (row["val_nll"], {k: v.detach().clone() for k, v in net.state_dict().items()})
        rows.append(row)
        bar.set_postfix({k: round(v, 3) for k, v in row.items() if k != "epoch"})
    if best is not None:
        net.load_state_dict(best[1])
    elements = sorted({int(z) for z in np.unique(train_set.atomic_numbers)} - {0})
    model = CompositionModel(net.cpu().eval(), elements, data_fingerprint(train_set, Path(data).name))
    out = Path(out)
    model.save_pretrained(out)
    _write_metrics(out, rows)
    return out


def _load(path: str | Path, what: str) -> CrystalSet:
    """A CrystalSet with at least one crystal (CrysgenError otherwise)."""
    from crysgen.data.guards import check_input_file

    check_input_file(path, what)
    crystals = CrystalSet.load(path)
    crystals = crystals.subset(np.flatnonzero(crystals.num_sites > 0))
    if not len(crystals):
        raise CrysgenError(f"{what} {path} holds no crystal")
    return crystals


def _mean_nll(net: Any, tokens: Any, device: str) -> float:
    """Mean NLL (nats per composition) of ``tokens`` in eval mode."""
    import torch

    from crysgen.models.composition_lm import sequence_nll

    net.eval()
    with torch.no_grad():
        total = sum(float(sequence_nll(net, tokens[i:i + 4096].to(device)).sum())
                    for i in range(0, len(tokens), 4096))
    return total / len(tokens)


def _write_metrics(out: Path, rows: list[dict[str, float]]) -> None:
    """metrics.csv (one row per epoch) and curves.png (NLL against epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with (out / "metrics.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in ("train_nll", "val_nll"):
        if key in rows[0]:
            ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("NLL (nats per composition)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
