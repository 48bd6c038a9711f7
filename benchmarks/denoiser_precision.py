"""How precisely an atom model's denoiser puts atoms back -> results/denoiser_precision_<name>.json.

For test crystals of the model's dataset (their own elements given, as in CSP), the coordinates
and the lattice are noised to σ (the same noise the training draws: Gaussian on the fractional
coordinates, wrapped, and on the standardised lattice features) and denoised once,
D(x_σ; σ). The crystals are Niggli-reduced first: every atom model trains on Niggli cells
(``data.niggli``), and a denoiser given a cell unlike those it was trained on misplaces atoms it
would otherwise restore (the first version of this script, without the reduction, measured that).
The error of the coordinates before and after, in Å (periodic minimum image in the crystal's
cell, the mean displacement of each crystal removed), is recorded per σ: a
denoiser that recovers the crystal returns errors well under the input's, and its floor at small
σ is the precision its samples can have at best (the last sampler steps run at σ ≤ 0.01).
It separates "the network cannot place atoms more precisely" from "the sampler loses precision".

    python benchmarks/denoiser_precision.py benchmarks/results/runs/atom_diffusion_carbon24_sites6/model \\
        --test .gpuwork/carbon_24_asis_test.npz --name c24sites6 -n 500
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from crysgen.crystal_set import CrystalSet
from crysgen.models.atom_transformer import lattice_matrix
from crysgen.objectives.atom_edm import Constants, Parts, denoise, wrap, wrap_centered
from crysgen.pipelines.atoms import AtomDiffusionModel, InBf16
from crysgen.representations.atoms import niggli_reduce
from provenance import write_result

SIGMAS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


def rms_angstrom(delta: torch.Tensor, cells: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """(B,) RMS over each crystal's real sites of the displacement ``delta`` (B, S, 3, fractional,
    minimum image), its mean over the sites removed, in Å in ``cells`` (B, 3, 3, rows = vectors)."""
    m = mask[..., None].float()
    d = wrap_centered(delta) * m
    d = d - d.sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1)
    cart = torch.einsum("bsi,bij->bsj", d * m, cells)
    return ((cart**2).sum(-1).sum(1) / mask.sum(1).clamp_min(1)).sqrt().numpy()


def measure(path: str, test: str, n: int, seed: int, precision: str = "fp32") -> dict:
    """Input and denoised coordinate errors per σ (see the module docstring); ``precision`` "bf16"
    runs the network under bf16 autocast as ``crysgen sample --precision auto`` does on a GPU."""
    model = AtomDiffusionModel.from_pretrained(path)
    crystals = CrystalSet.load(test)
    crystals = crystals.subset(np.flatnonzero(crystals.num_sites <= model.spec.max_atoms)[:n])
    crystals = niggli_reduce(crystals)  # the cells every atom model trains on (data.niggli)
    sets = model.encode(crystals)
    net = model.net.eval()
    if precision == "bf16":
        net = InBf16(net, "cpu")
    consts = Constants.from_spec(model.spec)
    codes = torch.as_tensor(model.spec.codes())
    mask = torch.as_tensor(sets.mask)
    x0 = Parts(codes[torch.as_tensor(sets.atomic_numbers)] * mask[..., None],
               torch.as_tensor(sets.frac), torch.as_tensor(sets.lattice))
    params = np.concatenate([crystals.lattice[:, :3], np.radians(crystals.lattice[:, 3:])], 1)  # Å, radians
    cells = lattice_matrix(torch.as_tensor(params, dtype=torch.float32))  # (B, 3, 3) row vectors
    given = torch.ones(len(mask), dtype=torch.bool)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for sigma in SIGMAS:
        eps_c = torch.randn(x0.frac.shape, generator=gen)
        eps_l = torch.randn(x0.lattice.shape, generator=gen)
        xt = Parts(x0.types, wrap(x0.frac + sigma * eps_c) * mask[..., None], x0.lattice + sigma * eps_l)
        before, after = [], []
        for i in range(0, len(mask), 128):
            sl = slice(i, i + 128)
            part = Parts(xt.types[sl], xt.frac[sl], xt.lattice[sl])
            with torch.no_grad():
                d = denoise(net, part, torch.full((len(mask[sl]),), sigma), mask[sl], given[sl], model.edm,
                            consts)
            before.append(rms_angstrom(part.frac - x0.frac[sl], cells[sl], mask[sl]))
            after.append(rms_angstrom(d.frac - x0.frac[sl], cells[sl], mask[sl]))
        b, a = np.concatenate(before), np.concatenate(after)
        rows.append({"sigma": sigma, "input_rms_A": {"mean": float(b.mean()), "median": float(np.median(b))},
                     "denoised_rms_A": {"mean": float(a.mean()), "median": float(np.median(a)),
                                        "q90": float(np.quantile(a, 0.9))},
                     "improved_share": float((a < b).mean())})
        print(f"σ {sigma:g}: input {b.mean():.4f} Å, denoised {a.mean():.4f} Å (median {np.median(a):.4f})")
    return {"model": path, "test": test, "n": len(mask), "seed": seed, "precision": precision, "rows": rows,
            "definition": "RMS over sites of the minimum-image displacement from the test crystal "
                          "(in its Niggli-reduced cell, as the models train), each crystal's mean "
                          "displacement removed (Å); elements given; one denoiser call at σ "
                          "(fractional coordinates; the same σ on the standardised lattice features)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="atom diffusion model directory")
    p.add_argument("--test", required=True, help="test CrystalSet .npz")
    p.add_argument("--name", required=True, help="result file: denoiser_precision_<name>.json")
    p.add_argument("-n", type=int, default=500, help="test crystals (the first n that fit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="the network's arithmetic (bf16: autocast, as sampling on a GPU runs it)")
    args = p.parse_args()
    write_result(f"denoiser_precision_{args.name}",
                 measure(args.model, args.test, args.n, args.seed, args.precision),
                 model=args.model)


if __name__ == "__main__":
    main()
