#!/usr/bin/env bash
# Composition language models on the GPU machine, and composition-first samples from them.
#   RUNS="tag:--set net.order=z tag2:--set net.d_model=256 --set net.layers=4" \
#     bash benchmarks/gpu_composition.sh train [EPOCHS]
#       `crysgen train composition` per RUNS item (TAG:OPTIONS up to the next "TAG:"), side by side,
#       on <dataset>_asis_{train_partial,val}.npz of WORK (default .gpuwork); the model directories
#       (fp16 weights, metrics.csv) come back as $OUT/composition_models.tgz.part_* (unpack with
#       `cat composition_models.tgz.part_* | tar xzf -`); /tmp/comp/best is a copy of the one with
#       the lowest validation NLL (the selection rule: held-out likelihood, not a sample metric).
#   bash benchmarks/gpu_composition.sh sample COMP_MODEL N NAME [crysgen sample options]
#       N crystals of the bundled atom model with --composition-prior COMP_MODEL (seed 0) into
#       /tmp/cfs/NAME, packed as $OUT/NAME.tgz; the atom model is copied to /tmp/atommodel (for an
#       evaluation in a later call of the lease that does not carry it).
#   CRYSGEN_COMMIT=<sha> bash benchmarks/gpu_composition.sh eval NAME [eval_model options]
#       benchmarks/eval_model.py on /tmp/cfs/NAME (validity, coverage, distributions, novelty,
#       CHGNet stability; relaxation 300 steps, 120 s) against WORK's splits; the result to $OUT.
# Carry .whl_train for train/sample (installed into /tmp/site once per machine), .whl_eval for eval
# (with .whl_train installed by an earlier call of the lease), and WORK.
set -u
source benchmarks/gpu_env.sh
install || exit 1
DATA=${WORK:-.gpuwork}
DATASET=${DATASET:-mp_20}
mode=${1:?train, sample or eval}; shift
case $mode in
train)
  EPOCHS=${1:-40}
  rm -rf /tmp/comp; mkdir -p /tmp/comp
  # split RUNS at each " TAG:" into one line per run
  echo " $RUNS" | sed -E 's/ ([A-Za-z0-9_]+):/\n\1:/g' | sed '/^$/d' > /tmp/comp/runs.txt
  while IFS= read -r line; do
    tag=${line%%:*}; opts=${line#*:}
    # shellcheck disable=SC2086
    python3 -m crysgen train composition --data "$DATA/${DATASET}_asis_train_partial.npz" \
      --val "$DATA/${DATASET}_asis_val.npz" --out /tmp/comp/"$tag" --epochs "$EPOCHS" --device cuda --quiet \
      $opts > /tmp/comp/"$tag".log 2>&1 &
  done < /tmp/comp/runs.txt
  wait
  for f in /tmp/comp/*.log; do echo "== $f"; tail -2 "$f"; done
  python3 - <<'PY'  # fp16 weights, to bring them all back in one call; the best by validation NLL
import csv
import shutil
from pathlib import Path

from crysgen.models.composition_lm import CompositionModel

best = {}
for d in sorted(Path("/tmp/comp").glob("*/config.json")):
    CompositionModel.from_pretrained(d.parent).save_pretrained(d.parent, half=True)
    with (d.parent / "metrics.csv").open() as fh:
        best[d.parent.name] = min(float(r["val_nll"]) for r in csv.DictReader(fh))
    print(f"{d.parent.name}: best validation NLL {best[d.parent.name]:.4f}")
pick = min(best, key=best.get)
shutil.copytree(f"/tmp/comp/{pick}", "/tmp/comp_best", dirs_exist_ok=True)
print(f"best: {pick} -> /tmp/comp_best")
PY
  (cd /tmp/comp && tar czf - --exclude='*.log' */ | split -b 15M - "$OUT"/composition_models.tgz.part_)
  ;;
sample)
  model=${1:?composition model}; n=${2:?N}; name=${3:?NAME}; shift 3
  rm -rf /tmp/atommodel; cp -r src/crysgen/pretrained/atom_diffusion_mp20 /tmp/atommodel
  mkdir -p /tmp/cfs; rm -rf /tmp/cfs/"$name"
  python3 -m crysgen sample /tmp/atommodel --composition-prior "$model" -n "$n" --seed 0 --device cuda \
    --out /tmp/cfs/"$name" --quiet "$@" 2>&1 | grep -v Warning | tail -3
  tail -c 600 /tmp/cfs/"$name"/summary.json
  (cd /tmp/cfs && tar czf "$OUT"/"$name".tgz "$name")
  ;;
eval)
  name=${1:?NAME}; shift
  mkdir -p /tmp/ev/cache
  cp "$DATA/${DATASET}_asis_train_partial.npz" /tmp/ev/${DATASET}_train_partial.npz
  cp "$DATA/${DATASET}_asis_test.npz" /tmp/ev/${DATASET}_test.npz
  export CRYSGEN_MODELS_DIR=$PWD/.cgcnn PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  python3 benchmarks/eval_model.py /tmp/atommodel --name "$name" --dataset "$DATASET" --device cuda \
    --workers 14 --relax-workers 14 --relax-steps 300 --relax-time-limit 120 \
    --metrics validity,coverage,distributions,novelty,stability --work /tmp/ev --cache-dir /tmp/ev/cache \
    --samples /tmp/cfs/"$name" "$@" 2>&1 | grep -v "Warning\|warn" | tail -30
  cp benchmarks/results/eval_"$name"_"$DATASET".json "$OUT"/
  ;;
*) sed -n 2,22p "$0"; exit 2 ;;
esac
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT"/gpu.txt
ls -la "$OUT"
