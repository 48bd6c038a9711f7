"""Speed and memory of batched CHGNet relaxation -> benchmarks/results/relax_speed.json.

Takes the structurally valid crystals of a sample folder (or any input `crysgen evaluate`
reads), and for each batch size relaxes that many of them with ``relax_batch`` (all in one
forward pass per step) for a fixed number of FIRE steps, in this one process. Records wall
seconds, structure-steps/s (the relaxation's throughput: one structure-step = one CHGNet
evaluation and one FIRE step of one structure), the seconds spent building graphs vs. in the
model, and on CUDA the peak memory PyTorch allocated and reserved; each batch size with each
``--engine``: ``crysgen`` (what the suite uses: ``chgnet_batch.predict_efs``, whole-batch tensors)
and ``chgnet`` (CHGNet's own ``predict_graph`` under ``inference_grads``, which the suite used
before). The numbers size the suite's relaxation workers and ``RelaxOptions.batch_size``.

Usage (GPU machine)::

    python3 benchmarks/relax_speed.py benchmarks/.work/evalsamples/gan --device cuda \
        --batch 16,64,128 --steps 30
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import pstats
import time
from pathlib import Path

import numpy as np

from codec import ROOT, stamp
from crysgen.crystal_set import write_text_atomic
from crysgen.data.structures import load_inputs
from crysgen.evaluation import chgnet_batch, stability
from crysgen.evaluation.validity import structurally_valid

RESULTS = ROOT / "benchmarks" / "results" / "relax_speed.json"


def graph_sizes(structures: list, device: str) -> dict[str, float]:
    """Mean atoms, bonds (atom graph edges) and angles (bond graph edges) of CHGNet's graphs."""
    model = stability.load_chgnet(device)
    model.graph_converter.set_isolated_atom_response("ignore")
    gs = [model.graph_converter(s) for s in structures]
    return {"atoms": float(np.mean([len(s) for s in structures])),
            "bonds": float(np.mean([g.atom_graph.shape[0] for g in gs])),
            "angles": float(np.mean([g.bond_graph.shape[0] for g in gs])),
            "volume_A3_per_atom": float(np.mean([s.volume / len(s) for s in structures]))}


def chgnet_predict(model, graphs, device, batch_size=16):
    """CHGNet's own batched prediction (its per-crystal loops), without ``create_graph``."""
    with stability.inference_grads():
        preds = model.predict_graph([g.to(device) for g in graphs], task="efs", batch_size=batch_size)
    return [preds] if isinstance(preds, dict) else preds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("samples")
    p.add_argument("--name", help="label of the sample set (default: the folder's name)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", default="16,64", help="comma-separated batch sizes")
    p.add_argument("--steps", type=int, default=30, help="FIRE steps per structure")
    p.add_argument("--engine", default="crysgen,chgnet",
                   help="comma-separated: crysgen (chgnet_batch) and/or chgnet (predict_graph)")
    p.add_argument("--profile", help="append cProfile's statistics of each run (cumulative and "
                   "own time) to this text file")
    args = p.parse_args()
    import torch

    structures = [c.structure for c in load_inputs(args.samples)
                  if c.structure is not None and structurally_valid(c.structure)]
    sizes = [int(b) for b in args.batch.split(",")]
    if len(structures) < max(sizes):
        raise SystemExit(f"{args.samples}: {len(structures)} valid crystals, fewer than batch {max(sizes)}")
    timing = {"graph": 0.0, "model": 0.0}
    predict = stability._predict_batch
    forward = type(stability.load_chgnet(args.device).graph_converter).forward

    def timed_predict(*a, **k):  # graphs + model, one batched step
        t = time.perf_counter()
        try:
            return predict(*a, **k)
        finally:
            timing["model"] += time.perf_counter() - t

    def timed_graph(self, *a, **k):  # the graph converter's share of it
        t = time.perf_counter()
        try:
            return forward(self, *a, **k)
        finally:
            timing["graph"] += time.perf_counter() - t

    stability._predict_batch = timed_predict
    type(stability.load_chgnet(args.device).graph_converter).forward = timed_graph
    runs = []
    name = args.name or Path(args.samples).name
    sizes_of_graphs = graph_sizes(structures[:64], args.device)
    stability.relax_batch(structures[:2], stability.RelaxOptions(steps=2, device=args.device))  # warm-up
    engines = {"crysgen": chgnet_batch.predict_efs, "chgnet": chgnet_predict}
    for b, engine in [(b, e) for b in sizes for e in args.engine.split(",")]:
        chgnet_batch.predict_efs = engines[engine]
        timing.update(graph=0.0, model=0.0)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        profiler = cProfile.Profile() if args.profile else None
        t0 = time.perf_counter()
        with profiler or contextlib.nullcontext():
            relaxed = stability.relax_batch(structures[:b],
                                            stability.RelaxOptions(steps=args.steps, device=args.device,
                                                                   time_limit_s=1e9, batch_size=b))
        wall = time.perf_counter() - t0
        if profiler is not None:
            text = io.StringIO()
            stats = pstats.Stats(profiler, stream=text)
            print(f"== {engine}, batch {b}, {args.steps} steps, wall {wall:.1f} s", file=text)
            stats.sort_stats("cumulative").print_stats(40)
            stats.sort_stats("tottime").print_stats(25)
            with Path(args.profile).open("a") as f:
                f.write(text.getvalue())
        steps = sum(r.steps for r in relaxed) + sum(1 for r in relaxed if r.energy_per_atom is not None)
        run = {"batch": b, "engine": engine, "steps": args.steps, "wall_s": round(wall, 2),
               "structure_steps": steps, "structure_steps_per_s": round(steps / wall, 1),
               "graph_s": round(timing["graph"], 2),
               "model_s_excluding_graph": round(timing["model"] - timing["graph"], 2),
               "reasons": sorted({r.reason for r in relaxed if r.reason})}
        if args.device.startswith("cuda"):
            run["peak_allocated_GB"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
            run["peak_reserved_GB"] = round(torch.cuda.max_memory_reserved() / 1e9, 2)
        print(json.dumps(run), flush=True)
        runs.append(run)
        # written after every run, so a run cut short by a time limit keeps the finished ones
        data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        data[f"{name}_{args.device}"] = {"samples": args.samples, "valid_structures": len(structures),
                                         "graph_sizes_first_64": sizes_of_graphs,
                                         "runs": runs} | stamp(args.device)
        write_text_atomic(RESULTS, json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
