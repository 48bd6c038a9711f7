"""Speed of `crysgen evaluate`, cold or warm -> benchmarks/results/eval_speed.json.

**Measure** (the default): runs the full ``crysgen evaluate`` — every family (validity,
distributions, coverage, novelty, properties, stability with ``--potential both``: CHGNet
relaxation, CHGNet and SevenNet-0 hulls; not csp, as de novo samples name no target) — in a fresh
process on the first N samples of a `crysgen sample` folder, against mp_20's train split (the
partial one, 57 %: novelty and hull) and its full test split (reference: coverage, distances,
hull). With ``--cold`` the cache folder (``--cache-dir``, also ``$CRYSGEN_CACHE`` of the run) is
emptied first, so reference energies, elemental terminals and reference fingerprints are all
computed, as on a machine that has never seen the data; without it the caches a previous run left
are used (warm). The wall time of the whole command (imports, model loading and all) and the
per-family and per-step seconds from the report's ``metrics.json`` go into one record of
``benchmarks/results/eval_speed<suffix>.json`` with ``cold``, N, the device, the exact evaluate
command and this script's command, commit, versions, machine and date; a record with the same
cold/N/device replaces the earlier one, others are kept. The issue's targets (one H200, cold,
both potentials: 1,000 samples <= 300 s, 10,000 <= 1,500 s) are checked where N matches.

Usage (GPU machine, repository root; ``sevenn`` installed, the CGCNN models in ``.cgcnn`` or
``$CRYSGEN_MODELS_DIR``; the data files made by ``benchmarks/codec.py --phase prepare``)::

    python benchmarks/eval_speed.py benchmarks/.work/atomsamples/denovo -n 1000 --device cuda \\
        --workers 14 --relax-workers 4 --relax-batch 64 --relax-engine ase --cold
    python benchmarks/eval_speed.py benchmarks/.work/atomsamples/denovo -n 1000 --device cuda \\
        --workers 14 --relax-workers 4 --relax-batch 64 --relax-engine ase

(the first cold, the second warm on the caches the first left); ``--relax-engine torch`` (what
``auto`` picks on a GPU) relaxes in one batched process, with ``--relax-batch 512`` or so. CPU smoke test::

    python benchmarks/eval_speed.py benchmarks/.work/atomsamples/denovo -n 20 --device cpu \\
        --workers 1 --relax-steps 20 --train-limit 300 --reference-limit 200 --suffix _cpu --cold

**Summarise** (``--summarize``): the per-family wall times of the model evaluations written by
``eval_model.py`` (every ``eval_<model>_<dataset>*.json``, sanity files excluded) ->
``benchmarks/results/eval_speed_models.json`` (samples/s per family, relaxed structures/s).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from codec import ROOT, stamp
from crysgen.crystal_set import write_text_atomic
from crysgen.evaluation.suite import EvalOptions

RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / ".work"
FAMILIES = "validity,distributions,coverage,novelty,properties,stability"
"""Every family but csp (de novo samples name no target crystal)."""
TARGETS_S = {1000: 300.0, 10000: 1500.0}
"""Issue 19 item 4: N samples -> seconds on one H200, cold, every family, both potentials."""
MARKER = ".eval_speed_cache"
"""A file this script puts in the cache folders it makes; --cold empties only such a folder."""


def run_key(record: dict) -> tuple:
    """What a new record replaces: the one of the same cold/warm state, sample count, device and
    host (GPUs and CPU count) and relaxation engine, so a measurement on another machine or with
    the other engine is kept beside it."""
    machine = record.get("machine") or {}
    engine = (record.get("options") or {}).get("relax_engine") or "ase"  # records before it: ASE's
    return (record.get("cold"), record.get("n"), record.get("device"), machine.get("gpu"),
            machine.get("cpu_count"), engine)


def fresh_cache(path: Path) -> None:
    """Empty ``path`` for a cold run (only a folder this script made, or a missing/empty one)."""
    if path.exists() and any(path.iterdir()) and not (path / MARKER).is_file():
        sys.exit(f"--cold: {path} is not empty and was not made by this script; "
                 "pass another --cache-dir (it is emptied)")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by benchmarks/eval_speed.py; emptied by --cold\n")


def cache_files(path: Path) -> list[str]:
    """The cache files under ``path`` (relative), the marker left out."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != MARKER)


def measure(args: argparse.Namespace) -> None:
    """Run `crysgen evaluate` cold or warm and write its record (see the module docstring)."""
    cache = Path(args.cache_dir).resolve()
    if args.cold:
        fresh_cache(cache)
    elif not cache.is_dir() or not cache_files(cache):
        sys.exit(f"warm run: no caches in {cache}; run with --cold first (same --cache-dir)")
    before = cache_files(cache)
    out = Path(args.out or WORK / f"eval_speed_{'cold' if args.cold else 'warm'}{args.suffix}")
    shutil.rmtree(out, ignore_errors=True)
    train = args.train
    if args.train_limit:  # the first K training crystals (a small hull for a CPU smoke test)
        from crysgen.crystal_set import CrystalSet

        train = str(WORK / f"{Path(args.train).stem}_first{args.train_limit}.npz")
        CrystalSet.load(args.train).subset(slice(0, args.train_limit)).save(train)
    models = args.models_dir or os.environ.get("CRYSGEN_MODELS_DIR") or str(ROOT / ".cgcnn")
    cmd = ["crysgen", "evaluate", args.samples, "--train", train, "--reference", args.reference,
           "--out", str(out), "--metrics", FAMILIES, "--potential", args.potential,
           "--dataset", "mp_20", "--property-model", "formation_energy", "--models-dir", models,
           "--limit", str(args.n), "--device", args.device, "--workers", str(args.workers),
           *(["--relax-batch", str(args.relax_batch)] if args.relax_batch else []),
           "--relax-steps", str(args.relax_steps),
           "--relax-engine", args.relax_engine, "--cache-dir", str(cache), "--quiet"]
    if args.relax_workers:
        cmd += ["--relax-workers", str(args.relax_workers)]
    if args.reference_limit:
        cmd += ["--reference-limit", str(args.reference_limit)]
    env = {**os.environ, "CRYSGEN_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    print(shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "crysgen", *cmd[1:]], env=env, cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    saved = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else {}
    if proc.returncode != 0 or saved.get("status") != "complete":
        sys.exit(f"crysgen evaluate failed (exit {proc.returncode}); its status: "
                 f"{json.dumps({k: saved.get(k) for k in ('status', 'running', 'error', 'seconds')})}")
    seconds = saved["seconds"]
    m = saved["metrics"]
    # every scalar metric, so that a 10,000-sample run also serves as the model's CDVAE-protocol scoring
    value = {k: v["value"] for k, v in m.items() if isinstance(v, dict)
             and isinstance(v.get("value"), (int, float)) and not isinstance(v["value"], bool)}
    record = {
        "cold": bool(args.cold), "n": args.n, "device": args.device, "potential": args.potential,
        "train_limit": args.train_limit,
        "wall_seconds": round(wall, 1),
        "families_seconds": {k: v for k, v in seconds.items() if "." not in k},
        "steps_seconds": {k: v for k, v in seconds.items() if "." in k},
        "evaluate_command": shlex.join(cmd),
        "options": {k: saved["options"].get(k) for k in ("workers", "relax_workers", "relax_batch_size",
                                                         "relax_steps", "relax_fmax", "relax_time_limit_s",
                                                         "reference_limit", "potential", "device",
                                                         "relax_engine")},
        "caches_before": len(before), "caches_after": cache_files(cache),
        "properties": "skipped: " + m["properties_skipped"]["reason"] if "properties_skipped" in m
        else "CGCNN", "values": value,
    } | stamp(args.device)
    target = TARGETS_S.get(args.n)
    if target is not None:
        record["target"] = {"seconds": target, "met": wall <= target,
                            "applies": "one H200, cold, both potentials (issue 19 item 4)"}
    path = RESULTS / f"eval_speed{args.suffix}.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    runs = [r for r in data.get("runs", []) if not isinstance(r, dict) or run_key(r) != run_key(record)]
    data = {"runs": [*runs, record],
            "definition": "wall_seconds: the whole `crysgen evaluate` process (imports, model loading, "
                          "every family); families_seconds/steps_seconds: its metrics.json timings; "
                          "cold: the cache folder emptied first (reference energies, elemental "
                          "terminals and reference fingerprints computed)"}
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(json.dumps({"cold": record["cold"], "wall_seconds": record["wall_seconds"],
                      **record["families_seconds"]}))
    print(f"wrote {path}")


def summarize() -> None:
    """The per-family speed of every model evaluation -> eval_speed_models.json."""
    runs = []
    for path in sorted(RESULTS.glob("eval_*.json")):
        if path.name.startswith(("eval_sanity", "eval_speed")):
            continue
        d = json.loads(path.read_text())
        n = d["metrics"]["n_samples"]["value"]
        valid = round(d["metrics"].get("struct_valid", {}).get("value", float("nan")) * n)
        families = {}
        for fam, sec in d["seconds"].items():
            if "." in fam:  # a step inside a family
                continue
            row = {"seconds": sec, "samples_per_s": round(n / sec, 2) if sec else None}
            if fam == "stability" and sec:
                relaxed = d["metrics"].get("mean_relax_rmsd", {}).get("n", valid)
                row["relaxed_structures"] = relaxed
                row["relaxed_structures_per_s"] = round(relaxed / sec, 3)
            families[fam] = row
        total = d["seconds"].get("total")
        gpu = d["options"].get("device", "cpu").startswith("cuda")
        runs.append({"file": str(path.relative_to(ROOT)), "model": d["options"].get("name"),
                     "dataset": d["dataset"], "n_samples": n, "structurally_valid": valid,
                     "device": d["options"].get("device"), "workers": d["options"].get("workers"),
                     "relax_workers": d["options"].get("relax_workers") or d["options"].get("workers"),
                     "relax_steps": d["options"].get("relax_steps"),
                     "machine": d.get("machine"), "commit": d.get("commit"), "families": families,
                     "stability_included": "stability" in d["seconds"],
                     "target_10_min_on_gpu": (total <= 600 if gpu and "stability" in d["seconds"] else None)})
    out = {"runs": runs, "definition": "samples/s = samples submitted / family wall seconds; "
           "relaxed_structures_per_s = structures relaxed to the end (with an RMSD; cells refused as "
           "degenerate and failed relaxations not counted) / stability seconds"} | stamp()
    path = RESULTS / "eval_speed_models.json"
    write_text_atomic(path, json.dumps(out, indent=1, sort_keys=True) + "\n")
    for r in runs:
        print(r["file"], {k: v["samples_per_s"] for k, v in r["families"].items()})
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("samples", nargs="?", help="a `crysgen sample` folder (or CIFs, or a CrystalSet .npz)")
    p.add_argument("-n", type=int, default=1000, help="evaluate the first N samples (1000)")
    p.add_argument("--cold", action="store_true", help="empty --cache-dir first (a cold start)")
    p.add_argument("--train", default=str(WORK / "mp_20_train_partial.npz"))
    p.add_argument("--train-limit", type=int, default=None,
                   help="only the first K training crystals (CPU smoke tests; default: all)")
    p.add_argument("--reference", default=str(WORK / "mp_20_test.npz"))
    p.add_argument("--reference-limit", type=int, default=None,
                   help="a seeded subset of the reference (default: all of it, as CDVAE)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=8, help="processes for the per-structure work")
    p.add_argument("--relax-workers", type=int, default=None,
                   help="relaxation processes (default --workers)")
    p.add_argument("--relax-batch", type=int, default=EvalOptions.relax_batch_size,
                   help="structures per potential forward pass (default: the engine's)")
    p.add_argument("--relax-steps", type=int, default=EvalOptions.relax_steps,
                   help="FIRE steps at most (%(default)s, crysgen evaluate's default)")
    p.add_argument("--relax-engine", default=EvalOptions.relax_engine,
                   help="crysgen evaluate --relax-engine (%(default)s)")
    p.add_argument("--potential", default="both", choices=("chgnet", "sevennet", "both"))
    p.add_argument("--models-dir", default=None, help="CGCNN models (default $CRYSGEN_MODELS_DIR or .cgcnn)")
    p.add_argument("--cache-dir", default=str(WORK / "eval_speed_cache"),
                   help="the run's cache folder (emptied by --cold)")
    p.add_argument("--out", default=None,
                   help="report folder (default benchmarks/.work/eval_speed_<cold|warm><suffix>)")
    p.add_argument("--suffix", default="", help="appended to the result file's name (e.g. _cpu)")
    p.add_argument("--summarize", action="store_true",
                   help="summarise the eval_model.py results instead (eval_speed_models.json)")
    args = p.parse_args()
    if args.summarize:
        summarize()
    elif args.samples is None:
        p.error("give a sample folder to measure, or --summarize")
    else:
        measure(args)


if __name__ == "__main__":
    main()
