#!/usr/bin/env bash
# Keep what a device call sends (tracked + untracked-not-ignored files + carried paths) under its
# 64 MiB limit by setting aside large tracked files the call does not need, without git seeing
# them as deleted: each is marked skip-worktree first (so `git commit -a` cannot record a
# deletion) and moved under .git/device_hidden/ (never sent, kept across sessions).
#   bash benchmarks/device_tree.sh size [CARRY...]   # MiB that would travel with these carried paths
#   bash benchmarks/device_tree.sh hide [PATH...]    # default: every tracked file over 5 MB except
#                                                    # the bundled atom model (a training --init),
#                                                    # and the per-structure evaluation reports
#                                                    # (benchmarks/results/reports/, ~9 MB, read by
#                                                    # no device job)
#   bash benchmarks/device_tree.sh restore           # put everything back
#   bash benchmarks/device_tree.sh model MODEL_DIR   # .atommodel/: a copy of a model directory (also
#                                                    # a hidden one), to carry alone in a later call
#                                                    # of a lease (the folders carried before stay)
#   bash benchmarks/device_tree.sh pieces DIR I      # .advin/: the I-th group of PIECES (3) of the
#                                                    # 15 MiB pieces in DIR (a GAN / WGAN-GP run that
#                                                    # gpu_measure.sh adv-train packed), to carry in one
#                                                    # call; says how many groups there are
#   bash benchmarks/device_tree.sh snap              # .snap/: the committed code of HEAD (package,
#                                                    # benchmarks, configs; no models) and its COMMIT,
#                                                    # for CRYSGEN_COMMIT=$(cat .snap/COMMIT) there
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
H=.git/device_hidden
mib() { awk '{s += $1} END {printf "%.1f\n", s / 1048576}'; }
case ${1:-} in
size)
  shift
  { git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null || true
    [ $# -gt 0 ] && find "$@" -type f -printf '%s\n'; } | mib ;;
hide)
  shift
  paths=("$@")
  if [ ${#paths[@]} -eq 0 ]; then
    mapfile -t paths < <(git ls-files -z | xargs -0 stat -c '%s %n' 2>/dev/null \
      | awk '$1 > 5000000 || $2 ~ /^benchmarks\/results\/reports\// {print $2}' \
      | grep -v '^src/crysgen/pretrained/atom_diffusion_mp20/')
  fi
  for p in "${paths[@]}"; do
    [ -f "$p" ] || { echo "not a file here: $p" >&2; continue; }
    git ls-files --error-unmatch "$p" >/dev/null 2>&1 || { echo "not tracked: $p" >&2; exit 1; }
    git update-index --skip-worktree "$p"
    mkdir -p "$H/$(dirname "$p")"; mv "$p" "$H/$p"; echo "hid $p"
  done ;;
restore)
  [ -d $H ] || exit 0
  (cd $H && find . -type f -printf '%P\n') | while read -r p; do
    mkdir -p "$(dirname "$p")"; mv "$H/$p" "$p"; git update-index --no-skip-worktree "$p"; echo "restored $p"
  done
  find $H -depth -type d -empty -delete ;;
model)
  src=${2:?model directory}
  [ -f "$src/config.json" ] || [ -f "$H/$src/config.json" ] || { echo "not a model directory: ${2}" >&2; exit 1; }
  rm -rf .atommodel; mkdir .atommodel
  for d in "$src" "$H/$src"; do [ -d "$d" ] && cp -r "$d"/. .atommodel/; done  # files `hide` set aside too
  [ -f .atommodel/weights.safetensors ] || { echo "no weights.safetensors in ${2}" >&2; exit 1; }
  echo ".atommodel from $2, $(du -sh .atommodel | cut -f1)" ;;
pieces)
  dir=${2:?folder of the pieces}; i=${3:?group number, from 1}; k=${PIECES:-3}
  mapfile -t all < <(find "$dir" -maxdepth 1 -name '*.tgz.part_*' ! -name '*.sent' | sort)
  [ ${#all[@]} -gt 0 ] || { echo "no *.tgz.part_* pieces in $dir" >&2; exit 1; }
  groups=$(( (${#all[@]} + k - 1) / k ))
  [ "$i" -ge 1 ] && [ "$i" -le $groups ] || { echo "group $i of $groups?" >&2; exit 1; }
  grep -qxF /.advin/ .git/info/exclude || echo /.advin/ >> .git/info/exclude
  rm -rf .advin; mkdir .advin; cp "${all[@]:$(( (i - 1) * k )):$k}" .advin/
  echo ".advin: group $i of $groups ($(ls .advin | tr '\n' ' ')), $(du -sh .advin | cut -f1)" ;;
snap)
  grep -qxF /.snap/ .git/info/exclude || echo /.snap/ >> .git/info/exclude
  rm -rf .snap; mkdir .snap
  git archive HEAD src/crysgen benchmarks/'*.py' benchmarks/'*.sh' benchmarks/published.json configs \
    ':!src/crysgen/pretrained' | tar x -C .snap
  git rev-parse HEAD > .snap/COMMIT; echo ".snap at $(cat .snap/COMMIT), $(du -sh .snap | cut -f1)" ;;
*) sed -n 2,15p "$0"; exit 2 ;;
esac
