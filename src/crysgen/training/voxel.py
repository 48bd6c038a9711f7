"""`crysgen train segmenter|vae`: the voxel pipeline of Court et al. with Lightning.

The training set is voxelised once, in ``optim.workers`` processes (density as float16, species
as uint8: 100 kB per crystal at G = 32); coordinate channels are rebuilt on the device from the
cell lengths, and each crystal gets a random rotation of three 90° turns per step
(``optim.rotate``; seed_code.md §6.2 used 10 fixed rotations per crystal), applied to all its
grids alike. With ``coordinates: grid`` the coordinate channels are rebuilt after the turn from
the lengths that now lie along each axis instead of being turned with the grid (issue 21: turned
channels make the decoder guess the orientation, and a guess blends ramps into flat channels).

* segmenter: UNet3D, weighted cross-entropy over species (inverse-frequency class weights,
  background 0, actually applied) + occupancy BCE.
* vae: the conditional VAE, condition = decile class of ``condition`` (edges from the training
  data), loss = MSE + α·DFC + β·KL with the frozen segmenter's features (MSE channels weighted
  by ``channel_weights``); the exported model directory carries the segmenter so it can be
  sampled alone, and the posterior-matched prior fitted on the first :data:`PRIOR_CRYSTALS`
  training crystals (``latent_prior.npz``, for ``prior="posterior"`` sampling).

Run directories are those of :mod:`crysgen.training.runs`, with ``voxel.json`` in place of
``scaling.json``.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.models.unet3d import UNet3D
from crysgen.models.voxel import (
    SPEC_FILE,
    LatentPrior,
    SegmenterModel,
    VoxelBundle,
    VoxelSpec,
    load_segmenter,
    one_hot,
)
from crysgen.models.voxel_vae import VoxelVAE
from crysgen.objectives.voxel import channel_weights, class_weights, segmentation_loss, vae_loss
from crysgen.representations.voxel import (
    VoxelConfig,
    density,
    network_input,
    random_rotation,
    rotated_lengths,
    species_map,
    unusable_reason,
)
from crysgen.training.config import VoxelTrainConfig
from crysgen.training.runs import checkpoint_data, fit, open_run, read_checkpoint, training_data

PRIOR_CRYSTALS = 1024
"""Training crystals (the first ones) whose posteriors fit a VAE's ``latent_prior.npz`` at export."""


def _voxelise_chunk(args: tuple[CrystalSet, VoxelConfig]) -> tuple[np.ndarray, np.ndarray]:
    cs, config = args
    return density(cs, config).astype(np.float16), species_map(cs, config)


def voxelise(crystals: CrystalSet, config: VoxelConfig, *, workers: int = 0, chunk: int = 64,
             progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Density float16 (N, G, G, G) and species uint8 (N, G, G, G) of every crystal, in parallel."""
    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    parts = [(crystals.subset(np.arange(s, min(s + chunk, len(crystals)))), config)
             for s in range(0, len(crystals), chunk)]
    if workers <= 1 or len(parts) == 1:
        done = [_voxelise_chunk(p) for p in tqdm(parts, desc="voxelise", disable=not progress)]
    else:
        with ProcessPoolExecutor(workers) as pool:
            done = list(tqdm(pool.map(_voxelise_chunk, parts), total=len(parts), desc="voxelise",
                             disable=not progress))
    return np.concatenate([d for d, _ in done]), np.concatenate([s for _, s in done])


def usable(crystals: CrystalSet, config: VoxelConfig) -> CrystalSet:
    """The orthogonal crystals of a set; raises when none is left."""
    reasons = unusable_reason(crystals, config)
    keep = np.asarray([r is None for r in reasons])
    if not keep.any():
        raise CrysgenError(f"none of the {len(crystals)} crystals can be voxelised, e.g.: {reasons[0]}")
    return crystals.subset(np.flatnonzero(keep))


class VoxelBatches(torch.utils.data.Dataset):
    """Voxelised crystals handed out a whole batch at a time (dict of tensors)."""

    def __init__(self, dens: np.ndarray, species: np.ndarray, lengths: np.ndarray,
                 classes: np.ndarray) -> None:
        self.t = {"density": torch.from_numpy(dens), "species": torch.from_numpy(species),
                  "lengths": torch.from_numpy(lengths.astype(np.float32)),
                  "condition": torch.from_numpy(classes.astype(np.int64))}

    def __len__(self) -> int:
        return len(self.t["density"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.t.items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return {k: v[idx] for k, v in self.t.items()}


def _as_batch(batch: Any) -> Any:
    return batch


def coordinate_grids(lengths: torch.Tensor, config: VoxelConfig, grid: int) -> torch.Tensor:
    """(B, 3, G, G, G) coordinate channels of cells with ``lengths`` (B, 3) Å along array axes 0-2.

    Channel k is ``i·1.5·L_k/G`` along array axis k (the torch twin of
    :func:`~crysgen.representations.voxel.coordinate_channels`).
    """
    g = grid
    ramp = torch.arange(g, device=lengths.device, dtype=torch.float32) * (config.span / g)
    coords = [(lengths[:, k, None].float() * ramp).view(-1, *[g if a == k else 1 for a in range(3)])
              .expand(-1, g, g, g) for k in range(3)]
    return torch.stack(coords, 1)


def device_inputs(batch: dict[str, torch.Tensor], config: VoxelConfig, *, rotate: bool,
                  generator: np.random.Generator | None = None, coordinates: str = "rotated",
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Network input (B, 4, G, G, G) and species (B, G, G, G), rotated per crystal when asked.

    The coordinate channels are rebuilt from the cell lengths on the batch's device. With
    ``coordinates="rotated"`` (the authors') they are turned with the density, values unchanged;
    with ``"grid"`` the density and species are turned and the coordinate channels built
    afterwards from the lengths that then lie along each axis (:func:`rotated_lengths`), so
    channel k always ramps up along axis k.
    """
    dens = batch["density"].float()
    lengths = batch["lengths"].float()
    g = dens.shape[-1]
    species = batch["species"].long()
    if not rotate:
        return torch.cat([dens[:, None], coordinate_grids(lengths, config, g)], 1).contiguous(), species
    rng = generator or np.random.default_rng()
    rotations = [random_rotation(rng) for _ in range(len(dens))]
    if coordinates == "grid":
        x = dens[:, None]
        turned = torch.stack([torch.from_numpy(rotated_lengths(lengths[i].cpu().numpy(), r))
                              for i, r in enumerate(rotations)]).to(lengths)
    else:
        x = torch.cat([dens[:, None], coordinate_grids(lengths, config, g)], 1)
    xs, ss = [], []
    for i, rotation in enumerate(rotations):
        xi, si = x[i], species[i]
        for a, b in rotation:
            xi, si = torch.rot90(xi, 1, (1 + a, 1 + b)), torch.rot90(si, 1, (a, b))
        xs.append(xi)
        ss.append(si)
    x, species = torch.stack(xs), torch.stack(ss)
    if coordinates == "grid":
        x = torch.cat([x, coordinate_grids(turned, config, g)], 1)
    return x.contiguous(), species.contiguous()


class VoxelModule(L.LightningModule):
    """Segmenter or conditional VAE (with a frozen segmenter for the feature loss)."""

    weights: torch.Tensor  # registered buffers
    channel_weights: torch.Tensor | None
    channel_scale: torch.Tensor

    def __init__(self, config: dict[str, Any], spec: dict[str, Any], segmenter_state: dict | None = None,
                 segmenter_config: dict | None = None) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config, "spec": spec, "segmenter_config": segmenter_config})
        self.cfg = VoxelTrainConfig.from_dict(config)
        self.voxel = VoxelConfig.from_dict(spec["voxel"])
        self.register_buffer("weights", torch.tensor(spec["class_weights"], dtype=torch.float32))
        cw = spec.get("channel_weights") or []
        self.register_buffer("channel_weights", torch.tensor(cw, dtype=torch.float32) if cw else None)
        scale = spec.get("channel_scale") or [1.0] * 4
        self.register_buffer("channel_scale", torch.tensor(scale, dtype=torch.float32).view(1, -1, 1, 1, 1))
        self.rng = np.random.default_rng(self.cfg.optim.seed)
        if self.cfg.kind == "segmenter":
            self.net: torch.nn.Module = UNet3D(width=self.cfg.width)
            self.frozen = None
        else:
            self.net = VoxelVAE(grid=self.voxel.grid, num_conditions=self.cfg.num_conditions,
                                width=self.cfg.width)
            self.frozen = UNet3D(**(segmenter_config or {}))
            if segmenter_state is not None:
                self.frozen.load_state_dict(segmenter_state)
            self.frozen.requires_grad_(False)

    def iteration(self, trainer: L.Trainer) -> int:
        """Optimiser steps done."""
        return int(trainer.global_step)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One step of the segmentation or VAE loss."""
        x, species = device_inputs(batch, self.voxel, rotate=self.cfg.optim.rotate, generator=self.rng,
                                   coordinates=self.cfg.coordinates)
        if self.frozen is None:
            logits, occ = self.net(x)
            loss, parts = segmentation_loss(logits, occ, species, self.weights)
        else:
            self.frozen.eval()
            cond = one_hot(batch["condition"], self.cfg.num_conditions, x.device)
            scaled = x / self.channel_scale  # what the VAE sees and outputs (channel_scale)
            recon, mu, logvar = self.net(scaled, cond)
            fx = fr = None
            if self.cfg.alpha:  # the UNet sees grids in electrons/Å³ and Å
                with torch.no_grad():
                    fx = self.frozen.features(x)
                fr = self.frozen.features(recon * self.channel_scale)
            loss, parts = vae_loss(scaled, recon, mu, logvar, fx, fr, alpha=self.cfg.alpha,
                                   beta=self.cfg.beta, weights=self.channel_weights)
        self.log("train_loss", loss, prog_bar=True)
        for k, v in parts.items():
            self.log(f"{k}_loss", v)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam (the authors' optimiser)."""
        return torch.optim.Adam(self.net.parameters(), lr=self.cfg.optim.lr)


def _fit_spec(crystals: CrystalSet, config: VoxelTrainConfig) -> VoxelSpec:
    voxel = VoxelConfig.from_dict(config.voxel)
    cs = usable(crystals, voxel)
    edges: list[float] = []
    if config.kind == "vae":
        if config.condition not in cs.properties:
            have = ", ".join(sorted(cs.properties)) or "none"
            raise CrysgenError(f"the training data has no property {config.condition!r} to condition on "
                               f"(it has: {have}); label it first or set condition in the config")
        values = cs.properties[config.condition]
        if not np.all(np.isfinite(values)):
            raise CrysgenError(f"{int((~np.isfinite(values)).sum())} training crystals lack "
                               f"{config.condition!r}; train on labelled crystals only")
        q = np.linspace(0, 1, config.num_conditions + 1)[1:-1]
        edges = [float(e) for e in np.quantile(values, q)]
    head = cs.subset(np.arange(min(len(cs), 2000)))  # enough for the species weights and merge_tol
    weights = class_weights(species_map(head, voxel))
    w = config.channel_weights
    scale: list[float] = []
    channels: list[float] = []
    if config.kind == "vae" and (w == "variance" or config.channel_scale == "rms"):
        # 256 crystals (134 MB of float32 grids at G = 32) fix these to a few per cent
        x = network_input(cs.subset(np.arange(min(len(cs), 256))), voxel)
        if config.channel_scale == "rms":
            rms = np.sqrt((x.astype(np.float64) ** 2).mean(axis=(0, 2, 3, 4)))
            scale = [float(v) if v > 0 else 1.0 for v in rms]
            x = x / np.asarray(scale, np.float32)[:, None, None, None]
        if w == "variance":
            if len(x) < 2:
                raise CrysgenError("channel_weights: variance needs at least 2 training crystals")
            channels = channel_weights(x).tolist()
    if config.kind == "vae" and not isinstance(w, str):
        channels = [float(v) for v in w]
    return VoxelSpec(voxel, config.condition if config.kind == "vae" else "", edges, weights.tolist(),
                     channels, scale, readback="slope" if config.coordinates == "grid" else "level",
                     merge_tol=merge_tolerance(head))


MERGE_QUANTILE = 0.001  # of the training crystals' nearest-neighbour distances: VoxelSpec.merge_tol


def merge_tolerance(crystals: CrystalSet) -> float | None:
    """Å: the crystals' nearest-neighbour distance (periodic) at its ``MERGE_QUANTILE``.

    The :attr:`VoxelSpec.merge_tol` of a model trained on them; None when no crystal has two sites.
    """
    nearest = []
    for s in crystals.to_structures():
        if len(s) > 1:
            d = s.distance_matrix
            np.fill_diagonal(d, np.inf)
            nearest.append(d.min())
    return round(float(np.quantile(nearest, MERGE_QUANTILE)), 3) if nearest else None


def init_weights(config: VoxelTrainConfig, init: str | Path) -> dict[str, torch.Tensor]:
    """The network weights of ``init``, an exported model of ``config.kind``.

    Raises:
        CrysgenError: the directory holds another kind, or weights of another network shape.
    """
    if config.kind == "segmenter":
        net: torch.nn.Module = load_segmenter(init)[0]
        fresh: torch.nn.Module = UNet3D(width=config.width)
    else:
        try:
            net = VoxelBundle.from_pretrained(init).vae
        except CrysgenError as exc:
            raise CrysgenError(f"--init {init}: {exc}") from exc
        fresh = VoxelVAE(grid=VoxelConfig.from_dict(config.voxel).grid, num_conditions=config.num_conditions,
                         width=config.width)
    state = net.state_dict()
    try:
        fresh.load_state_dict(state)
    except RuntimeError as exc:
        raise CrysgenError(f"--init {init} does not fit this run's network (width, conditions): "
                           f"{str(exc).splitlines()[0]}") from exc
    return state


def posterior_prior(model: VoxelBundle, dataset: VoxelBatches, device: torch.device) -> LatentPrior:
    """The posterior-matched prior of a VAE on the first :data:`PRIOR_CRYSTALS` training crystals.

    The posteriors come from the voxelised training grids, unrotated, on ``device``.
    """
    first = np.arange(min(len(dataset), PRIOR_CRYSTALS))
    mus, logvars = [], []
    for s in range(0, len(first), 64):
        batch = {k: v.to(device) for k, v in dataset.__getitems__(first[s:s + 64].tolist()).items()}
        grids, _ = device_inputs(batch, model.spec.voxel, rotate=False)
        mu, lv = model.encode_grids(grids, batch["condition"].cpu().numpy(), device=str(device))
        mus.append(mu)
        logvars.append(lv)
    return LatentPrior.fit(np.concatenate(mus), np.concatenate(logvars))


def export_model(module: VoxelModule, spec: VoxelSpec, data: dict[str, Any], out: Path,
                 dataset: VoxelBatches | None) -> Path:
    """Save the module's segmenter, or its VAE with the frozen segmenter, as a model directory.

    A VAE's directory gets the posterior-matched prior (:func:`posterior_prior`) of the
    voxelised training crystals ``dataset`` (their first :data:`PRIOR_CRYSTALS` suffice).
    """
    if module.cfg.kind == "segmenter":
        assert isinstance(module.net, UNet3D)  # a segmenter run's network
        return SegmenterModel(module.net, spec, data).save_pretrained(out)
    vae, segmenter = module.net, module.frozen
    assert isinstance(vae, VoxelVAE) and segmenter is not None  # a VAE run's module has both
    assert dataset is not None  # a VAE's export fits its prior on the training crystals
    model = VoxelBundle(vae, segmenter, spec, data)
    model.prior = posterior_prior(model, dataset, module.device)
    return model.save_pretrained(out)


def export_checkpoint(run: str | Path, out: str | Path, *, step: int | None = None,
                      data: str | Path | None = None) -> Path:
    """Export one of a segmenter or VAE run's checkpoints as the model directory the run wrote there.

    A VAE's latent prior is fitted again, as the run fits it, on its training crystals: the
    first :data:`PRIOR_CRYSTALS` usable ones of ``data`` (on the CPU here, so its numbers may
    differ from a GPU run's own export in the last digits).

    Args:
        run: run directory of `crysgen train segmenter|vae`.
        out: model directory to write.
        step: the checkpoint ``checkpoints/stepNNNNNNN.ckpt`` to export (None: ``last.ckpt``).
        data: the run's training CrystalSet (needed for a VAE run; checked against the run's
            fingerprint).

    Raises:
        CrysgenError: if the run or the checkpoint does not exist, or a VAE run's training set
            is not given (or another one is).
    """
    run = Path(run)
    ckpt = read_checkpoint(run, step)
    hp = ckpt["hyper_parameters"]
    module = VoxelModule(hp["config"], hp["spec"], segmenter_config=hp["segmenter_config"])
    module.load_state_dict(ckpt["state_dict"])  # the VAE's frozen segmenter too
    spec = VoxelSpec.load(run / SPEC_FILE)
    needed = "a voxel VAE's export fits its latent prior on the run's training crystals"
    dataset = None
    if module.cfg.kind == "vae":
        first = usable(training_data(run, data, needed), spec.voxel)
        first = first.subset(np.arange(min(len(first), PRIOR_CRYSTALS)))
        dens, species = voxelise(first, spec.voxel, workers=module.cfg.optim.workers, progress=False)
        dataset = VoxelBatches(dens, species, first.lattice[:, :3],
                               spec.condition_class(first.properties[spec.condition]))
    elif data is not None:  # not needed by a segmenter, but checked when given
        training_data(run, data, needed)
    return export_model(module, spec, checkpoint_data(run, int(ckpt["global_step"])), Path(out), dataset)


def train_voxel(
    data: str | Path,
    out: str | Path,
    *,
    kind: str | None = None,
    config: VoxelTrainConfig | None = None,
    segmenter: str | Path | None = None,
    init: str | Path | None = None,
    max_steps: int | None = None,
    devices: int = 1,
    resume: bool = False,
    accelerator: str = "auto",
    progress: bool = True,
    max_minutes: float | None = None,
) -> Path:
    """Train the segmenter or the conditional VAE; returns the exported model directory.

    Args:
        data: training CrystalSet (.npz); non-orthogonal crystals are left out (with a count).
        out: run directory.
        kind: "segmenter" or "vae" (with ``config`` None: the authors' settings for it).
        config: run settings; on resume the saved config is used.
        segmenter: the segmenter model directory for a VAE run (overrides ``config.segmenter``).
        init: warm start: an exported model of the same kind whose weights start the network;
            the optimiser starts afresh at step 0 (e.g. to continue a run on a machine without
            its checkpoint). Recorded in the exported model's data fingerprint.
        max_steps: overrides ``config.optim.max_steps``.
        devices: GPUs (DDP when > 1) or CPU processes.
        resume: continue from ``out/checkpoints/last.ckpt``.
        accelerator: Lightning accelerator ("auto", "cpu", "gpu").
        progress: show progress bars.
        max_minutes: stop (checkpoint and export) after this wall time.

    Raises:
        CrysgenError: bad kind, missing segmenter for a VAE, missing condition labels, no usable
            crystal, or resume without a checkpoint.
    """
    if config is None and kind is not None and not resume:
        config = VoxelTrainConfig.default(kind)
    if config is not None and segmenter is not None:
        config = replace(config, segmenter=str(segmenter))

    loaded: dict[str, Any] = {}  # what check() loads is kept: each model directory is read once

    def check(c: VoxelTrainConfig) -> None:
        if kind is not None and c.kind != kind:
            raise CrysgenError(f"this is a {kind!r} run but its config says kind {c.kind!r}")
        if c.kind == "vae" and not c.segmenter:
            raise CrysgenError("a VAE run needs the trained segmenter: --segmenter MODEL_DIR")
        if c.kind == "vae":  # fails here, before anything is written
            loaded["segmenter"] = load_segmenter(c.segmenter)[0]
        if init is not None:
            loaded["init"] = init_weights(c, init)

    run = open_run(data, out, config, VoxelTrainConfig, resume=resume, max_steps=max_steps, init=init,
                   validate=check, fit_scaling=_fit_spec, load_scaling=VoxelSpec.load, scaling_file=SPEC_FILE)
    if init is not None:
        run.fingerprint["init"] = {"model": str(init)}
    c: VoxelTrainConfig = run.config
    o = c.optim
    L.seed_everything(o.seed, workers=True)
    spec: VoxelSpec = run.scaling
    cs = usable(run.crystals, spec.voxel)
    if len(cs) < len(run.crystals) and progress:
        print(f"{len(run.crystals) - len(cs)} of {len(run.crystals)} crystals left out (not orthogonal "
              f"or more than {spec.voxel.max_sites} sites)")
    dens, species = voxelise(cs, spec.voxel, workers=o.workers, progress=progress)
    classes = (spec.condition_class(cs.properties[spec.condition]) if c.kind == "vae"
               else np.zeros(len(cs), int))
    dataset = VoxelBatches(dens, species, cs.lattice[:, :3], classes)
    loader = torch.utils.data.DataLoader(dataset,
                                         batch_size=o.batch_size, shuffle=True,
                                         drop_last=len(cs) > o.batch_size, collate_fn=_as_batch)
    seg_state, seg_config = None, None
    if c.kind == "vae":
        seg_state, seg_config = loaded["segmenter"].state_dict(), loaded["segmenter"].config
    module = VoxelModule(c.to_dict(), {"voxel": spec.voxel.to_dict(), "class_weights": spec.class_weights,
                                       "channel_weights": spec.channel_weights,
                                       "channel_scale": spec.channel_scale}, seg_state, seg_config)
    if "init" in loaded:
        module.net.load_state_dict(loaded["init"])

    def export(m: VoxelModule, d: dict[str, Any], path: Path) -> Path:
        return export_model(m, spec, d, path, dataset)

    return fit(run, module, loader, max_iterations=o.max_steps, checkpoint_every=o.checkpoint_every,
               log_every=o.log_every, precision=o.precision, samples_per_iteration=o.batch_size,
               export=export, devices=devices, accelerator=accelerator, progress=progress,
               max_minutes=max_minutes)
