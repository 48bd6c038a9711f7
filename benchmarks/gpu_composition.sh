#!/usr/bin/env bash
# Composition language models (`crysgen train composition`) fitted side by side on the GPU machine,
# one process each, packed into $OUT/composition_models.tgz.part_* (model directories with fp16
# weights and metrics.csv; unpack with `cat composition_models.tgz.part_* | tar xzf -`).
# Carry .whl_train and the data folder (WORK, default .gpuwork: <dataset>_asis_{train_partial,val}.npz).
#   RUNS="tag:--set net.order=z tag2:--set net.d_model=256 --set net.layers=4" \
#     bash benchmarks/gpu_composition.sh [EPOCHS]
# Each RUNS item is TAG:OPTIONS up to the next "TAG:" (tags are words without spaces).
set -u
source benchmarks/gpu_env.sh
install || exit 1
EPOCHS=${1:-40}
DATA=${WORK:-.gpuwork}
DATASET=${DATASET:-mp_20}
mkdir -p /tmp/comp
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
for f in /tmp/comp/*.log; do echo "== $f"; tail -3 "$f"; done
for d in /tmp/comp/*/; do echo "$(basename "$d"): $(tail -1 "$d"/metrics.csv)"; done
python3 - <<'PY'  # fp16 weights, to bring them all back in one call
from pathlib import Path

from crysgen.models.composition_lm import CompositionModel

for d in sorted(Path("/tmp/comp").glob("*/config.json")):
    CompositionModel.from_pretrained(d.parent).save_pretrained(d.parent, half=True)
PY
(cd /tmp/comp && tar czf - --exclude='*.log' */ | split -b 15M - "$OUT"/composition_models.tgz.part_)
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT"/gpu.txt
ls -la "$OUT"
