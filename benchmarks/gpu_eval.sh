#!/usr/bin/env bash
# Run benchmarks/eval_model.py on the GPU machine, detached, for sample folders carried as
# benchmarks/.work/evalpack/NAME.tgz (made with `tar czf NAME.tgz NAME` in evalsamples/), one
# after the other; waits up to WAIT seconds, then copies every finished result and the logs to $OUT.
# Usage: WAIT=560 WORKERS=14 RELAX_WORKERS=14 bash benchmarks/gpu_eval.sh "NAME=MODEL ..." [DATASET] [eval_model options]
# (before inference_grads, 12 relaxation workers filled the H100's 80 GB and 32 of 275 GAN
#  relaxations failed out of memory; with it, 14 workers peak at 31 GB: results/gpu_logs/)
# (carry .whl_train .whl_eval .cgcnn the dataset's npz files, benchmarks/.work/cache and evalpack)
set -u
JOBS=$1; DATASET=${2:-mp_20}; shift 2; EXTRA="$*"
source benchmarks/gpu_env.sh
export CRYSGEN_MODELS_DIR=$PWD/.cgcnn PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
install
pgrep -f "[n]vidia-smi --query" >/dev/null || \
  nohup nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -l 5 > "$OUT"/gpu_memory.csv 2>&1 &
mkdir -p benchmarks/.work/evalsamples /tmp/evallogs
if ! pgrep -f "[e]val_model.py" >/dev/null; then
  setsid nohup bash -c "
  for job in $JOBS; do
    name=\${job%%=*}; model=\${job#*=}
    [ -f benchmarks/results/eval_\${name}_$DATASET.json ] && continue
    tar xzf benchmarks/.work/evalpack/\$name.tgz -C benchmarks/.work/evalsamples
    python3 benchmarks/eval_model.py \$model --name \$name --dataset $DATASET --device cuda \
      --workers ${WORKERS:-14} --relax-workers ${RELAX_WORKERS:-14} --progress --samples benchmarks/.work/evalsamples/\$name $EXTRA > /tmp/evallogs/\$name.log 2>&1
  done" > /tmp/evallogs/driver.log 2>&1 &
fi
wait_for "[e]val_model.py" "${WAIT:-540}"
cp benchmarks/results/eval_*_${DATASET}.json "$OUT"/ 2>/dev/null
for d in benchmarks/.work/eval_*_${DATASET}/report; do
  [ -f $d/metrics.json ] && tar czf "$OUT"/report_$(basename $(dirname $d)).tgz $d
done
for f in /tmp/evallogs/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep -v "Warning\|warn\|N.A" | tail -8; done
ls "$OUT"
