# Sourced by the benchmarks/gpu_*.sh scripts on the device machine (repository root, .whl_min
# carried, or WHEELS): paths, environment and the offline install of the wheels the machine lacks.
set -u
R=/tmp/runs
W=benchmarks/.work
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SPGLIB_WARNING=OFF
OUT=${OUT:-/tmp/out}

# WHEELS: the carried wheel folder (.whl_min; .whl_eval2 for the evaluation suite); the install is
# skipped when /tmp/site already holds INSTALL_MARKER (a package only that wheel set has)
install() {
  [ -d /tmp/site/${INSTALL_MARKER:-pymatgen} ] && return
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    ${WHEELS:-.whl_min}/*.whl 2>&1 | grep -v "already exists"
  rm -f /tmp/site/pynvml.py
}
