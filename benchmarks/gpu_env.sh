# Sourced by the benchmarks/gpu_*.sh scripts on the device machine (repository root, the wheel
# folders of benchmarks/device_setup.sh carried): paths, environment and the offline install of
# the wheels the machine lacks. WORK names the carried data folder (default benchmarks/.work).
set -u
R=/tmp/runs
W=${WORK:-benchmarks/.work}
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SPGLIB_WARNING=OFF
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"  # a detached chain's own OUT (a call's $OUT exists already)
# Where the script started, as an absolute path: a later call that carries this folder again
# replaces it, and a process whose working directory was the replaced one can no longer resolve
# relative paths until it changes directory again (`cd "$HERE"`).
HERE=$PWD

# The call's own clock. A device call that runs past its limit is killed and brings nothing back
# (a lease lost an evaluation and four ablation rows that way), so every wait of these scripts ends
# CALL_S seconds (default 540) after the outermost script of the call started; a script that
# another one runs inherits the end through CALL_END.
CALL_END=${CALL_END:-$(( $(date +%s) + ${CALL_S:-540} ))}
export CALL_END
left() { echo $(( CALL_END - $(date +%s) )); }  # seconds until the call's end
# wait_for PATTERN [SECONDS]: until no process matches PATTERN, SECONDS pass or the call's clock
# runs out; true when nothing matches any more
wait_for() {
  local end=$(( $(date +%s) + ${2:-86400} ))
  [ $end -gt $CALL_END ] && end=$CALL_END
  while [ "$(date +%s)" -lt $end ] && pgrep -f "$1" >/dev/null; do sleep 5; done
  ! pgrep -f "$1" >/dev/null
}

# wait_files FILE...: until every FILE exists (or the call's clock runs out; false then). A folder
# carried in one call is gone in the next unless that call carries it again, and symbolic links are
# not carried at all: a detached chain that reads its data after training waits here for a call
# that brings the data folder back, instead of failing on a missing file.
wait_files() {
  local f said=
  for f in "$@"; do
    while [ ! -e "$f" ]; do
      [ -z "$said" ] && { echo "waiting for $f (carry its folder in this call)" >&2; said=1; }
      [ "$(left)" -le 0 ] && return 1
      sleep 5
    done
  done
}

# every wheel of the carried .whl*/ folders (.whl_train, .whl_eval, .whl_7net, ...) not yet
# installed into /tmp/site on this machine; one pip call per batch, because --target skips a
# package folder that exists (pymatgen and pymatgen_core share one)
# (run from the repository root or from .snap, whose wheels are in ..; an install that finds no
# wheel folder and has installed nothing before fails, instead of letting a detached run die later
# on a missing import)
install() {
  mkdir -p /tmp/site; touch /tmp/site/.installed
  local new root=.
  [ "$(basename "$PWD")" = .snap ] && root=..
  if ! ls -d $root/.whl*/ > /dev/null 2>&1 && [ ! -s /tmp/site/.installed ]; then
    echo "install: no .whl*/ folder in $(cd $root && pwd) and nothing installed before" >&2; return 1
  fi
  new=$(for w in $root/.whl*/*.whl; do [ -f "$w" ] && ! grep -qxF "$(basename $w)" /tmp/site/.installed && echo $w; done)
  [ -z "$new" ] && return 0
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $new 2>&1 \
    | grep -v "already exists"
  for w in $new; do basename $w >> /tmp/site/.installed; done
  rm -f /tmp/site/pynvml.py
}

# collect DIR...: what detached chains have written under DIRs since the last collect of this
# machine, as one tar in 15 MiB pieces $OUT/collect_<time>.tar.* (a call brings back at most 8 files
# of 16 MiB; unpack here with `cat collect_*.tar.* | tar x`)
collect() {
  local list=/tmp/collected.list new
  touch $list
  new=$(find "$@" -type f 2>/dev/null | sort | grep -vxF -f $list)
  [ -z "$new" ] && { echo "nothing new under $*"; return; }
  echo "$new" | tar cf - -T - | split -b 15M - $OUT/collect_$(date +%H%M%S).tar.
  echo "$new" >> $list; echo "collected $(echo "$new" | wc -l) files"
}
