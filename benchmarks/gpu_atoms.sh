#!/usr/bin/env bash
# The atom diffusion transformer on the GPU machine: train (detached), sample, evaluate.
# Carry .whl (pymatgen/spglib/diffusers/chgnet + smact/matminer wheels), .cgcnn, .snap (the
# committed code, `git archive` of HEAD, so concurrent uncommitted edits never run) and
# benchmarks/.work (mp_20_asis_{train_partial,val,test}.npz). CRYSGEN_COMMIT names the commit.
#   bash benchmarks/gpu_atoms.sh launch MINUTES WAIT   # install, start training, watch WAIT s
#   bash benchmarks/gpu_atoms.sh watch WAIT            # watch until training ends or WAIT s
#   bash benchmarks/gpu_atoms.sh sample STEPS          # 1,000 de novo, 10,000 timed, CSP on the test split
#   bash benchmarks/gpu_atoms.sh eval NAME             # eval_model.py with CHGNet stability
set -u
R=/tmp/runs; W=benchmarks/.work; S=$PWD/.snap
export PYTHONPATH=/tmp/site:$S/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SPGLIB_WARNING=OFF
export CRYSGEN_MODELS_DIR=$PWD/.cgcnn PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
OUT=${OUT:-/tmp/out}
install() {
  [ -d /tmp/site/smact ] && return
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>&1 | grep -v "already exists"
  rm -f /tmp/site/pynvml.py
}
progress() {
  nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv,noheader
  m=$(ls $R/atoms/logs/*/metrics.csv 2>/dev/null | tail -1)
  [ -n "$m" ] && { head -1 $m; grep -v ",,,,,,,,$" $m | tail -2; grep val_loss -A0 $m >/dev/null; awk -F, '$7!=""' $m | tail -1; }
  ls $R/atoms/checkpoints 2>/dev/null | tail -2 | tr '\n' ' '; echo
  grep -iE "error|traceback" $R/atoms.log | head -5
}
pack() {  # the exported model and the run's records
  [ -f $R/atoms/model/config.json ] || return
  tar czf $OUT/atoms_run.tgz -C $R atoms/model atoms/config.yaml atoms/atoms.json atoms/logs \
    $( [ -f $R/atoms/train_summary.json ] && echo atoms/train_summary.json atoms/curves.png ) atoms.log
}
watch() {
  end=$((SECONDS + $1))
  while [ $SECONDS -lt $end ] && pgrep -f "[c]rysgen train" >/dev/null; do sleep 15; done
  progress; pack
}
case $1 in
launch)
  install; mkdir -p $R
  python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
  setsid nohup python3 -m crysgen train atom-diffusion --data $W/mp_20_asis_train_partial.npz \
    --val $W/mp_20_asis_val.npz --out $R/atoms --config $S/configs/atom_diffusion_mp20.yaml \
    --max-minutes $2 --quiet > $R/atoms.log 2>&1 < /dev/null &
  sleep 60; progress; watch $(( $3 - 60 )) ;;
watch) watch $2 ;;
sample)
  M=$R/atoms/model
  python3 $S/benchmarks/atom_diffusion.py $M --device cuda --steps $2 --out $W/atomsamples --csp $W/mp_20_asis_test.npz
  cp $S/benchmarks/results/atom_diffusion_mp_20*.json $OUT/ 2>/dev/null
  tar czf $OUT/atomsamples.tgz -C $W atomsamples/denovo atomsamples/csp/samples.csv atomsamples/csp/cifs ;;
eval)
  cp $W/mp_20_asis_train_partial.npz $W/mp_20_train_partial.npz; cp $W/mp_20_asis_test.npz $W/mp_20_test.npz
  python3 $S/benchmarks/eval_model.py $R/atoms/model --name $2 --dataset mp_20 --device cuda --workers 14 \
    --relax-workers 14 --relax-steps 300 --relax-time-limit 120 --progress --samples $W/atomsamples/denovo 2>&1 \
    | tr '\r' '\n' | grep -v -i "warn" | tail -40
  cp $S/benchmarks/results/eval_$2_mp_20.json $OUT/
  tar czf $OUT/eval_report.tgz $W/eval_$2_mp_20/report/metrics.json $W/eval_$2_mp_20/report/structures.csv ;;
esac
ls -la $OUT
