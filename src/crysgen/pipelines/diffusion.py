"""CrysTens diffusion: the sampling loop of the trained model (noise -> tensors).

The model directory is saved and loaded by :class:`crysgen.models.diffusion.DiffusionBundle`;
:class:`DiffusionModel` adds sampling.

The loop is diffusers' standard one: ``set_timesteps``, then ``scheduler.step`` with the
network's prediction. A DDPM-objective model samples with DDPM (the paper's 1000 steps), DDIM or
DPM-Solver++, sharing the training scheduler's configuration; an EDM-objective model with EDM's
Euler sampler (``ddim``: DDIM is Euler's method on the probability-flow ODE) or EDM's
DPM-Solver++ (``dpmsolver``), diffusers' ``EDMEulerScheduler`` and
``EDMDPMSolverMultistepScheduler``.

Composition control (single-stage models): the part of the tensor a composition fixes
(:func:`~crysgen.representations.crystens.composition.known_region`) is inpainted: after every
step it is replaced by the known values noised to the next step's level with the scheduler's
own forward process (``add_noise``, fresh noise each step, as in RePaint), and by the clean
values at the end, so the sample keeps them exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from crysgen.errors import CrysgenError
from crysgen.models.diffusion import DiffusionBundle
from crysgen.objectives.diffusion import to_unit_range
from crysgen.pipelines.compositions import Compositions, from_formula, from_prior, from_targets
from crysgen.pipelines.crystens import decode_tensors, prepare_crystens
from crysgen.pipelines.protocol import SAMPLERS, Sampler, batch_size_for
from crysgen.pipelines.seeding import torch_generator
from crysgen.representations.crystens.composition import known_region

if TYPE_CHECKING:
    from collections.abc import Callable

    from crysgen.crystal_set import CrystalSet
    from crysgen.models.composition_lm import CompositionModel
    from crysgen.models.diffusion import DiffusionConfig
    from crysgen.pipelines.protocol import SampleOptions
    from crysgen.representations.crystens import DecodeOptions, DecodeResult


class DiffusionModel(DiffusionBundle):
    """A trained CrysTens diffusion model that samples: the saved bundle and the sampling loop.

    ``DiffusionModel.from_pretrained(path)`` loads a model directory (see
    :class:`~crysgen.models.diffusion.DiffusionBundle`, which training writes). Only single-stage
    models sample crystals on their own; a cascade's stages sample through
    :class:`~crysgen.pipelines.cascade.CascadeModel`.
    """

    def sample(self, n: int, **kwargs: Any) -> np.ndarray:
        """``n`` CrysTens tensors, float32 (n, 4, size, size) in [0, 1]; see :func:`sample_tensors`."""
        self._check_single()
        return sample_tensors(self, n, **kwargs)

    # ------------------------------------------------------------------ the Generator protocol
    def default_batch_size(self, device: str) -> int:
        """256 on CUDA, 16 on a CPU (the faster of 16 and 64 measured on 2 cores)."""
        return batch_size_for(device, cpu=16)

    def prepare(self, options: SampleOptions, *, device: str = "cpu",
                compositions: Compositions | None = None) -> dict[str, Any]:
        """Steps and sampler (see :class:`~crysgen.pipelines.protocol.Generator`).

        Raises:
            CrysgenError: for a cascade stage, a sampler the objective has none of, and options
                of voxel VAE or atom diffusion models.
        """
        kwargs = prepare_crystens(options)
        self._check_single()
        make_scheduler(self.diffusion, options.sampler)  # an EDM model has no ddpm: refused here
        return kwargs

    def generate(self, n: int, *, steps: int = 50, sampler: Sampler = "ddim", seed: int | list[int] = 0,
                 device: str = "cpu", batch_size: int = 256, ids: list[str] | None = None,
                 compositions: Compositions | None = None, offset: int = 0, workers: int = 1,
                 decode: DecodeOptions | None = None, on_batch: Callable[[int], None] | None = None,
                 on_tensors: Callable[[np.ndarray], None] | None = None, **_: Any) -> DecodeResult:
        """``n`` crystals: :func:`sample_tensors`, then decoding (in ``workers`` processes).

        With ``compositions`` (rows ``offset`` … ``offset + n``), their part of the tensor is
        inpainted and decoded as given. Arguments: :class:`~crysgen.pipelines.protocol.Generator`.
        """
        z = None if compositions is None else compositions.atomic_numbers[offset:offset + n]
        tensors = self.sample(n, steps=steps, sampler=sampler, seed=seed, device=device,
                              batch_size=batch_size, atomic_numbers=z)
        return decode_tensors(tensors, self.scaling, decode, ids=ids, workers=workers, atomic_numbers=z,
                              on_batch=on_batch, on_tensors=on_tensors)

    def _check_single(self) -> None:
        if self.stage.role != "single":
            raise CrysgenError(f"this model is the {self.stage.role!r} stage of a cascade; sample "
                               "from the cascade directory (`crysgen model cascade BASE SR --out DIR`)")

    # ------------------------------------------------------------------ compositions
    def compositions_from_formula(self, formula: str, n: int, *, num_atoms: int | None = None,
                                  seed: int | list[int] = 0) -> Compositions:
        """``n`` samples of one formula (see :func:`crysgen.pipelines.compositions.from_formula`).

        S is the layout's site rows; without ``num_atoms`` the number of formula units follows
        the training histogram of site counts (``scaling.num_sites_counts``; scalings fitted
        before it existed: every multiple that fits equally likely).

        Raises:
            CrysgenError: for a bad formula, an impossible site count, an element outside the
                model's atomic-number range, or a cascade stage.
        """
        self._check_single()
        s = self.scaling
        hist = None
        if s.num_sites_counts:
            hist = np.zeros(s.layout.sites + 1)
            for k, c in s.num_sites_counts.items():
                if 0 <= k <= s.layout.sites:
                    hist[k] = c
        comps = from_formula(formula, n, max_sites=s.layout.sites, num_sites_counts=hist,
                             known_elements=set(s.element_counts) or None, num_atoms=num_atoms, seed=seed)
        known_region(comps.atomic_numbers[:1], s)  # an element outside the model's range: refused here
        return comps

    def compositions_from_targets(self, targets: CrystalSet, per_target: int = 1) -> Compositions:
        """One row per (target, repeat) (see :func:`crysgen.pipelines.compositions.from_targets`).

        Raises:
            CrysgenError: for targets with more sites than S or elements outside the model's range.
        """
        self._check_single()
        comps = from_targets(targets, max_sites=self.scaling.layout.sites, per_target=per_target,
                             known_elements=set(self.scaling.element_counts) or None)
        known_region(comps.atomic_numbers, self.scaling)
        return comps

    def compositions_from_prior(self, prior: CrystalSet | CompositionModel, n: int, *,
                                substitute: str | None = None, seed: int | list[int] = 0,
                                ) -> tuple[Compositions, dict[str, int]]:
        """``n`` drawn compositions (see :func:`crysgen.pipelines.compositions.from_prior`).

        Raises:
            CrysgenError: for a prior without a crystal of at most S sites, a composition with an
                element outside the model's range, or a cascade stage.
        """
        self._check_single()
        comps, counts = from_prior(prior, n, max_sites=self.scaling.layout.sites,
                                   known_elements=set(self.scaling.element_counts) or None,
                                   substitute=substitute, seed=seed)
        known_region(comps.atomic_numbers, self.scaling)
        return comps, counts


def make_scheduler(diffusion: DiffusionConfig, sampler: Sampler) -> Any:
    """A diffusers sampling scheduler sharing the training schedule's configuration.

    DDPM objective: ``DDPMScheduler``, ``DDIMScheduler`` or ``DPMSolverMultistepScheduler``
    (DPM-Solver++). EDM objective: ``EDMEulerScheduler`` for "ddim" (Euler on the
    probability-flow ODE, which DDIM is) and ``EDMDPMSolverMultistepScheduler`` for "dpmsolver".

    Raises:
        CrysgenError: for an unknown sampler, or "ddpm" with an EDM model.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if sampler not in SAMPLERS:
        raise CrysgenError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    config = diffusion.scheduler().config
    if diffusion.objective == "edm":
        from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

        if sampler == "ddpm":
            raise CrysgenError("an EDM model samples with --sampler ddim (EDM's Euler) or dpmsolver "
                               "(EDM's DPM-Solver++), not ddpm")
        if sampler == "ddim":
            return EDMEulerScheduler.from_config(config)
        return EDMDPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    if sampler == "ddpm":
        return DDPMScheduler.from_config(config)
    if sampler == "ddim":
        return DDIMScheduler.from_config(config)
    return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")


def denoise(
    model: DiffusionModel,
    b: int,
    *,
    steps: int,
    sampler: Sampler,
    generator: Any,
    device: str,
    cond: Any = None,
    class_labels: Any = None,
    known: tuple[Any, Any] | None = None,
) -> Any:
    """Run one model's reverse process from fresh noise: (b, C, s, s) in [-1, 1] on ``device``.

    Args:
        model: the stage to run.
        b: batch size.
        steps: sampler steps (DDPM uses its training timesteps when steps >= T).
        sampler: "ddpm", "ddim" or "dpmsolver".
        generator: CPU ``torch.Generator`` for the initial and per-step noise.
        device: "cpu" or "cuda".
        cond: extra input channels (an SR stage's conditioning), (b, C', s, s) on ``device``.
        class_labels: (b,) integers for the class embedding (the conditioning's noise level).
        known: inpainting: ``(values, mask)``, (b, C, s, s) values in [-1, 1] and a bool mask of
            the entries to hold (on ``device``); the sample's masked entries end exactly at the
            values (see the module docstring). The other entries' noise is drawn first, so
            ``known=None`` draws the same numbers as before.
    """
    import inspect

    import torch

    if steps < 1:
        raise CrysgenError(f"--steps must be at least 1, got {steps}")
    sched = make_scheduler(model.diffusion, sampler)
    # stochastic schedulers draw their noise from the CPU generator (diffusers moves it)
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(sched.step).parameters else {}
    # diffusers wraps ModelMixin.to in a decorator whose type reads as an unbound method
    unet = model.unet.to(device).eval()  # type: ignore[arg-type]
    size, channels = model.unet_config.sample_size, model.unet_config.channels
    on_gpu = device.startswith("cuda")
    sched.set_timesteps(min(steps, model.diffusion.timesteps))
    timesteps = sched.timesteps
    shape = (b, channels, size, size)
    x = torch.randn(shape, generator=generator).to(device) * sched.init_noise_sigma

    def hold(x: Any, i: int) -> Any:
        """Known entries at the level of timestep ``i`` (clean past the last one)."""
        assert known is not None  # called only when there are known entries
        values, mask = known
        if i < len(timesteps):
            noise = torch.randn(shape, generator=generator).to(device)
            values = sched.add_noise(values, noise, timesteps[i:i + 1].repeat(b))
        return torch.where(mask, values, x)

    if known is not None:
        x = hold(x, 0)
    for i, t in enumerate(timesteps):
        inp = sched.scale_model_input(x, t)
        if cond is not None:
            inp = torch.cat([inp, cond], dim=1)
        with torch.no_grad(), torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                                             enabled=on_gpu):
            pred = unet(inp, t, class_labels=class_labels).sample
        x = sched.step(pred.float(), t, x, **step_kwargs).prev_sample
        if known is not None:
            x = hold(x, i + 1)
    return x


def sample_tensors(
    model: DiffusionModel,
    n: int,
    *,
    steps: int = 50,
    sampler: Sampler = "ddim",
    seed: int | list[int] = 0,
    device: str = "cpu",
    batch_size: int = 256,
    atomic_numbers: np.ndarray | None = None,
) -> np.ndarray:
    """Draw ``n`` CrysTens tensors from a single-stage model.

    Args:
        model: the trained model.
        n: number of tensors.
        steps: sampler steps (DDPM uses its training timesteps when steps >= T).
        sampler: "ddpm", "ddim" or "dpmsolver" (DPM-Solver++).
        seed: seeds a CPU generator for the initial noise and stochastic steps, so results do
            not depend on the device's random stream.
        device: "cpu" or "cuda".
        batch_size: tensors per forward pass.
        atomic_numbers: int (n, k <= S) per-site elements of every sample (0 = no site; sites
            in rows 0..A-1), or None (de novo): the composition's part of each tensor is
            inpainted and comes out exactly as encoded.

    Returns:
        float32 (n, 4, size, size) in [0, 1]; size is the model's layout's (64 for the paper's).

    Raises:
        CrysgenError: for compositions the layout cannot hold, or not one per sample.
    """
    import torch

    if atomic_numbers is not None and len(atomic_numbers) != n:
        raise CrysgenError(f"{len(atomic_numbers)} compositions for {n} samples")
    gen = torch_generator(seed)
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        known = None
        if atomic_numbers is not None:
            values, mask = known_region(atomic_numbers[start:start + b], model.scaling)
            known = (torch.from_numpy(values * 2 - 1).to(device), torch.from_numpy(mask).to(device))
        x = to_unit_range(denoise(model, b, steps=steps, sampler=sampler, generator=gen, device=device,
                                  known=known)).float().cpu().numpy()
        # the known entries exact, not through [-1, 1]
        out.append(x if atomic_numbers is None else np.where(mask, values, x))
    size, channels = model.unet_config.sample_size, model.unet_config.channels
    return np.concatenate(out, axis=0) if out else np.zeros((0, channels, size, size), np.float32)
