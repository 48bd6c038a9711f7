"""Benchmark of dataset preparation and the CrysTens codec -> benchmarks/results/codec.json.

Three phases, each written into its own section of the JSON with the exact command, git commit,
machine and date (a phase can run on another machine than the others):

* ``prepare``: `crysgen data prepare` of every split of perov_5, carbon_24 and mp_20 with 2
  workers (counts kept/dropped, seconds), plus the 7.5k-row timing (first 7,500 rows of mp_20
  val, the most expensive cells).
* ``throughput``: encode and decode speed in one process with one thread.
* ``roundtrip``: match rates of encode -> noise -> decode -> StructureMatcher() on all splits
  together (or ``--splits``), auto and faithful, noise sigma in {0, 0.003, 0.01, 0.03} (or
  ``--noises``); faithful broken down by whether a crystal has > 3 elements or > 6 distinct
  coordinate values. ``--sites`` and ``--element-code`` choose the CrysTens layout (each run
  records it; runs of different layouts are kept apart), ``--out`` another result file.

Usage::

    python benchmarks/codec.py --phase prepare --shared ../shared
    python benchmarks/codec.py --phase throughput
    python benchmarks/codec.py --phase roundtrip --workers 16
    python benchmarks/codec.py --phase roundtrip --element-code --splits test --noises 0,0.01 \
        --out benchmarks/results/codec_element_code.json
    python benchmarks/codec.py --phase merge --inputs other_machine/codec.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import time
from pathlib import Path

import numpy as np

from crysgen import CrystalSet
from crysgen.codec.roundtrip import roundtrip
from crysgen.crystal_set import write_text_atomic
from crysgen.data.prepare import PrepareOptions, prepare_dataset, write_prepared
from crysgen.representations.crystens import CrysTensScaling, DecodeOptions, decode, encode
from crysgen.representations.crystens.layout import CrysTensLayout
from provenance import ROOT, commit, machine, stamp  # noqa: F401  (re-exported: scripts import them from here)

RESULTS = ROOT / "benchmarks" / "results" / "codec.json"
DATASETS = {
    "perov_5": ("train_poscar", "val", "test"),
    "carbon_24": ("train_poscar", "val", "test"),
    "mp_20": ("train_partial", "val", "test"),
}
NOISES = (0.0, 0.003, 0.01, 0.03)


def write_section(name: str, section: dict, results: Path = RESULTS) -> None:
    data = json.loads(results.read_text()) if results.exists() else {}
    data[name] = section
    results.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(results, json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote section {name!r} of {results}")


def split_path(work: Path, dataset: str, split: str) -> Path:
    return work / f"{dataset}_{split}.npz"


def load_all(work: Path, dataset: str, limit: int | None = None,
             splits: tuple[str, ...] | None = None) -> CrystalSet:
    sets = [CrystalSet.load(split_path(work, dataset, s)) for s in splits or DATASETS[dataset]]
    cs = CrystalSet.concatenate(sets)
    return cs.subset(slice(0, limit)) if limit else cs


def phase_prepare(args: argparse.Namespace) -> None:
    work = Path(args.work)
    out: dict = {"workers": 2, "cell": "conventional", "max_sites": 52, "datasets": {}}
    for dataset, splits in DATASETS.items():
        out["datasets"][dataset] = {}
        for split in splits:
            src = Path(args.shared) / "data" / dataset / f"{split}.csv.gz"
            t0 = time.perf_counter()
            cs, report = prepare_dataset(src, PrepareOptions(), workers=2, progress=False)
            write_prepared(cs, report, split_path(work, dataset, split))
            seconds = time.perf_counter() - t0
            out["datasets"][dataset][split] = {
                "n_input": report.n_input, "n_kept": report.n_kept,
                "dropped_by_reason": report.dropped_by_reason, "seconds": round(seconds, 2),
                "crystals_per_s": round(report.n_input / seconds, 1),
            }
            print(dataset, split, out["datasets"][dataset][split], flush=True)
    src = Path(args.shared) / "data" / "mp_20" / "val.csv.gz"
    t0 = time.perf_counter()
    cs, report = prepare_dataset(src, PrepareOptions(limit=7500), workers=2, progress=False)
    seconds = time.perf_counter() - t0
    out["csv_7500_rows"] = {"source": "mp_20/val.csv.gz, first 7500 rows", "workers": 2,
                            "n_kept": report.n_kept, "seconds": round(seconds, 2),
                            "target_seconds": 120, "met": seconds < 120}
    print(out["csv_7500_rows"])
    write_section("prepare", out | stamp())


def phase_throughput(args: argparse.Namespace) -> None:
    work = Path(args.work)
    out: dict = {"threads": 1, "targets": {"encode_per_s": 10000, "decode_auto_per_s": 200},
                 "datasets": {}}
    for dataset in DATASETS:
        cs = load_all(work, dataset)
        scaling = CrysTensScaling.fit(cs)
        t0 = time.perf_counter()
        for s in range(0, len(cs), 4096):  # slices bound the output memory (~270 MB)
            encode(cs.subset(slice(s, s + 4096)), scaling)
        enc = len(cs) / (time.perf_counter() - t0)
        sub = cs.subset(slice(0, args.decode_n))
        tensors = encode(sub, scaling)
        rates = {}
        for mode, n in (("auto", len(sub)), ("faithful", min(len(sub), args.faithful_n))):
            t0 = time.perf_counter()
            for s in range(0, n, 256):
                decode(tensors[s : min(s + 256, n)], scaling, DecodeOptions(mode=mode))
            rates[mode] = n / (time.perf_counter() - t0)
        out["datasets"][dataset] = {
            "n_encoded": len(cs), "encode_per_s": round(enc), "n_decoded_auto": len(sub),
            "decode_auto_per_s": round(rates["auto"], 1),
            "n_decoded_faithful": min(len(sub), args.faithful_n),
            "decode_faithful_per_s": round(rates["faithful"], 1),
            "mean_sites": round(float(cs.num_sites.mean()), 2),
        }
        print(dataset, out["datasets"][dataset], flush=True)
    write_section("throughput", out | stamp())


def crystal_flags(cs: CrystalSet) -> dict[str, np.ndarray]:
    many_elements = np.array([len(np.unique(cs.atomic_numbers[i, : cs.num_sites[i]])) > 3
                              for i in range(len(cs))])
    many_coords = np.array([
        len(np.unique(np.round(cs.frac_coords[i, : cs.num_sites[i]].ravel(), 5))) > 6
        for i in range(len(cs))
    ])
    return {"gt3_elements": many_elements, "gt6_coord_values": many_coords}


def layout_key(run: dict) -> tuple[int, bool]:
    """(sites, element_code) of a run; runs recorded before layouts are the paper's."""
    layout = run.get("layout", {})
    return int(layout.get("sites", 52)), bool(layout.get("element_code", False))


def phase_roundtrip(args: argparse.Namespace) -> None:
    work = Path(args.work)
    results = Path(args.out)
    layout = CrysTensLayout(sites=args.sites, element_code=args.element_code)
    splits = tuple(args.splits.split(",")) if args.splits else None
    noises = tuple(float(v) for v in args.noises.split(","))
    out: dict = {"workers": args.workers, "matcher": "pymatgen StructureMatcher() defaults",
                 "scaling": "fitted on the round-tripped set (CLI default)",
                 "noise": "i.i.d. Gaussian added to every entry of the scaled tensor, no clipping",
                 "targets": {"auto_clean": 0.999, "auto_noise_0.01": 0.95}, "datasets": {}}
    configs = {"auto": ("auto", "map"), "faithful": ("faithful", "map"),
               "auto-round": ("auto", "round")}
    modes = [configs[m] for m in args.modes.split(",")]
    for dataset in args.datasets.split(","):
        cs = load_all(work, dataset, args.limit, splits)
        scaling = CrysTensScaling.fit(cs, layout=layout)
        flags = crystal_flags(cs)
        runs = []
        for mode, elements in modes:
            for noise in noises:
                t0 = time.perf_counter()
                res = roundtrip(cs, scaling=scaling,
                                options=DecodeOptions(mode=mode, elements=elements),
                                noise=noise, seed=0, workers=args.workers, progress=False)
                row = res.summary() | {"wall_s": round(time.perf_counter() - t0, 1),
                                       "layout": layout.to_dict(),
                                       "splits": list(splits or DATASETS[dataset])}
                if mode == "faithful":
                    m = res.matched_mask
                    row["by_kind"] = {
                        name: {"n": int(f.sum()),
                               "match_rate": float(m[f].mean()) if f.any() else None}
                        for name, f in (*flags.items(),
                                        ("neither", ~flags["gt3_elements"] & ~flags["gt6_coord_values"]))
                    }
                runs.append(row)
                print(dataset, mode, noise, f"{res.match_rate:.4f}", res.failure_reasons, flush=True)
        out["datasets"][dataset] = {
            "n": len(cs), "splits": list(splits or DATASETS[dataset]),
            "n_gt3_elements": int(flags["gt3_elements"].sum()),
            "n_gt6_coord_values": int(flags["gt6_coord_values"].sum()),
            "runs": [r | stamp() for r in runs],
        }
        old = json.loads(results.read_text()).get("roundtrip", {}) if results.exists() else {}
        write_section("roundtrip", merge_roundtrip(old, out), results)


def merge_roundtrip(old: dict, new: dict) -> dict:
    """Merge two roundtrip sections: runs are keyed by (dataset, layout, mode, elements, noise).

    Of two runs with the same key, the one measured later (its "date") is kept.

    Runs without their own stamp inherit their dataset's (older result files).
    """
    merged = old | {k: v for k, v in new.items() if k != "datasets"}
    datasets = {name: dict(d) for name, d in old.get("datasets", {}).items()}
    for name, d in new.get("datasets", {}).items():
        stamp_keys = ("command", "commit", "crysgen_version", "machine", "date")
        runs = {}
        for src in (datasets.get(name, {}), d):
            for r in src.get("runs", []):
                r = {k: src[k] for k in stamp_keys if k in src} | r
                key = (*layout_key(r), r["mode"], r.get("elements", "map"), r["noise"])
                if key not in runs or r.get("date", "") >= runs[key].get("date", ""):
                    runs[key] = r
        entry = {k: v for k, v in (datasets.get(name, {}) | d).items() if k not in stamp_keys}
        entry["runs"] = [runs[k] for k in sorted(runs)]
        datasets[name] = entry
    merged["datasets"] = datasets
    return merged


def phase_merge(args: argparse.Namespace) -> None:
    section = json.loads(RESULTS.read_text()).get("roundtrip", {}) if RESULTS.exists() else {}
    for path in args.inputs:
        section = merge_roundtrip(section, json.loads(Path(path).read_text())["roundtrip"])
    write_section("roundtrip", section)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--phase", choices=("prepare", "throughput", "roundtrip", "merge"), required=True)
    p.add_argument("--inputs", nargs="*", default=[],
                   help="merge: codec.json files from other machines whose roundtrip runs to add")
    p.add_argument("--shared", default=str(ROOT.parent / "shared"), help="the shared folder")
    p.add_argument("--work", default=str(ROOT / "benchmarks" / ".work"),
                   help="where prepared CrystalSets are kept")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--modes", default="auto,faithful,auto-round",
                   help="auto, faithful, auto-round (auto with per-site rounding of Z: ablation)")
    p.add_argument("--limit", type=int, default=None, help="first N crystals (smoke runs)")
    p.add_argument("--splits", default=None, help="roundtrip: comma-separated splits (default: all)")
    p.add_argument("--noises", default=",".join(map(str, NOISES)), help="roundtrip: noise sigmas")
    p.add_argument("--sites", type=int, default=52, help="roundtrip: CrysTens site rows S (52)")
    p.add_argument("--element-code", action="store_true",
                   help="roundtrip: CrysTens layout with element codes in the header")
    p.add_argument("--out", default=str(RESULTS), help="roundtrip: result JSON (codec.json)")
    p.add_argument("--decode-n", type=int, default=5000, help="crystals decoded for throughput")
    p.add_argument("--faithful-n", type=int, default=1000, help="... in faithful mode")
    args = p.parse_args()
    {"prepare": phase_prepare, "throughput": phase_throughput,
     "roundtrip": phase_roundtrip, "merge": phase_merge}[args.phase](args)


if __name__ == "__main__":
    main()
