#!/usr/bin/env bash
# The wheel folders a device call carries (ignored by git; a fresh checkout has none), for the
# GPU machine's CPython 3.12 (see ../shared/GPU.md for what it already has):
#   .whl_train  the shared wheels without chgnet and ase (pymatgen, spglib, diffusers, ...): training
#   .whl_eval   chgnet, ase, smact, matminer, tabulate, pymongo (bson): the evaluation suite
#   .whl_7net   sevenn, repacked with only the SevenNet-0 (11Jul2024) checkpoint and without its
#               LAMMPS/D3 sources and libraries (43 MB -> 10 MB), plus e3nn, opt_einsum(_fx),
#               braceexpand and matscipy: --potential sevennet|both
# gpu_atoms.sh installs every carried .whl*/ folder once per machine.
#   bash benchmarks/device_wheels.sh          (needs PyPI; about 1 minute)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
SHARED=${SHARED:-../shared/wheels/gpu-py312}
DL=$(mktemp -d)
trap 'rm -rf "$DL"' EXIT
rm -rf .whl_train .whl_eval .whl_7net
mkdir -p .whl_train .whl_eval .whl_7net
for w in "$SHARED"/*.whl; do
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
