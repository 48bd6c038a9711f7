# Sourced by the benchmarks/gpu_*.sh scripts on the device machine (repository root, .whl_min
# carried): paths, environment and the offline install of the wheels the machine lacks.
set -u
R=/tmp/runs
W=benchmarks/.work
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SPGLIB_WARNING=OFF
OUT=${OUT:-/tmp/out}

install() {
  [ -d /tmp/site/pymatgen ] && return
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .whl_min/*.whl && rm -f /tmp/site/pynvml.py
}
