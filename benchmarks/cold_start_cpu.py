"""Cold-start steps of `crysgen evaluate` on this CPU with 1 vs more workers (issue 19 item 4).

Writes benchmarks/results/cold_start_cpu.json (labelled CPU: a figure of this machine, not of
the GPU machine the issue's targets are for). For the first N crystals of the mp_20 test split:

* **reference fingerprints**: :func:`crysgen.evaluation.fingerprints.cached_fingerprints` into
  an empty cache folder (cold: CrystalNN "ops" + Magpie computed, then cached; the imports and
  featurizers are made once before, untimed, and their time recorded), once per worker count,
  and once more on the cache the last run left (warm: read back); the fingerprints of every
  worker count must equal those of one process.
* **CHGNet graphs**: :func:`crysgen.evaluation.chgnet_batch.build_graphs` of the same crystals
  per worker count, and the largest difference of the energies of those graphs from one
  process's (eV/atom).

The load average before and after is recorded, and the CPU seconds of every run (this process
and its finished workers): on a shared machine whose kernel groups processes by session for
scheduling (``/proc/sys/kernel/sched_autogroup_enabled`` = 1, recorded), a session gets its share
of the cores however many processes it runs, so wall time may not fall with more workers while
the CPU seconds show what the work cost.

Usage: python benchmarks/cold_start_cpu.py [--n 1000] [--workers 1 2]
    [--reference benchmarks/.work/mp_20_test.npz]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from codec import ROOT, stamp
from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.evaluation.chgnet_batch import build_graphs, crystal_rows, predict_energies
from crysgen.evaluation.fingerprints import cached_fingerprints, fingerprint_structures
from crysgen.evaluation.stability import load_chgnet


def _same(a: list, b: list) -> bool:
    """Whether two fingerprint lists are equal crystal for crystal (reasons and arrays)."""
    for (s1, c1, r1), (s2, c2, r2) in zip(a, b, strict=True):
        same = (np.array_equal(s1, s2, equal_nan=True)  # Magpie keeps NaN where it has no data
                and np.array_equal(c1, c2, equal_nan=True))
        if r1 != r2 or (r1 is None and not same):
            return False
    return True


def _cpu() -> float:
    """CPU seconds of this process and of its finished (joined) child processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(fn(), wall seconds, CPU seconds of this process and its workers)."""
    c0, t0 = _cpu(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, _cpu() - c0


def fingerprints(cs: CrystalSet, workers: list[int]) -> dict:
    """Cold seconds per worker count, the warm read, and whether all agree with one process."""
    structures = cs.to_structures()
    t0 = time.perf_counter()  # imports and featurizers once, outside the timed runs
    fingerprint_structures(structures[:1])
    out: dict = {"import_and_first_crystal_seconds": round(time.perf_counter() - t0, 2),
                 "cold_seconds": {}, "cpu_seconds": {}, "seconds_per_crystal": {}}
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for w in workers:
            cache = Path(tmp) / f"w{w}"
            got, took, cpu = timed(lambda c=cache, w=w: cached_fingerprints(cs, structures, workers=w,
                                                                            cache_dir=c))
            out["cold_seconds"][str(w)] = round(took, 2)
            out["cpu_seconds"][str(w)] = round(cpu, 2)
            out["seconds_per_crystal"][str(w)] = round(took / len(cs), 4)
            first = got if first is None else first
            out.setdefault("equal_to_first", {})[str(w)] = _same(first, got)
            print(f"fingerprints, {w} worker(s): {took:.1f} s wall, {cpu:.1f} s CPU", flush=True)
        t0 = time.perf_counter()
        warm = cached_fingerprints(cs, structures, workers=workers[-1], cache_dir=cache)
        out["warm_seconds"] = round(time.perf_counter() - t0, 3)
        out["warm_equal"] = _same(first, warm)
    out["failed"] = sum(1 for f in first if f[2] is not None)
    return out


def graphs(cs: CrystalSet, workers: list[int]) -> dict:
    """CHGNet graph-building seconds per worker count and the energies' largest difference."""
    model = load_chgnet("cpu")
    rows = crystal_rows(cs)
    out: dict = {"seconds": {}, "cpu_seconds": {}, "max_energy_difference_eV_atom": {}}
    first = None
    for w in workers:
        built, took, cpu = timed(lambda w=w: build_graphs(rows, model.graph_converter, workers=w))
        out["seconds"][str(w)] = round(took, 2)
        out["cpu_seconds"][str(w)] = round(cpu, 2)
        ok = [g for g in built if g is not None]
        e = predict_energies(model, ok, "cpu", 64)
        first = e if first is None else first
        out["max_energy_difference_eV_atom"][str(w)] = float(np.max(np.abs(e - first)))
        out["graphs"] = len(ok)
        print(f"CHGNet graphs, {w} worker(s): {took:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000, help="first N crystals of the reference set")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--reference", default=str(ROOT / "benchmarks" / ".work" / "mp_20_test.npz"))
    args = p.parse_args()
    cs = CrystalSet.load(args.reference).subset(slice(0, args.n))
    load_before = os.getloadavg()
    result = {
        "label": "CPU (this machine's cores, shared with other users; not the GPU machine)",
        "reference": Path(args.reference).name, "n": len(cs), "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "sched_autogroup_enabled": Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
        if Path("/proc/sys/kernel/sched_autogroup_enabled").is_file() else None,
        "reference_fingerprints": fingerprints(cs, args.workers),
        "chgnet_graphs": graphs(cs, args.workers),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    } | stamp("cpu")
    path = ROOT / "benchmarks" / "results" / "cold_start_cpu.json"
    write_text_atomic(path, json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("reference_fingerprints", "chgnet_graphs")}), f"wrote {path}")


if __name__ == "__main__":
    main()
