# Sourced by the benchmarks/gpu_*.sh scripts on the device machine (repository root, the wheel
# folders of benchmarks/device_setup.sh carried): paths, environment and the offline install of
# the wheels the machine lacks. WORK names the carried data folder (default benchmarks/.work).
set -u
R=/tmp/runs
W=${WORK:-benchmarks/.work}
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SPGLIB_WARNING=OFF
OUT=${OUT:-/tmp/out}

# every wheel of the carried .whl*/ folders (.whl_train, .whl_eval, .whl_7net, ...) not yet
# installed into /tmp/site on this machine; one pip call per batch, because --target skips a
# package folder that exists (pymatgen and pymatgen_core share one)
install() {
  mkdir -p /tmp/site; touch /tmp/site/.installed
  local new
  new=$(for w in .whl*/*.whl; do [ -f "$w" ] && ! grep -qxF "$(basename $w)" /tmp/site/.installed && echo $w; done)
  [ -z "$new" ] && return
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $new 2>&1 \
    | grep -v "already exists"
  for w in $new; do basename $w >> /tmp/site/.installed; done
  rm -f /tmp/site/pynvml.py
}
