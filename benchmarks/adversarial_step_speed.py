"""Steady-state GAN / WGAN-GP critic and generator steps per second under the adversarial speed options.

Writes benchmarks/results/adversarial_step_speed<suffix>.json.

Each variant sets the speed options of ``optim`` (``compile``, ``channels_last``, ``fused``,
``micro_batch``; see :class:`crysgen.training.config.AdversarialOptimConfig`) on the paper's WGAN-GP
(``--kind wgan``: width 1, batch 256 by default) or vanilla GAN (``--kind gan``: batch 64; its
BatchNorm allows no micro-batches), runs in its own process (so compile caches and CUDA state do not
carry over) and times the module's own update methods, outside Lightning. WGAN-GP: ``--warmup``
critic and generator steps first (compilation, CUDA-graph capture and autotuning happen there), then
``--steps`` critic steps and ``--steps`` generator steps, each timed as a block between CUDA
synchronisations. GAN: ``--warmup`` and then ``--steps`` whole iterations (``gan_update``: two
discriminator steps, real and fake, and a generator step), timed the same way. Inputs are uniform
random tensors (convolution speed does not depend on the values); the networks run under bf16
autocast on a GPU (as ``precision: auto`` trains) and in fp32 on the CPU. The grid is the Cartesian
product of the option lists; a variant that fails is recorded with its error. The JSON is rewritten
after every variant, so a run cut short keeps the rows it finished.

Usage (on the GPU machine):
    python benchmarks/adversarial_step_speed.py
    python benchmarks/adversarial_step_speed.py --compile false,default,reduce-overhead \
        --micro-batch 0,64,128 --steps 30
    python benchmarks/adversarial_step_speed.py --kind gan --compile false,default,reduce-overhead \
        --micro-batch 0 --suffix _gan
With ``--profile`` each variant also writes torch.profiler's operator table (WGAN-GP: two critic
steps and one generator step after the timed ones; GAN: two iterations) to
``benchmarks/results/profiles/``.
The default grid is 16 variants, each compiled one a minute or more of compilation: split it
over device calls with ``--compile false`` and ``--compile default`` (and ``--suffix``).
CPU smoke test (not a measurement; do not commit its output):
    CRYSGEN_ALLOW_DIRTY=1 python benchmarks/adversarial_step_speed.py --device cpu --width 0.125 \
        --batch 4 --micro-batch 0,2 --compile false --warmup 1 --steps 2 --suffix _cpu_smoke
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from codec import ROOT, stamp
from crysgen.crystal_set import write_text_atomic
from crysgen.training.config import ADVERSARIAL_DEFAULTS


def options_grid(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every combination of the option lists, as ``optim`` overrides."""
    lists = {key: [yaml.safe_load(v) for v in getattr(args, attr).split(",")]
             for key, attr in (("compile", "compile"), ("channels_last", "channels_last"),
                               ("fused", "fused"), ("micro_batch", "micro_batch"))}
    return [dict(zip(lists, combo, strict=True)) for combo in itertools.product(*lists.values())]


def synchronise(device: str) -> None:
    """Wait for the GPU's queued work (nothing on the CPU)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def autocast(device: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on a GPU (what ``precision: auto`` trains with), nothing on the CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def timed(step: Callable[[], Any], n: int, device: str) -> float:
    """Steps per second of ``n`` calls of ``step`` (timed between synchronisations)."""
    synchronise(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    synchronise(device)
    return n / (time.perf_counter() - t0)


@contextlib.contextmanager
def peak_memory(device: str) -> Iterator[dict[str, Any]]:
    """Yields a dict that gets the peak GPU memory (GiB) allocated inside the block."""
    import torch

    out: dict[str, Any] = {}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    yield out
    if device.startswith("cuda"):
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)


def profile_path(spec: dict[str, Any]) -> Path:
    """benchmarks/results/profiles/adversarial_step_[gan_]<device>_<options>.txt for one variant.

    The WGAN-GP's files keep the names they had before the GAN could be timed.
    """
    tag = "_".join(f"{k}-{v}" for k, v in spec["options"].items())
    kind = "" if spec["kind"] == "wgan" else f"{spec['kind']}_"
    return ROOT / "benchmarks" / "results" / "profiles" / f"adversarial_step_{kind}{spec['device']}_{tag}.txt"


def write_profile(spec: dict[str, Any], critic: Callable[[], Any], generator: Callable[[], Any]) -> None:
    """torch.profiler's operator table of ``critic`` twice and ``generator`` once, to :func:`profile_path`.

    Sorted by the device's own time on a GPU (the CPU's otherwise); the first rows say which
    kernels a step's time goes to.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    device = spec["device"]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        critic(), critic(), generator()
        synchronise(device)
    key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=70)
    path = profile_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    what = ("two GAN iterations" if spec["kind"] == "gan"
            else "two WGAN-GP critic steps + one generator step")
    header = (f"# adversarial_step_speed.py --profile: {what} after the timed ones; "
              f"{json.dumps({k: spec[k] for k in ('kind', 'device', 'width', 'batch')})} "
              f"options {json.dumps(spec['options'])}; torch {torch.__version__}\n")
    write_text_atomic(path, header + table + "\n")


def warm_and_time(spec: dict[str, Any], blocks: list[Callable[[], Any]]
                  ) -> tuple[list[float], float, dict[str, Any]]:
    """``spec["warmup"]`` rounds of every block in turn (untimed), then each block timed alone
    ``spec["steps"]`` times; the blocks' calls per second, the warm-up's seconds and the peak memory."""
    device = spec["device"]
    t0 = time.perf_counter()
    with peak_memory(device) as memory:
        for _ in range(spec["warmup"]):
            for block in blocks:
                block()
        synchronise(device)
        warmup_s = time.perf_counter() - t0
        rates = [timed(block, spec["steps"], device) for block in blocks]
    return rates, warmup_s, memory


def one_variant(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one variant in this process; its row (``spec`` as run_variant passes it)."""
    import lightning as L
    import torch

    from crysgen.training.adversarial import AdversarialModule
    from crysgen.training.config import AdversarialTrainConfig

    device, batch = spec["device"], spec["batch"]
    L.seed_everything(0, verbose=False)
    cfg = AdversarialTrainConfig.from_dict({"net": {"kind": spec["kind"], "width": spec["width"]},
                                            "optim": {"batch_size": batch, **spec["options"]}})
    module = AdversarialModule(cfg.to_dict()).to(device)
    module.manual_backward = lambda loss, *a, **kw: loss.backward(*a, **kw)  # outside Lightning
    opt_g, opt_c = module.configure_optimizers()
    real = torch.rand(batch, 1, 4, 64, 64, device=device)
    if cfg.optim.channels_last:
        real = real.contiguous(memory_format=torch.channels_last_3d)

    if cfg.net.kind == "gan":  # the whole iteration (2 discriminator steps + 1 generator step)
        return gan_variant(spec, module, real, opt_g, opt_c)

    def critic() -> Any:
        with autocast(device):
            return module.critic_update(real, opt_c)

    def generator() -> Any:
        with autocast(device):
            return module.generator_update(batch, opt_g)

    (critic_rate, generator_rate), warmup_s, memory = warm_and_time(spec, [critic, generator])
    if spec.get("profile"):  # where a step's time goes, after the timing (not inside it)
        write_profile(spec, critic, generator)
    n_critic = cfg.optim.n_critic
    iteration_s = n_critic / critic_rate + 1 / generator_rate
    return {"critic_steps_per_s": round(critic_rate, 3), "generator_steps_per_s": round(generator_rate, 3),
            "seconds_per_iteration": round(iteration_s, 4), "n_critic": n_critic,
            "warmup_seconds": round(warmup_s, 1), **memory,
            "fused_used": all(o.defaults.get("fused") for o in (opt_g, opt_c))}


def gan_variant(spec: dict[str, Any], module: Any, real: Any, opt_g: Any, opt_d: Any) -> dict[str, Any]:
    """Time the vanilla GAN's iteration (``AdversarialModule.gan_update``, as training runs it);
    its row. The profile covers two iterations."""
    device = spec["device"]

    def iteration() -> Any:
        with autocast(device):
            return module.gan_update(real, opt_g, opt_d)

    (rate,), warmup_s, memory = warm_and_time(spec, [iteration])
    if spec.get("profile"):
        write_profile(spec, iteration, lambda: None)
    return {"iterations_per_s": round(rate, 3), "seconds_per_iteration": round(1 / rate, 4),
            "warmup_seconds": round(warmup_s, 1), **memory,
            "fused_used": all(o.defaults.get("fused") for o in (opt_g, opt_d))}


def run_variant(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`one_variant` in a fresh process; its row (or the error it ended with)."""
    cmd = [sys.executable, __file__, "--one", json.dumps(spec)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    row: dict[str, Any] = {"options": spec["options"], "wall_seconds": round(time.perf_counter() - t0, 1)}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = proc.stderr.strip().splitlines()
        # the last line alone ("See https://...opcheck") does not say what failed: keep the tail
        return row | {"error": err[-1] if err else f"exit {proc.returncode}", "error_log": err[-60:]}
    return row | json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--width", type=float, default=1.0, help="network width (1 = the paper's)")
    p.add_argument("--kind", choices=("wgan", "gan"), default="wgan", help="which adversarial model")
    p.add_argument("--batch", type=int, help="batch (default the paper's: WGAN-GP 256, GAN 64)")
    p.add_argument("--compile", default="false,default", help="compile settings, comma-separated")
    p.add_argument("--channels-last", default="false,true")
    p.add_argument("--fused", default="false,true")
    p.add_argument("--micro-batch", default="0,128", help="0 = the whole batch")
    p.add_argument("--warmup", type=int, default=5,
                   help="untimed critic + generator steps (GAN: iterations)")
    p.add_argument("--steps", type=int, default=20,
                   help="timed critic steps and generator steps (GAN: iterations)")
    p.add_argument("--suffix", default="", help="appended to the result file's name")
    p.add_argument("--profile", action="store_true",
                   help="also write each variant's operator profile (two critic steps and one generator "
                        "step after the timed ones) to benchmarks/results/profiles/")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: one variant in this process
    args = p.parse_args()
    if args.one:
        print(json.dumps(one_variant(json.loads(args.one))), flush=True)
        return
    if args.batch is None:
        args.batch = ADVERSARIAL_DEFAULTS[args.kind]["batch_size"]
    common = {k: getattr(args, k) for k in ("kind", "device", "width", "batch", "warmup", "steps", "profile")}
    path = ROOT / "benchmarks" / "results" / f"adversarial_step_speed{args.suffix}.json"
    result: dict[str, Any] = {
        **common, "rows": [],
        "note": ("steady rates after the warm-up steps; one process per variant; random inputs; "
                 "bf16 autocast on a GPU, fp32 on the CPU; seconds_per_iteration: WGAN-GP n_critic "
                 "critic steps + one generator step, GAN one gan_update (2 discriminator steps + "
                 "1 generator step)")} | stamp(args.device)
    for options in options_grid(args):
        row = run_variant(common | {"options": options})
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        write_text_atomic(path, json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
