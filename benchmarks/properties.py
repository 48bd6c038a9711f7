"""Property prediction benchmark -> benchmarks/results/properties.json (+ parity PNGs).

Training (DESIGN.md protocol for property models: train on the labelled val split, score on
test; fixed epochs, the final weights are scored, nothing is selected on test):
perov_5 ``heat_ref`` and ``dir_gap``, carbon_24 ``energy_per_atom``, each from scratch and with
Court et al.'s transfer learning from the pre-trained cgcnn formation-energy model (fine-tuned,
and for heat_ref also with frozen graph layers). Speed: structures/s of `crysgen predict` with
the eight pre-trained models (featurisation and prediction timed apart).

Usage: CRYSGEN_MODELS_DIR=../shared/pretrained/cgcnn python benchmarks/properties.py \
    --work benchmarks/.work [--epochs 60] [--device cpu] [--phase train|speed|all]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from codec import ROOT, stamp
from crysgen.crystal_set import write_text_atomic
from crysgen.data.structures import load_inputs
from crysgen.properties.predict import predict_properties
from crysgen.properties.registry import DEFAULT_MODELS, load_property_model
from crysgen.training.property import PropertyTrainConfig, train_property
from provenance import published

RESULTS = ROOT / "benchmarks" / "results" / "properties.json"
RUNS = [  # dataset, target, unit, init, freeze
    ("perov_5", "heat_ref", "eV", None, False),
    ("perov_5", "heat_ref", "eV", "formation_energy", False),
    ("perov_5", "heat_ref", "eV", "formation_energy", True),
    ("perov_5", "dir_gap", "eV", None, False),
    ("perov_5", "dir_gap", "eV", "formation_energy", False),
    ("carbon_24", "energy_per_atom", "eV/atom", None, False),
    ("carbon_24", "energy_per_atom", "eV/atom", "formation_energy", False),
]


def phase_train(args: argparse.Namespace, out: dict) -> None:
    runs = out.setdefault("training", {})
    work = Path(args.work)
    for dataset, target, unit, init, freeze in RUNS:
        key = f"{dataset}/{target}/" + ("scratch" if init is None else f"{init}{'-frozen' if freeze else ''}")
        run_dir = work / "property_runs" / key.replace("/", "_")
        shutil.rmtree(run_dir, ignore_errors=True)
        config = PropertyTrainConfig(epochs=args.epochs, seed=0)
        train_property(work / f"{dataset}_val.npz", run_dir, target=target, unit=unit, config=config,
                       val=work / f"{dataset}_test.npz", init=init, freeze_conv=freeze,
                       progress=False, accelerator="gpu" if args.device == "cuda" else "cpu")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        png = ROOT / "benchmarks" / "results" / f"properties_{key.replace('/', '_')}_parity.png"
        shutil.copy(run_dir / "parity.png", png)
        runs[key] = {"train": f"{dataset} val", "test": f"{dataset} test", **metrics,
                     "parity_plot": str(png.relative_to(ROOT))}
        print(key, {k: v for k, v in metrics.items() if k.startswith("val_") or k == "train_seconds"})


def phase_speed(args: argparse.Namespace, out: dict) -> None:
    models = {n: load_property_model(n) for n in DEFAULT_MODELS}
    speed = out.setdefault("predict_speed", {})
    for dataset in ("perov_5", "mp_20"):
        path = Path(args.work) / f"{dataset}_test.npz"
        if not path.exists():
            continue
        crystals = load_inputs(path)[: args.speed_n]
        predict_properties(crystals[:64], models, device=args.device)  # warm-up
        res = predict_properties(crystals, models, device=args.device, batch_size=256)
        n = len(crystals)
        speed[f"{dataset}/{args.device}"] = {
            "n": n, "models": len(models), "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "featurize_structures_per_s": round(n / res.seconds_featurize, 1),
            "predict_structures_per_s_all_models": round(n / res.seconds_predict, 1),
            "end_to_end_structures_per_s": round(n / (res.seconds_featurize + res.seconds_predict), 1),
            "problems": sum(1 for r in res.rows if r["problem"]),
        }
        print(dataset, speed[f"{dataset}/{args.device}"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", default="benchmarks/.work")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--device", default="cpu")
    p.add_argument("--speed-n", type=int, default=2000)
    p.add_argument("--phase", choices=("train", "speed", "all"), default="all")
    p.add_argument("--results", default=str(RESULTS), help="JSON to update")
    p.add_argument("--merge", default=None,
                   help="copy the predict_speed entries (and their run stamp) of this JSON in, then stop")
    args = p.parse_args()
    results = Path(args.results)
    out = json.loads(results.read_text()) if results.exists() else {}
    if args.merge:
        other = json.loads(Path(args.merge).read_text())
        for key, entry in other.get("predict_speed", {}).items():
            out.setdefault("predict_speed", {})[key] = entry | {"run": other.get("last_run_speed")}
        write_text_atomic(results, json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(f"merged {args.merge} into {results}")
        return
    t0 = time.perf_counter()
    provenance = stamp()  # before the tracked parity plots are rewritten, so a clean tree stays clean
    if args.phase in ("train", "all"):
        phase_train(args, out)
    if args.phase in ("speed", "all"):
        phase_speed(args, out)
    out["published"] = published("properties")["rows"]
    out[f"last_run_{args.phase}"] = provenance | {"seconds": round(time.perf_counter() - t0, 1),
                                               "epochs": args.epochs}
    write_text_atomic(results, json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
