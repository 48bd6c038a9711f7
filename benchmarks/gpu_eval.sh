#!/usr/bin/env bash
# Run benchmarks/eval_model.py on the GPU machine for sample folders carried as
# benchmarks/.work/evalpack/NAME.tgz (made with `tar czf NAME.tgz NAME` in evalsamples/).
# Usage: bash benchmarks/gpu_eval.sh NAME MODEL [DATASET]   (carry .whl_eval2 .cgcnn and the data)
set -u
NAME=$1; MODEL=$2; DATASET=${3:-mp_20}
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SPGLIB_WARNING=OFF
export CRYSGEN_MODELS_DIR=$PWD/.cgcnn
OUT=${OUT:-/tmp/out}
[ -d /tmp/site/palettable ] || { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --target /tmp/site .whl_eval2/*.whl && rm -f /tmp/site/pynvml.py; }
mkdir -p benchmarks/.work/evalsamples
tar xzf benchmarks/.work/evalpack/$NAME.tgz -C benchmarks/.work/evalsamples
python3 benchmarks/eval_model.py "$MODEL" --name "$NAME" --dataset "$DATASET" --device cuda \
  --workers 14 --samples benchmarks/.work/evalsamples/$NAME 2>&1 | grep -v Warning | tail -40
cp benchmarks/results/eval_${NAME}_${DATASET}.json "$OUT"/ 2>/dev/null
tar czf "$OUT"/report_${NAME}_${DATASET}.tgz -C benchmarks/.work eval_${NAME}_${DATASET}/report 2>/dev/null
ls -la "$OUT"
