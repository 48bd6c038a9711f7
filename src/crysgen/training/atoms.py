"""`crysgen train atom-diffusion`: Lightning training of the atom diffusion transformer.

The run directory is the shared one (:mod:`crysgen.training.runs`) with ``atoms.json`` (the
:class:`~crysgen.representations.atoms.AtomSetSpec`) in place of a CrysTens scaling; ``model/``
holds the EMA weights, exported at every checkpoint and at the end.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import torch

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.models.atom_transformer import AtomTransformer, resize_blocks, widen_frequencies
from crysgen.models.atoms import SPEC_FILE, AtomDiffusionBundle
from crysgen.objectives.atom_edm import Constants, Parts, edm_loss, permute_axes, wrap
from crysgen.representations.atoms import AtomSetSpec, encode, niggli_reduce, num_elements
from crysgen.representations.elements import CODE_DIM
from crysgen.training.config import AtomTrainConfig
from crysgen.training.runs import (
    adamw_with_warmup,
    batch_loader,
    checkpoint_data,
    ema_copy,
    fit,
    open_run,
    read_checkpoint,
)


def atom_loader(crystals: CrystalSet, spec: AtomSetSpec, batch_size: int, *,
                shuffle: bool) -> torch.utils.data.DataLoader:
    """Batches of encoded crystals.

    Each batch: types (B, S, D), frac (B, S, 3), lattice (B, 6), mask (B, S), space group (B,)
    and number of distinct elements (B,).
    """
    sets = encode(crystals, spec)
    parts = (sets.types, sets.frac, sets.lattice, sets.mask, crystals.space_group.astype(np.int64),
             num_elements(crystals.atomic_numbers))
    return batch_loader(*(torch.from_numpy(p) for p in parts), batch_size=batch_size, shuffle=shuffle)


SWITCHABLE = {"space_groups": "space_group", "num_elements": "num_elements", "num_sites": "num_sites",
              "pair_messages": "msg", "displacement_head": "displace"}
"""Network options that ``--init`` may switch on -> the name of the modules each adds (anywhere in a
weight's dotted name: ``num_elements.weight``, ``blocks.3.msg.out.weight``)."""
SHAPING = {"pair_messages": ("message_width",), "displacement_head": ("head_width",)}
"""Options that shape only a switchable option's modules: ``--init`` may set them while it switches
that option on."""
FREE = ("dropout",)
"""Network options that change no weight: ``--init`` may set them to anything."""
GROWABLE = ("n_freqs", "edge_freqs")
"""Network options that ``--init`` may raise (never lower): more Fourier frequencies for the sites'
and the pairs' coordinates, their new input weights starting at zero (``widen_frequencies``)."""
RESIZABLE = ("n_layers",)
"""Network options that ``--init`` may lower or raise (``resize_blocks``): fewer blocks, kept evenly
spaced from the init network's (a faster CPU variant fine-tuned from a trained model), or more, the
init network's blocks spread evenly among new ones that start as the identity (a deeper network that
computes what the trained one did until it trains)."""


class AtomDiffusionModule(L.LightningModule):
    """Denoiser + EDM loss + EMA copy of the weights (the one exported and sampled)."""

    _forward: torch.nn.Module  # the network, or its torch.compile wrapper

    def __init__(self, config: dict[str, Any], spec: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config, "spec": spec})
        self.cfg = AtomTrainConfig.from_dict(config)
        self.spec = AtomSetSpec(**spec)
        self.net = AtomTransformer(**(self.cfg.net.to_dict() | {"type_dim": CODE_DIM}))
        self.ema = ema_copy(self.net, self.cfg.optim.ema_decay, warmup=self.cfg.optim.ema_warmup)
        self.consts = Constants.from_spec(self.spec)
        # compiled forward kept outside the module tree, so state_dict keys stay plain
        mode = self.cfg.compile_mode
        object.__setattr__(self, "_forward", self.net if mode is None else torch.compile(self.net, mode=mode))

    def conditions(self, sg: torch.Tensor, ne: torch.Tensor) -> dict[str, torch.Tensor]:
        """The conditions the network takes, from a batch's space groups and element counts."""
        net = self.cfg.net
        return {k: v for k, v, on in (("space_group", sg, net.space_groups),
                                      ("num_elements", ne, net.num_elements)) if on}

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """One EDM step on a batch, each crystal shifted by a random vector.

        With ``data.permute_axes``, each crystal's axes are also listed in a random order.
        """
        types, frac, lattice, mask, sg, ne = batch
        if self.cfg.data.translate:
            frac = wrap(frac + torch.rand(len(frac), 1, 3, device=frac.device)) * mask[..., None]
        if self.cfg.data.permute_axes:
            frac, lattice = permute_axes(frac, lattice, self.consts)
        loss, parts = edm_loss(self._forward, Parts(types, frac, lattice), mask, self.cfg.edm, self.consts,
                               conditions=self.conditions(sg, ne))
        self.log("train_loss", loss, prog_bar=True, on_step=True)
        self.log_dict({f"train_{k}": v for k, v in parts.items()}, on_step=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        """EMA model's loss on validation crystals (the same noise every time)."""
        types, frac, lattice, mask, sg, ne = batch
        gen = torch.Generator(device="cpu").manual_seed(batch_idx)
        loss, parts = edm_loss(self.ema.module, Parts(types, frac, lattice), mask, self.cfg.edm, self.consts,
                               generator=gen, conditions=self.conditions(sg, ne))
        self.log("val_loss", loss, prog_bar=True, sync_dist=True)
        self.log_dict({f"val_{k}": v for k, v in parts.items()}, sync_dist=True)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimiser step, then the EMA update.

        Inside the step, so that a checkpoint saved at this step (by a callback's
        ``on_train_batch_end``, which runs before the module's) holds the EMA of every step it counts.
        """
        super().optimizer_step(*args, **kwargs)
        self.ema.update_parameters(self.net)

    def iteration(self, trainer: L.Trainer) -> int:
        """Optimiser steps taken."""
        return int(trainer.global_step)

    def configure_optimizers(self) -> Any:
        """AdamW with linear warm-up."""
        return adamw_with_warmup(self.net.parameters(), self.cfg.optim)


def export_model(module: AtomDiffusionModule, data: dict[str, Any], out: Path) -> Path:
    """Save the module's EMA weights as an ``atom_diffusion`` model directory."""
    net = cast(AtomTransformer, module.ema.module)
    return AtomDiffusionBundle(net, module.cfg.edm, module.spec, data).save_pretrained(out)


def export_checkpoint(run: str | Path, out: str | Path, *, step: int | None = None) -> Path:
    """Export the EMA weights of one of an atom diffusion run's checkpoints as a model directory.

    Args:
        run: run directory of `crysgen train atom-diffusion`.
        out: model directory to write.
        step: the checkpoint ``checkpoints/stepNNNNNNN.ckpt`` to export (None: ``last.ckpt``).

    Raises:
        CrysgenError: if the run or the checkpoint does not exist.
    """
    state = read_checkpoint(run, step)
    hp = state["hyper_parameters"]
    # eager: exporting runs no forward, so a compiled wrapper would only cost its set-up
    module = AtomDiffusionModule(hp["config"] | {"compile": False}, hp["spec"])
    module.load_state_dict(state["state_dict"])
    return export_model(module, checkpoint_data(run, int(state["global_step"])), Path(out))


def train_atom_diffusion(
    data: str | Path,
    out: str | Path,
    *,
    config: AtomTrainConfig | None = None,
    val: str | Path | None = None,
    max_steps: int | None = None,
    devices: int = 1,
    resume: bool = False,
    accelerator: str = "auto",
    progress: bool = True,
    max_minutes: float | None = None,
    init: str | Path | None = None,
) -> Path:
    """Train an atom diffusion transformer; returns the exported model directory.

    Args:
        data: training CrystalSet (.npz), any cell convention (Niggli-reduced here by default).
        out: run directory.
        config: run settings (defaults if None); on resume the saved config is used.
        val: optional validation CrystalSet; the EMA model's loss is logged at checkpoints.
        max_steps: overrides ``config.optim.max_steps``.
        devices: GPUs (DDP when > 1) or CPU processes.
        resume: continue from ``out/checkpoints/last.ckpt`` (same step, optimiser and EMA).
        accelerator: Lightning accelerator ("auto", "cpu", "gpu").
        progress: show the progress bar.
        max_minutes: stop (checkpoint and export) after this wall time.
        init: warm start from an ``atom_diffusion`` model directory with the same network config,
            except that the options of :data:`SWITCHABLE` (``space_groups``, ``num_elements``,
            ``num_sites``, ``pair_messages``, ``displacement_head``) may be switched on (a new
            module starts from its initialisation), those of :data:`GROWABLE` raised, :data:`RESIZABLE`
            lowered or raised (blocks kept or spread evenly) and :data:`FREE` set;
            weights go into the network and its EMA copy, the optimiser starts afresh, and the
            encoding of ``init``'s spec is kept so the encodings agree, with this data's sizes and
            elements (``AtomSetSpec.refit``: a model of larger crystals may start from one of
            smaller ones).

    Raises:
        CrysgenError: for a missing file, resume without a checkpoint, a crystal larger than
            ``data.max_atoms``, or an ``init`` model with another network or lattice code.
    """
    holder: dict[str, CrystalSet] = {}  # the reduced cells, so a new run reduces them once
    init_model = AtomDiffusionBundle.from_pretrained(init) if init is not None else None

    def fit_spec(crystals: CrystalSet, config: AtomTrainConfig) -> AtomSetSpec:
        holder["reduced"] = niggli_reduce(crystals) if config.data.niggli else crystals
        if init_model is not None:  # keep the encoding the weights were trained with
            if init_model.spec.lattice_code != config.data.lattice_code:
                raise CrysgenError(f"--init {init} encodes lattices as {init_model.spec.lattice_code!r}, "
                                   f"this run's config as {config.data.lattice_code!r} (data.lattice_code)")
            return init_model.spec.refit(holder["reduced"], config.data.max_atoms or None)
        return AtomSetSpec.fit(holder["reduced"], config.data.max_atoms or None, config.data.lattice_code)
    run = open_run(data, out, config, AtomTrainConfig, resume=resume, max_steps=max_steps, init=init,
                   fit_scaling=fit_spec, load_scaling=AtomSetSpec.load, scaling_file=SPEC_FILE)
    config, spec = run.config, run.scaling
    crystals = holder.get("reduced") or (niggli_reduce(run.crystals) if config.data.niggli else run.crystals)
    if init_model is not None:
        want = AtomTransformer(**(config.net.to_dict() | {"type_dim": CODE_DIM})).config
        have = init_model.net.config
        switchable = {k: want[k] for k in (*SWITCHABLE, *FREE, *GROWABLE, *RESIZABLE)} | {
            k: want[k] for option, keys in SHAPING.items() if not have[option] for k in keys}
        if (have | switchable != want or any(have[k] and not want[k] for k in SWITCHABLE)
                or any(want[k] < have[k] for k in GROWABLE)):
            raise CrysgenError(f"--init {init}: its network config differs from this run's "
                               f"(only {', '.join(SWITCHABLE)} may be switched on, {', '.join(GROWABLE)} "
                               f"raised, {', '.join(RESIZABLE)} changed, {', '.join(FREE)} set)")
        # step: every step behind the init weights (its own run's and those of the model it began from)
        prior = init_model.data.get("init")
        behind = int(prior.get("step") or 0) if isinstance(prior, dict) else 0
        run.fingerprint["init"] = {"model": str(init), "step": int(init_model.data.get("step") or 0) + behind}
    o = config.optim
    L.seed_everything(o.seed, workers=True)
    loader = atom_loader(crystals, spec, o.batch_size, shuffle=True)
    val_loader = None
    if val is not None:
        vs = CrystalSet.load(val)
        vs = vs.subset(np.flatnonzero(vs.num_sites <= spec.max_atoms))
        val_loader = atom_loader(niggli_reduce(vs) if config.data.niggli else vs, spec, o.batch_size,
                                 shuffle=False)
    module = AtomDiffusionModule(config.to_dict(), asdict(spec))
    if init_model is not None:  # a switched-on module starts from its initialisation
        have, want = init_model.net.config, module.net.config
        state = resize_blocks(widen_frequencies(init_model.net.state_dict(), have, want), have, want,
                              fresh=module.net.state_dict())
        added = set(SWITCHABLE.values())
        for net in (module.net, module.ema.module):
            missing, unexpected = net.load_state_dict(state, strict=False)
            if unexpected or any(not added & set(k.split(".")) for k in missing):
                raise CrysgenError(f"--init {init}: weights do not fit ({missing + unexpected})")
    return fit(run, module, loader, max_iterations=o.max_steps, checkpoint_every=o.checkpoint_every,
               log_every=o.log_every, precision=o.precision, samples_per_iteration=o.batch_size,
               export=export_model, devices=devices, accelerator=accelerator, progress=progress,
               max_minutes=max_minutes, val_loader=val_loader, gradient_clip_val=o.grad_clip or None)
