#!/usr/bin/env bash
# What a device call carries besides the tree (all ignored by git; a fresh checkout has none):
#   bash benchmarks/device_setup.sh wheels    # the wheel folders below (needs PyPI; ~1 minute)
#   bash benchmarks/device_setup.sh cgcnn     # .cgcnn: the CGCNN checkpoints (W(prop), properties)
#   bash benchmarks/device_setup.sh data [DATASET]   # .gpuwork/<dataset>_asis_{train_partial|train,val,test}.npz
#                                             # (as-given cells, crysgen data prepare; mp_20: ~9 min here)
#   bash benchmarks/device_setup.sh data-conv # .gpuwork/mp_20_conv_{train_partial,val,test}.npz (conventional
#                                             # cells, <= 52 sites: the CrysTens S = 52 row of gpu_session.sh) and
#                                             # mp_20_{asis,conv}_test_csp1k.npz (atom_csp_sweep.py's seeded 1,000
#                                             # test crystals in each cell; needs `data mp_20` first)
#   bash benchmarks/device_setup.sh data-trainval  # .gpuwork/mp_20_asis_train_partial_val.npz: the partial train
#                                             # split and the validation split in one set (the data lever of
#                                             # issue 18's ablation; needs `data mp_20` first)
#   bash benchmarks/device_setup.sh all       # wheels, cgcnn and mp_20 data
# The wheel folders, for the GPU machine's CPython 3.12 (see ../shared/GPU.md for what it has):
#   .whl_train  the shared wheels without chgnet and ase (pymatgen, spglib, diffusers, ...): training
#   .whl_eval   chgnet, ase, smact, matminer, tabulate, pymongo (bson): the evaluation suite
#   .whl_7net   sevenn, repacked with only the SevenNet-0 (11Jul2024) checkpoint and without its
#               LAMMPS/D3 sources and libraries (43 MB -> 10 MB), plus e3nn, opt_einsum(_fx),
#               braceexpand and matscipy: --potential sevennet|both
# gpu_atoms.sh installs every carried .whl*/ folder once per machine.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
SHARED=${SHARED:-../shared}
case ${1:-} in
cgcnn) rm -rf .cgcnn; cp -r "$SHARED/pretrained/cgcnn" .cgcnn; du -sh .cgcnn; exit ;;
data)
  d=${2:-mp_20}; max=$(case $d in mp_20) echo 20 ;; perov_5) echo 5 ;; carbon_24) echo 24 ;; mpts_52) echo 52 ;; esac)
  [ -n "$max" ] || { echo "unknown dataset $d" >&2; exit 2; }
  mkdir -p .gpuwork
  for csv in "$SHARED/data/$d"/*.csv.gz; do
    split=$(basename "$csv" .csv.gz); split=${split%_poscar}  # perov_5, carbon_24: train_poscar -> train
    out=.gpuwork/${d}_asis_$split.npz
    [ -f "$out" ] || .venv/bin/crysgen data prepare "$csv" --out "$out" --cell as-is --max-sites "$max" --quiet
  done
  ls -la .gpuwork; exit ;;
data-conv)
  for split in train_partial val test; do
    out=.gpuwork/mp_20_conv_$split.npz
    [ -f "$out" ] || .venv/bin/crysgen data prepare "$SHARED/data/mp_20/$split.csv.gz" --out "$out" --quiet
  done
  .venv/bin/python - <<'PY'
import numpy as np

from crysgen import CrystalSet

asis = CrystalSet.load(".gpuwork/mp_20_asis_test.npz")
conv = CrystalSet.load(".gpuwork/mp_20_conv_test.npz")
# the seeded draw of benchmarks/atom_csp_sweep.py (--n 1000 --seed 0), so every model meets the same targets
pick = np.sort(np.random.default_rng(0).choice(len(asis), 1000, replace=False))
ids = set(asis.ids[pick].tolist())
asis.subset(pick).save(".gpuwork/mp_20_asis_test_csp1k.npz")
keep = np.flatnonzero([i in ids for i in conv.ids])
conv.subset(keep).save(".gpuwork/mp_20_conv_test_csp1k.npz")
print(f"CSP targets: {len(pick)} as-is, {len(keep)} conventional (the rest have over 52 sites)")
PY
  exit ;;
data-trainval)
  .venv/bin/python - <<'PY'
from crysgen import CrystalSet

parts = [CrystalSet.load(f".gpuwork/mp_20_asis_{s}.npz") for s in ("train_partial", "val")]
both = CrystalSet.concatenate(parts)
both.save(".gpuwork/mp_20_asis_train_partial_val.npz")
print(f"train_partial {len(parts[0])} + val {len(parts[1])} = {len(both)} crystals")
PY
  exit ;;
all) bash "$0" wheels; bash "$0" cgcnn; bash "$0" data mp_20; exit ;;
wheels) ;;
*) sed -n 2,8p "$0"; exit 2 ;;
esac
DL=$(mktemp -d)
trap 'rm -rf "$DL"' EXIT
rm -rf .whl_train .whl_eval .whl_7net
mkdir -p .whl_train .whl_eval .whl_7net
for w in "$SHARED"/wheels/gpu-py312/*.whl; do
  case $(basename "$w") in chgnet*|ase*) cp "$w" .whl_eval/ ;; *) cp "$w" .whl_train/ ;; esac
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any -d "$DL" \
  smact matminer tabulate pymongo "sevenn==0.13.0" e3nn opt_einsum opt-einsum-fx braceexpand matscipy \
  2>&1 | grep -v "is ignored" || true
cp "$DL"/{smact,matminer,tabulate,pymongo}-*.whl .whl_eval/
cp "$DL"/{e3nn,opt_einsum,opt_einsum_fx,braceexpand,matscipy}-*.whl .whl_7net/
python3 - "$DL"/sevenn-*.whl .whl_7net <<'PY'
import sys
import zipfile
from pathlib import Path

src, out = Path(sys.argv[1]), Path(sys.argv[2])


def dropped(name: str) -> bool:
    """The other checkpoints and the LAMMPS/D3 sources and libraries (unused by crysgen)."""
    other_model = (name.startswith("sevenn/pretrained_potentials/") and name.endswith(".pth")
                   and "SevenNet_0__11Jul2024" not in name)
    return other_model or name.startswith("sevenn/pair_") or name.endswith(".so")


with zipfile.ZipFile(src) as zi, zipfile.ZipFile(out / src.name, "w", zipfile.ZIP_DEFLATED) as zo:
    for info in zi.infolist():
        if dropped(info.filename):
            continue
        data = zi.read(info.filename)
        if info.filename.endswith(".dist-info/RECORD"):
            lines = [x for x in data.decode().splitlines() if not dropped(x.split(",")[0])]
            data = ("\n".join(lines) + "\n").encode()
        zo.writestr(info, data)
PY
du -sh .whl_train .whl_eval .whl_7net
