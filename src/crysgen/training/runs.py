"""What every training run shares: its directory, data loader, trainer and callbacks.

A run directory holds ``config.yaml`` (resolved), ``scaling.json`` (or the trainer's own fitted
state, e.g. ``atoms.json``, ``target.json``), ``checkpoints/`` (Lightning,
every ``checkpoint_every`` iterations, plus ``last.ckpt``), ``logs/`` (CSV, one ``version_N``
per invocation), ``model/`` (the model directory, exported at every checkpoint and at the end),
``train_summary.json`` (speed of every invocation) and ``curves.png`` (the logged losses).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.errors import CrysgenError
from crysgen.models.model_dir import data_fingerprint
from crysgen.representations.crystens import CrysTensScaling, encode
from crysgen.training.config import Config, load_config, save_config


@dataclass
class Run:
    """An opened run directory: its resolved config, data, scaling and data fingerprint."""

    out: Path
    config: Any
    crystals: CrystalSet
    scaling: Any  # CrysTensScaling, or the representation state of another trainer
    fingerprint: dict[str, Any]
    resume: bool

    @property
    def last(self) -> Path:
        """The checkpoint a resumed run continues from."""
        return self.out / "checkpoints" / "last.ckpt"


def open_run(data: str | Path, out: str | Path, config: Config | None, klass: type[Config], *,
             resume: bool, max_steps: int | None = None, init: str | Path | None = None,
             validate: Callable[[Config], None] = lambda c: None,
             resolve: Callable[[Config, CrystalSet], Config] = lambda c, _: c,
             fit_scaling: Callable[[CrystalSet, Config], Any] | None = None,
             load_scaling: Callable[[Path], Any] = CrysTensScaling.load,
             scaling_file: str = "scaling.json") -> Run:
    """Check, create or reopen a run directory, before any training starts.

    Args:
        data: training CrystalSet (.npz).
        out: run directory.
        config: the new run's settings (None: defaults); ignored on resume, where the saved
            ``config.yaml`` is used.
        klass: the config class.
        resume: continue the run in ``out``.
        max_steps: overrides the config's step limit (``--max-steps``: ``with_max_steps``).
        init: the model directory a new run is warm-started from (``--init``), if any; only
            checked here (it cannot be combined with ``resume``).
        validate: raises for a config this trainer cannot run (before anything is written).
        resolve: fills in the settings a config leaves to the data (e.g. steps from epochs), on
            the data and the config after ``max_steps``; what it returns is saved (a resumed
            run's saved config is already resolved).
        fit_scaling: fits the representation's state (``.save(path)``) on the data and config
            (default: the CrysTens scaling); ``load_scaling`` reads it back on resume from
            ``scaling_file`` in the run directory.
        load_scaling: see ``fit_scaling``.
        scaling_file: see ``fit_scaling``.

    Raises:
        CrysgenError: resume without a checkpoint, a new run into a used directory, or a
            missing data file, or ``init`` with ``resume``.
    """
    if init is not None and resume:
        raise CrysgenError("--init starts a new run from a model's weights; it cannot be combined "
                           "with --resume")
    out = Path(out)
    last = out / "checkpoints" / "last.ckpt"
    if resume:
        if not last.is_file():
            raise CrysgenError(f"--resume: no checkpoint at {last}")
        config = load_config(out / "config.yaml", klass)
    elif last.exists():
        raise CrysgenError(f"{out} already holds a run; pass --resume to continue it or use a new --out")
    config = config or klass.from_dict({})
    validate(config)
    if max_steps is not None:
        config = config.with_max_steps(max_steps)
    crystals = CrystalSet.load(data)
    config = resolve(config, crystals)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    scaling_path = out / scaling_file
    fit_scaling = fit_scaling or (lambda cs, _: CrysTensScaling.fit(cs))
    scaling = load_scaling(scaling_path) if resume else fit_scaling(crystals, config)
    scaling.save(scaling_path)
    return Run(out, config, crystals, scaling, data_fingerprint(crystals, Path(data).name), resume)


class TensorBatches(torch.utils.data.Dataset):
    """Encoded tensors held in memory, handed out a whole batch at a time.

    ``__getitems__`` makes the DataLoader gather a batch with one index operation instead of
    stacking ``batch_size`` single tensors (the per-step cost that bounded GPU throughput).
    Several tensors with the same first dimension give a tuple per batch, one tensor a tensor.
    """

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def _take(self, index: Any) -> Any:
        parts = tuple(t[index] for t in self.tensors)
        return parts if len(parts) > 1 else parts[0]

    def __getitem__(self, i: int) -> Any:
        return self._take(i)

    def __getitems__(self, indices: list[int]) -> Any:
        return self._take(torch.as_tensor(indices))


def _as_batch(batch: Any) -> Any:
    return batch


class PassShuffle(torch.utils.data.Sampler[int]):
    """Passes over ``n`` indices, each in its own order, that a resumed run can take up anywhere.

    Pass q's order is a permutation drawn from a generator seeded with ``seed`` and q, so no
    earlier draw needs replaying. A new iteration (a new epoch of the DataLoader) starts where
    the training stands when ``follow`` is on (:class:`ResumeState` turns it on for a run on one
    device and keeps ``trained`` up to date): at batch ``trained`` of the stream of passes
    (``batch_size`` indices per batch, ``per_pass`` batches per pass). So the batches that are
    trained are the same whether or not the run stopped and resumed in between, however
    Lightning counts epochs around a resume. With ``follow`` off (the default, and under DDP,
    where a wrapper shards each pass among the ranks) every iteration is the next whole pass.
    """

    def __init__(self, n: int, seed: int, batch_size: int, *, drop_last: bool) -> None:
        self.n, self.seed, self.batch_size = n, seed, batch_size
        self.per_pass = n // batch_size if drop_last else -(-n // batch_size)
        self.trained = 0  # batches trained so far, by ResumeState
        self.follow = False
        self.passes = 0  # iterations begun

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        q, j = divmod(self.trained, self.per_pass) if self.follow else (self.passes, 0)
        self.passes = q + 1
        g = torch.Generator().manual_seed(self.seed + 1_000_003 * q)
        return iter(torch.randperm(self.n, generator=g)[j * self.batch_size:].tolist())


def batch_loader(*tensors: torch.Tensor, batch_size: int, shuffle: bool) -> torch.utils.data.DataLoader:
    """A DataLoader over in-memory tensors (:class:`TensorBatches`).

    A shuffled one draws its batches through :class:`PassShuffle`, seeded from torch's global
    generator when the loader is made (after the run's ``seed_everything``: the same seed when a
    run resumes), and drops the last incomplete batch when there is more than one. Each loader
    has a generator of its own for the worker seeds the DataLoader draws at every pass, so making
    a pass never moves the global generator that the training noise comes from.
    """
    ds = TensorBatches(*tensors)
    drop_last = shuffle and len(ds) > batch_size
    sampler = (PassShuffle(len(ds), int(torch.randint(2**31, ())), batch_size, drop_last=drop_last)
               if shuffle else None)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                                       collate_fn=_as_batch, generator=torch.Generator().manual_seed(0))


def tensor_loader(crystals: CrystalSet, scaling: CrysTensScaling, batch_size: int, *,
                  shuffle: bool) -> torch.utils.data.DataLoader:
    """Batches of scaled CrysTens tensors (B, 4, 64, 64) in [0, 1]."""
    return batch_loader(torch.from_numpy(encode(crystals, scaling)), batch_size=batch_size,
                        shuffle=shuffle)


def ema_decay_at(decay: float, updates: int, *, warmup: bool) -> float:
    """The EMA decay of the update after ``updates`` earlier ones.

    Without warm-up it is ``decay`` throughout. With warm-up it is ``min(decay, (1 + n) / (10 + n))``
    (the warm-up of diffusers' ``EMAModel``), so that the average forgets the nearly random weights
    of the first steps: with decay 0.9995 and no warm-up, 44 % of the exported weights after 1,650
    steps are still those of step 1 (0.9995^1650).
    """
    return min(decay, (1 + updates) / (10 + updates)) if warmup else decay


def ema_copy(net: torch.nn.Module, decay: float, *,
             warmup: bool = True) -> torch.optim.swa_utils.AveragedModel:
    """A frozen exponential-moving-average copy of ``net`` (update it after every step).

    The first update copies ``net``; each later one moves the copy towards ``net`` by
    ``1 - ema_decay_at(decay, n, warmup=warmup)`` where n counts the updates so far (the copy's
    ``n_averaged``, saved in checkpoints, so a resumed run continues the same schedule).
    """

    @torch.no_grad()
    def update(ema_params: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
               n_averaged: torch.Tensor | int) -> None:
        d = ema_decay_at(decay, int(n_averaged), warmup=warmup)
        torch._foreach_lerp_(list(ema_params), list(params), 1.0 - d)

    ema = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=update)
    ema.requires_grad_(False)
    return ema


def adamw_with_warmup(params: Any, optim: Any) -> dict[str, Any]:
    """AdamW with a linear warm-up, as Lightning's ``configure_optimizers`` returns it.

    ``optim`` gives ``lr``, ``weight_decay``, ``warmup_steps`` and the decay after it (see
    :func:`lr_factor`). Not the fused AdamW: Lightning refuses gradient clipping with it under bf16.
    """
    opt = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, optim))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def lr_factor(step: int, optim: Any) -> float:
    """The learning rate at optimiser step ``step`` as a fraction of ``optim.lr``.

    Linear warm-up over ``warmup_steps``; then 1 (``lr_decay`` "none") or a cosine from 1 to
    ``lr_min_ratio`` at ``max_steps``, held after it.
    """
    warm = max(1, optim.warmup_steps)
    if step + 1 < warm:
        return (step + 1) / warm
    if optim.lr_decay == "none":
        return 1.0
    span = max(1, optim.max_steps - warm)
    progress = min(1.0, (step + 1 - warm) / span)
    floor = optim.lr_min_ratio
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class ResumeState(Callback):
    """What a resumed run needs to go on exactly as if it had never stopped (one device).

    Saved in every checkpoint: torch's random generator states (CPU and every GPU: the training
    noise comes from them) and the number of batches trained. Restored when a run resumes,
    after ``seed_everything`` has reset the generators to the run's start, so the resumed run
    draws the same noise and, through the loader's :class:`PassShuffle`, the same batches.
    Under DDP the ranks would share rank 0's saved generators, so a DDP resume is not exact.
    """

    def __init__(self, loader: torch.utils.data.DataLoader) -> None:
        self.sampler = loader.sampler if isinstance(loader.sampler, PassShuffle) else None
        self.batches = 0  # training batches done, over every invocation

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """On one device the sampler follows the batch count (DDP shards whole passes)."""
        if self.sampler is not None:
            self.sampler.follow = trainer.world_size == 1

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        """Count the batch; ModelCheckpoint's hook runs after this one, so its checkpoint counts it."""
        self.batches += 1
        if self.sampler is not None:
            self.sampler.trained = self.batches

    def state_dict(self) -> dict[str, Any]:
        """The generators' states and the batches trained, for a checkpoint."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"cpu_rng": torch.get_rng_state(), "cuda_rng": cuda, "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generators and the batch count (a run resuming)."""
        torch.set_rng_state(state["cpu_rng"])
        cuda = state["cuda_rng"]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        self.batches = state["batches"]
        if self.sampler is not None:
            self.sampler.trained = self.batches


class Throughput(Callback):
    """Training speed of this invocation: iterations and training tensors per second (all devices).

    Besides the rate over the whole invocation it records the steady rate after the first
    ``warmup`` iterations (compilation, CUDA graph capture and autotuning happen there).

    Args:
        steps_per_iteration: optimiser steps per iteration (Lightning's ``global_step`` counts
            every optimiser's steps: 1 for diffusion, 3 for the GAN, n_critic + 1 for WGAN-GP).
        samples_per_iteration: training tensors one device reads per iteration.
        warmup: iterations left out of the steady rate.
    """

    def __init__(self, steps_per_iteration: int = 1, samples_per_iteration: int = 1,
                 warmup: int = 20) -> None:
        self.k, self.samples, self.warmup = steps_per_iteration, samples_per_iteration, warmup
        self.start, self.step0 = 0.0, 0
        self.result: dict[str, Any] = {}
        self.warm: tuple[float, int] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the clock after setup and checkpoint restore."""
        self.start, self.step0, self.warm = time.perf_counter(), int(trainer.global_step), None

    def iterations(self, trainer: L.Trainer, since: int) -> int:
        """Iterations from optimiser step ``since`` to the trainer's current one."""
        return (int(trainer.global_step) - since) // self.k

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        """Note the time once the warm-up iterations are done (after the GPU has finished them)."""
        if self.warm is None and self.iterations(trainer, self.step0) >= self.warmup:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
            self.warm = (time.perf_counter(), int(trainer.global_step))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record iterations, seconds and samples/s (overall and steady)."""
        seconds = time.perf_counter() - self.start
        steps = self.iterations(trainer, self.step0)
        batch = self.samples * trainer.world_size
        steady = None
        if self.warm is not None and steps > self.warmup:
            t_warm, step_warm = self.warm
            n, dt = self.iterations(trainer, step_warm), time.perf_counter() - t_warm
            steady = round(n / dt, 3) if n and dt > 0 else None
        self.result = {"steps": steps, "seconds": round(seconds, 2), "global_batch": batch,
                       "steps_per_s": round(steps / seconds, 3) if seconds else None,
                       "samples_per_s": round(steps * batch / seconds, 1) if seconds else None,
                       "steady_steps_per_s": steady,
                       "steady_samples_per_s": round(steady * batch, 1) if steady else None,
                       "device": (torch.cuda.get_device_name() if pl_module.device.type == "cuda"
                                  else "cpu"),
                       "devices": trainer.world_size, "precision": str(trainer.precision)}


class WallClockStop(Callback):
    """Stop after ``minutes`` of this invocation (Lightning's ``max_time`` counts resumed time)."""

    def __init__(self, minutes: float) -> None:
        self.limit = minutes * 60.0
        self.start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the clock."""
        self.start = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        """Ask the trainer to stop once the time is up.

        Rank 0's clock decides for every rank: under DDP a rank that stopped alone would leave
        the others waiting in their next gradient all-reduce.
        """
        up = time.monotonic() - self.start > self.limit
        if trainer.strategy.broadcast(up):
            trainer.should_stop = True


def read_checkpoint(run: str | Path, step: int | None = None) -> dict[str, Any]:
    """One of a run's checkpoints, read as tensors and plain containers only.

    Args:
        run: a run directory.
        step: the checkpoint ``checkpoints/stepNNNNNNN.ckpt`` (None: ``last.ckpt``).

    Returns:
        the checkpoint dict (``state_dict``, ``hyper_parameters``, ``global_step``, ...).

    Raises:
        CrysgenError: if the checkpoint does not exist or is not a training checkpoint (a
            user-named file is never unpickled as code).
    """
    run = Path(run)
    name = "last.ckpt" if step is None else f"step{step:07d}.ckpt"
    ckpt = run / "checkpoints" / name
    if not ckpt.is_file():
        have = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) if run.is_dir() else []
        raise CrysgenError(f"no checkpoint {ckpt}" + (f" (have: {', '.join(have)})" if have else ""))
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CrysgenError(f"cannot read {ckpt} as a training checkpoint: {exc}") from exc
    need = {"state_dict", "hyper_parameters", "global_step"}
    if not isinstance(state, dict) or not need <= state.keys():
        raise CrysgenError(f"cannot read {ckpt} as a training checkpoint: it lacks {', '.join(sorted(need))}")
    return state


def run_record(run: str | Path) -> dict[str, Any]:
    """The data record (name, count, sha256, ...) of a run's exported model; {} before its first export."""
    exported = Path(run) / "model" / "config.json"
    return cast("dict[str, Any]", json.loads(exported.read_text())["data"]) if exported.is_file() else {}


def checkpoint_data(run: str | Path, step: int) -> dict[str, Any]:
    """The data record of a model exported from a run's checkpoint.

    That is the run's record, with the checkpoint's iteration (``module.iteration``) as ``step``.
    """
    return run_record(run) | {"step": step}


def training_data(run: str | Path, data: str | Path | None, needed_for: str) -> CrystalSet:
    """A run's training CrystalSet, for a checkpoint export that is fitted on it.

    Run directories do not keep their training data; ``data`` names it and is checked against
    the fingerprint (sha256 of the arrays) the run recorded in its exported model.

    Args:
        run: a run directory.
        data: the training CrystalSet file (``--data``), or None.
        needed_for: what the export does with the data, for the error message (e.g. "a voxel
            VAE's export fits its latent prior on the training crystals").

    Raises:
        CrysgenError: ``data`` is None, missing, or holds other crystals than the run's.
    """
    record = run_record(run)
    named = (f"{record.get('name')}, {record.get('count')} crystals, sha256 "
             f"{str(record.get('sha256'))[:12]}…")
    if data is None:
        raise CrysgenError(f"{run}: {needed_for}, and a run directory does not keep its training "
                           f"crystals: pass --data with the run's training set ({named})")
    crystals = CrystalSet.load(data)
    if data_fingerprint(crystals, Path(data).name)["sha256"] != record.get("sha256"):
        raise CrysgenError(f"--data {data} holds other crystals than the run's training set ({named})")
    return crystals


class ExportModel(Callback):
    """Write the model directory whenever a checkpoint is saved (main process only).

    ``export(module, data, out)`` writes it; ``data`` is the fingerprint plus the step.
    """

    def __init__(self, out: Path, data: dict[str, Any],
                 export: Callable[[Any, dict[str, Any], Path], Path]) -> None:
        self.out, self.data, self.export = out, data, export

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Export on the main process only."""
        if trainer.is_global_zero:
            self.export(pl_module, self.data | {"step": iteration(pl_module, trainer)}, self.out)


class RunModule(Protocol):
    """What :func:`fit` needs of a module beyond Lightning's: the iteration it has reached."""

    def iteration(self, trainer: L.Trainer) -> int:
        """Iterations (diffusion steps, generator updates) taken so far."""
        ...


def iteration(module: L.LightningModule, trainer: L.Trainer) -> int:
    """The iteration a run module has reached (its :meth:`RunModule.iteration`)."""
    return int(cast(RunModule, module).iteration(trainer))


Module = TypeVar("Module", bound=L.LightningModule)


def precision_for(setting: str, use_gpu: bool) -> Any:
    """Lightning precision: "auto" is bf16-mixed on a GPU and 32-true on the CPU.

    Typed Any: Lightning types its argument as a union of literals, and the setting comes from a
    validated config string.
    """
    if setting == "auto":
        return "bf16-mixed" if use_gpu else "32-true"
    return setting


def fit(
    run: Run,
    module: Module,
    loader: torch.utils.data.DataLoader,
    *,
    max_iterations: int,
    checkpoint_every: int,
    log_every: int,
    precision: str,
    steps_per_iteration: int = 1,
    batches_per_iteration: int = 1,
    samples_per_iteration: int,
    export: Callable[[Module, dict[str, Any], Path], Path],
    devices: int = 1,
    accelerator: str = "auto",
    progress: bool = True,
    max_minutes: float | None = None,
    val_loader: torch.utils.data.DataLoader | None = None,
    gradient_clip_val: float | None = None,
    partial_losses: bool = False,
) -> Path:
    """Train ``module`` with Lightning, checkpoint, export, summarise and plot; returns ``model/``.

    Iterations are what the user counts (diffusion steps, generator updates); Lightning counts
    optimiser steps, ``steps_per_iteration`` of them per iteration, so limits and checkpoint
    intervals are converted here; the log interval counts batches (``batches_per_iteration``
    per iteration). ``module.iteration(trainer)`` gives the iteration for exports.

    With ``devices`` > 1 training runs DDP, each device on its own batches of the loader's batch
    size; on GPUs BatchNorm statistics are synchronised across devices (SyncBatchNorm), so they
    are those of the whole global batch (CPU processes keep their own). ``partial_losses``: some
    of the module's losses leave part of its parameters unused (a GAN's discriminator steps never
    touch the generator), which DDP must be told to look for.
    """
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.strategies import DDPStrategy

    from crysgen.training.curves import plot_training_curves

    out, k = run.out, steps_per_iteration
    use_gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", every_n_train_steps=checkpoint_every * k,
                           save_last=True, save_top_k=-1, filename="step{step:07d}",
                           auto_insert_metric_name=False)
    speed = Throughput(k, samples_per_iteration)
    trainer = L.Trainer(  # validation only when a val set is given
        max_steps=max_iterations * k,
        accelerator="gpu" if use_gpu else "cpu",
        devices=devices,
        strategy=DDPStrategy(find_unused_parameters=partial_losses) if devices > 1 else "auto",
        sync_batchnorm=devices > 1 and use_gpu,  # SyncBatchNorm runs on GPUs only
        precision=precision_for(precision, use_gpu),
        callbacks=[ckpt, speed, ResumeState(loader),
                   ExportModel(out / "model", run.fingerprint, export),
                   *([WallClockStop(max_minutes)] if max_minutes else [])],
        logger=CSVLogger(out, name="logs"),  # a resumed run logs to the next version_N
        log_every_n_steps=log_every * batches_per_iteration,  # Lightning counts batches here
        gradient_clip_val=gradient_clip_val,
        enable_progress_bar=progress,
        val_check_interval=checkpoint_every * k if val_loader else None,  # steps, across epochs
        check_val_every_n_epoch=None if val_loader else 1,
        limit_val_batches=8 if val_loader else 0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    # weights_only: a resumed checkpoint holds tensors and plain containers only (the configs
    # are saved as dicts), so no pickled code in a user-named run directory is ever run
    trainer.fit(module, loader, val_loader, ckpt_path=str(run.last) if run.resume else None,
                weights_only=True)
    # a time-limited stop must resume from where it stopped; saving also exports the model
    # directory through ExportModel
    trainer.save_checkpoint(run.last, weights_only=False)  # the full state: optimiser, loops, callbacks
    if trainer.is_global_zero:  # one entry per invocation, so a resumed run keeps its history
        summary_path = out / "train_summary.json"
        history = json.loads(summary_path.read_text()).get("runs", []) if summary_path.exists() else []
        history.append(speed.result | {"end_step": iteration(module, trainer)})
        losses = {name: float(np.asarray(v)) for name, v in trainer.callback_metrics.items()
                  if name.endswith("loss")}
        write_text_atomic(summary_path, json.dumps(
            {"global_step": iteration(module, trainer), "data": run.fingerprint,
             "final_train_loss": losses.get("train_loss", float("nan")), "final_losses": losses,
             "runs": history}, indent=1) + "\n")
        plot_training_curves(out)
    return out / "model"
