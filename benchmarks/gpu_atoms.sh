#!/usr/bin/env bash
# The atom diffusion transformer on the GPU machine: train (detached), sample, evaluate.
# DATASET (default mp_20) picks the data and configs/atom_diffusion_<dataset without _>.yaml; its
# CrystalSets are made here on the CPU first (as-given cells; S = 20 / 5 / 24):
#   crysgen data prepare ../shared/data/mp_20/train_partial.csv.gz --out benchmarks/.work/mp_20_asis_train_partial.npz \
#       --cell as-is --max-sites 20   (and val, test; perov_5 and carbon_24: train_poscar.csv.gz)
# Carry what benchmarks/device_setup.sh makes (.whl_train to train; .whl_eval and .whl_7net
# to evaluate), .cgcnn, .snap (the
# committed code, `git archive` of HEAD, so concurrent uncommitted edits never run) and
# benchmarks/.work (<dataset>_asis_{train,val,test}.npz; WORK=<folder> carries a smaller one instead).
# CRYSGEN_COMMIT names the commit. The tree and the carried paths must stay under 64 MiB: first
# `bash benchmarks/device_tree.sh hide` (every large model but the bundled atom one), after the
# calls `bash benchmarks/device_tree.sh restore`; `bash benchmarks/device_tree.sh snap` makes .snap.
#   bash benchmarks/gpu_atoms.sh launch MINUTES WAIT   # install, start training, watch WAIT s
#   bash benchmarks/gpu_atoms.sh watch WAIT            # watch until training ends or WAIT s
#   TAGS="a b" bash benchmarks/gpu_atoms.sh status    # progress of runs a and b, nothing packed (PACK=1:
#                                                      # each one's last checkpoint's model and records)
#   bash benchmarks/gpu_atoms.sh throughput            # steps/s by compile mode and batch size
#   PAIR="a:CFG_A b:CFG_B" bash benchmarks/gpu_atoms.sh pair MINUTES WAIT   # two runs, GPUs 0 and 1
#   PAIR=... bash benchmarks/gpu_atoms.sh pair-eval    # both evaluated at once
#   PAIR=... OUT=/tmp/atom_out CALL_S=4000 CALL_END= setsid nohup bash .snap/benchmarks/gpu_atoms.sh chain MINUTES &
#                                                      # both PAIR runs on this one GPU, then each one's
#                                                      # CSP sweep (Heun 50, churn 10) and evaluation
#                                                      # with stability, all into $OUT (for `collect`;
#                                                      # CSP_ONLY="tag ...": those runs are swept only;
#                                                      # scoring waits for .whl_eval in the chain's folder;
#                                                      # TAG:CONFIG@DATA trains that run on $W/DATA.npz,
#                                                      # every run is scored against the same train split;
#                                                      # SYM_SWEEP=1 adds a CSP sweep on symmetry templates)
#   (STEPS=N caps a launch's steps: the cosine rate decays over them)
#   (SAMPLE_N=10000: a launch/watch whose training has ended also samples that many de novo crystals
#    with the final model into $OUT/samples_atoms_TAG.tgz, in the same call)
#   (SET="compile=default optim.lr=2e-4": settings over CONFIG, each passed as --set)
#   SUFFIX=_x bash benchmarks/gpu_atoms.sh fastest | head -1   # the compile setting of the fastest row of
#                                                      # train_throughput_atom_<dataset>_x.json
#   bash benchmarks/gpu_atoms.sh sample STEPS          # 1,000 de novo, 10,000 timed, CSP on the test split
#                                                      # (SAMPLE_CHURN=S: EDM churn)
#   bash benchmarks/gpu_atoms.sh eval NAME [WAIT]      # eval_model.py with CHGNet stability of MODEL
#                                                      # (default the run's model; of the
#                                                      # `sample` folder, else of 1,000 new samples),
#                                                      # detached; result and report to $OUT when done
#   bash benchmarks/gpu_atoms.sh eval-wait NAME [WAIT] # follow it in a later call
#   (EVAL_ARGS='--composition-prior train --substitute': more eval_model.py options; new samples)
#   (every wait ends by the call's clock: CALL_S, default 540 s, see gpu_env.sh)
#   bash benchmarks/gpu_atoms.sh sweep MODEL           # CSP: Heun steps x churn (STEPS, CHURN, N;
#                                                      # SWEEP_ARGS: more atom_csp_sweep.py options;
#                                                      # needs .whl_eval installed, in this call or before)
#   bash benchmarks/gpu_atoms.sh denovo MODEL DIR      # N (1,000) de novo samples of MODEL into DIR, packed
#                                                      # into $OUT (N=10000: 80 s for carbon on an H100;
#                                                      # SAMPLE_ARGS: more `crysgen sample` options)
#   COLD=1 bash benchmarks/gpu_atoms.sh evalspeed DIR WAIT   # eval_speed.py (issue 19) on DIR, detached,
#                                                      # caches in /tmp/evs_cache; result -> /tmp/evs_result
#                                                      # (RELAX_WORKERS, default 14: with 4 the cold run of
#                                                      # eval_speed.json spent 276 s relaxing)
#   bash benchmarks/gpu_atoms.sh evalspeed-wait WAIT   # follow it in a later call
#   (METRICS=validity,coverage,... picks families; DATASET picks the data, run and sample folders;
#    TAG names the run and sample folders instead (two runs of one dataset side by side, each with its
#    own CUDA_VISIBLE_DEVICES); CONFIG another training YAML, INIT a model to start from)
source "$(dirname "$0")/gpu_env.sh"  # install, R, W (WORK), OUT
S=$PWD/.snap; D=${DATASET:-mp_20}
TR=$W/${D}_asis_train.npz  # a partial train split keeps its name (the model records it)
[ -f $W/${D}_asis_train_partial.npz ] && TR=$W/${D}_asis_train_partial.npz
G=${TAG:-$D}; RUN=atoms_$G; A=$W/atomsamples_$G  # one run directory and sample folder per dataset (or TAG)
export PYTHONPATH=/tmp/site:$S/src CRYSGEN_MODELS_DIR=$PWD/.cgcnn PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
progress() {
  nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv,noheader
  m=$(ls $R/$RUN/logs/*/metrics.csv 2>/dev/null | tail -1)
  [ -n "$m" ] && { head -1 $m; grep -v ",,,,,,,,$" $m | tail -2; grep val_loss -A0 $m >/dev/null; awk -F, '$7!=""' $m | tail -1; }
  ls $R/$RUN/checkpoints 2>/dev/null | tail -2 | tr '\n' ' '; echo
  grep -iE "error|traceback" $R/$RUN.log | head -5
}
best() {  # the checkpoint step of the lowest validation loss (none: no validation logged)
  python3 - "$(ls $R/$RUN/logs/*/metrics.csv 2>/dev/null | tail -1)" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("val_loss")] if sys.argv[1] else []
if rows:
    print(int(min(rows, key=lambda r: float(r["val_loss"]))["step"]) + 1)
PY
}
pack() {  # the exported model (with BEST=1 also the lowest-validation-loss one, model_best: a second
  # 24 MB that costs a call to bring back, and a validation loss that has not tracked sample quality)
  # and the run's records
  [ -f $R/$RUN/model/config.json ] || return
  b=$( [ -n "${BEST:-}" ] && best ); rm -rf $R/$RUN/model_best
  if [ -n "$b" ] && [ -f $R/$RUN/checkpoints/step$(printf %07d $b).ckpt ]; then
    python3 -m crysgen model export $R/$RUN --step $b --out $R/$RUN/model_best > /dev/null && echo "model_best: step $b"
  fi
  ship $RUN -C $R $RUN/model $( [ -d $R/$RUN/model_best ] && echo $RUN/model_best ) \
    $RUN/config.yaml $RUN/atoms.json $RUN/logs \
    $( [ -f $R/$RUN/train_summary.json ] && echo $RUN/train_summary.json $RUN/curves.png ) $RUN.log
}
ship() {  # NAME TAR_ARGS...: tar czf of TAR_ARGS into $OUT/NAME.tgz.part_aa, _ab, ... (files come back
  # at most 16 MiB each: cat NAME.tgz.part_* > NAME.tgz); split even when tar missed a file, as the
  # rest of a run's records is still worth bringing back
  local name=$1; shift
  tar czf $OUT/$name.tgz "$@"
  [ -f $OUT/$name.tgz ] && (cd $OUT && split -b 15m $name.tgz $name.tgz.part_ && rm $name.tgz)
}
watch() {  # with SAMPLE_N, a finished run's model also samples SAMPLE_N de novo crystals (its own
  # sampler defaults, seed 0) into $OUT/samples_$RUN.tgz in the same call, for `eval_model.py --samples`
  # on the CPU (10,000 carbon_24 samples take 44 min on a 2-core CPU, seconds here)
  local ended=; wait_for "[c]rysgen train atom-diffusion" $1 && ended=1; progress; pack
  if [ -n "${SAMPLE_N:-}" ] && [ -n "$ended" ] && [ -f $R/$RUN/model/config.json ]; then
    if [ "$(left)" -lt 90 ]; then echo "no time left in this call to sample (SAMPLE_N)"; return; fi
    rm -rf /tmp/samples_$RUN
    timeout $(( $(left) - 30 )) python3 -m crysgen sample $R/$RUN/model -n $SAMPLE_N --device cuda \
      --out /tmp/samples_$RUN --quiet && tail -c 300 /tmp/samples_$RUN/summary.json \
      && ship samples_$RUN -C /tmp samples_$RUN
  fi
}
csp_only() {  # TAG: a CSP_ONLY run (its element outputs untrained): no de novo evaluation
  [[ " ${CSP_ONLY:-} " == *" $1 "* ]]
}
case $1 in
install) install ;;
sweep)  # sampler settings vs CSP of MODEL (detached: survives between chained calls) -> /tmp/sweep_$G.log
  install
  # the scoring reads fingerprints with matminer, which only .whl_eval carries: refuse before sampling
  python3 -c "import matminer" 2> /dev/null || { echo "sweep: no matminer here: carry .whl_eval" >&2; exit 1; }
  setsid nohup python3 $S/benchmarks/atom_csp_sweep.py $2 --targets $W/${D}_asis_test.npz --n ${N:-1000} \
    --steps ${STEPS:-50,200} --churn ${CHURN:-0,10,40} --device cuda --workers ${WORKERS:-10} \
    ${TAG:+--suffix _$TAG} ${SWEEP_ARGS:-} > /tmp/sweep_$G.log 2>&1 < /dev/null &
  sleep 5; tail -3 /tmp/sweep_$G.log ;;
launch)
  install; mkdir -p $R
  python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
  # few CPU threads per run: two runs side by side (TAG) each ran at half the speed of one alone
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} setsid nohup python3 -m crysgen train atom-diffusion \
    --data ${DATA:-$TR} --val $W/${D}_asis_val.npz --out $R/$RUN \
    --config ${CONFIG:-$S/configs/atom_diffusion_${D//_/}.yaml} --max-minutes $2 --quiet \
    ${INIT:+--init $INIT} ${STEPS:+--max-steps $STEPS} $(for x in ${SET:-}; do printf -- '--set %s ' $x; done) \
    > $R/$RUN.log 2>&1 < /dev/null &
  sleep 60; progress; watch $(( $3 - 60 )) ;;
watch) watch $2 ;;
status)  # each TAG's progress (TAGS="a b"), nothing packed: runs side by side whose models would
  # not fit one call's 64 MiB together are packed one call at a time with `watch 1`
  # PACK=1 packs each run's latest exported model (written at every checkpoint) and records as well,
  # so that a machine lost between calls leaves the run's last checkpoint behind (~23 MB a run)
  for t in ${TAGS:-$G}; do echo "== $t"; RUN=atoms_$t progress; [ -n "${PACK:-}" ] && RUN=atoms_$t pack; done ;;
pair)  # two launches side by side, one per GPU: PAIR="TAG:CONFIG TAG:CONFIG" (INIT, STEPS shared)
  install; i=0
  for p in $PAIR; do
    (CUDA_VISIBLE_DEVICES=$i TAG=${p%%:*} CONFIG=${p#*:} bash $0 launch $2 1 > /tmp/launch_${p%%:*}.log 2>&1 &)
    i=$((i + 1))
  done
  sleep 90; wait_for "[c]rysgen train atom-diffusion" $(( $3 - 90 ))
  for p in $PAIR; do TAG=${p%%:*} bash $0 watch 1; done ;;
pair-eval)  # eval_model.py of both PAIR runs at once, one per GPU (names atom_diffusion_TAG)
  i=0
  for p in $PAIR; do
    CUDA_VISIBLE_DEVICES=$i TAG=${p%%:*} bash $0 eval atom_diffusion_${p%%:*} 1 > /dev/null
    i=$((i + 1)); sleep 15  # the two copy the training split in turn
  done
  for p in $PAIR; do bash $0 eval-wait atom_diffusion_${p%%:*}; done ;;
chain)  # PAIR side by side on one GPU (INIT, STEPS shared), then scored; detached, see the header
  install || exit 1
  for p in $PAIR; do  # TAG:CONFIG or TAG:CONFIG@DATA
    c=${p#*:}; data=; [[ $c == *@* ]] && { data=$W/${c#*@}.npz; c=${c%@*}; }
    (TAG=${p%%:*} CONFIG=$S/configs/$c.yaml DATA=$data bash $0 launch $2 1 > $OUT/launch_${p%%:*}.log 2>&1 &)
  done
  sleep 90; wait_for "[c]rysgen train atom-diffusion"
  for p in $PAIR; do TAG=${p%%:*} bash $0 watch 1 > /dev/null; done  # pack: models and records to $OUT
  wait_files $TR $W/${D}_asis_test.npz || exit 1  # the data folder, carried again by a later call
  # scoring needs the evaluation wheels (smact, matminer, chgnet), which a later call carries
  wait_files .whl_eval && install || exit 1
  for p in $PAIR; do  # evaluations first (detached), then the sweeps beside them
    csp_only ${p%%:*} && continue
    TAG=${p%%:*} bash $0 eval atom_diffusion_${p%%:*} 1 > /dev/null; sleep 15
  done
  for p in $PAIR; do
    TAG=${p%%:*} STEPS=50 CHURN=10 WORKERS=4 bash $0 sweep $R/atoms_${p%%:*}/model > /dev/null
    [ -n "${SYM_SWEEP:-}" ] && TAG=${p%%:*}_sym STEPS=50 CHURN=10 WORKERS=4 SWEEP_ARGS="--symmetry-prior $TR" \
      bash $0 sweep $R/atoms_${p%%:*}/model > /dev/null
  done
  wait_for "[a]tom_csp_sweep.py"
  for p in $PAIR; do
    for g in ${p%%:*} ${p%%:*}_sym; do
      cp $S/benchmarks/results/atom_csp_sweep_${D}_$g.json /tmp/sweep_$g.log $OUT/ 2>/dev/null
    done
  done
  for p in $PAIR; do csp_only ${p%%:*} || bash $0 eval-wait atom_diffusion_${p%%:*} > /dev/null; done
  echo "chain done" ;;
denovo)  # MODEL DIR: N samples (seed 0: paired with any other model's N, see `crysgen compare`),
  # packed into $OUT/samples_<DIR's name>.tgz (split at 15 MiB) for `eval_model.py --samples` elsewhere
  install
  python3 -m crysgen sample $2 -n ${N:-1000} ${SAMPLE_ARGS:-} --device cuda --out $3 --quiet
  tail -c 600 $3/summary.json
  ship samples_$(basename $3) -C $(dirname $3) $(basename $3) ;;
evalspeed)
  install; mkdir -p /tmp/evs_result
  setsid nohup bash -c "python3 $S/benchmarks/eval_speed.py $2 -n ${N:-1000} --device cuda --workers 14 \
    --relax-workers ${RELAX_WORKERS:-14} --relax-batch 64 ${COLD:+--cold} --train $TR \
    --reference $W/${D}_asis_test.npz --cache-dir /tmp/evs_cache; cp $S/benchmarks/results/eval_speed.json /tmp/evs_result/" \
    > /tmp/evs.log 2>&1 < /dev/null &
  sleep 5; bash $0 evalspeed-wait $(( $3 - 5 )) ;;
evalspeed-wait)
  wait_for "[e]val_speed.py" $2
  tr '\r' '\n' < /tmp/evs.log | grep -v -i warn | tail -15
  cp /tmp/evs_result/eval_speed.json /tmp/evs.log $OUT/ 2>/dev/null ;;
throughput)  # train_throughput.py: compile modes x batch sizes, 300 steps each (VARIANTS overrides)
  install
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} python3 $S/benchmarks/train_throughput.py --data $TR \
    --dataset $D --config ${CONFIG:-$S/configs/atom_diffusion_${D//_/}.yaml} --steps ${N:-300} \
    ${VARIANTS:---variant compile=false --variant compile=default --variant compile=reduce-overhead \
      --variant compile=false,optim.batch_size=2048 --variant compile=reduce-overhead,optim.batch_size=2048} \
    ${SUFFIX:+--suffix $SUFFIX}
  cp $S/benchmarks/results/train_throughput_atom_$D${SUFFIX:-}.json $OUT/ ;;
fastest)  # the compile setting of the fastest error-free row of a throughput file (SUFFIX): for SET=compile=...
  python3 - $S/benchmarks/results/train_throughput_atom_$D${SUFFIX:-}.json <<'PY'
import json, sys
rows = [r for r in json.load(open(sys.argv[1]))["rows"] if "throughput" in r]
best = max(rows, key=lambda r: r["throughput"]["steady_steps_per_s"]) if rows else {}
print(str(best.get("overrides", {}).get("compile", False)).lower())
PY
  ;;
sample)
  M=$R/$RUN/model
  python3 $S/benchmarks/atom_diffusion.py $M --dataset $D --device cuda --steps $2 --out $A \
    --csp $W/${D}_asis_test.npz --workers 14 ${SAMPLE_CHURN:+--churn $SAMPLE_CHURN}
  cp $S/benchmarks/results/atom_diffusion_$D*.json $OUT/ 2>/dev/null
  tar czf $OUT/atomsamples_$D.tgz -C $W atomsamples_$D/denovo atomsamples_$D/csp/samples.csv atomsamples_$D/csp/cifs ;;
eval)  # detached, so that a slow evaluation (cold caches, a shared GPU) survives into the next call
  install
  T=$(python3 -c "import sys; sys.path.insert(0, '$S/benchmarks'); from eval_sanity import TRAIN; print(TRAIN['$D'])")
  cp $TR $W/$T.npz; cp $W/${D}_asis_test.npz $W/${D}_test.npz
  E=/tmp/eval_$2; rm -rf $E; mkdir -p $E
  setsid nohup bash -c "python3 $S/benchmarks/eval_model.py ${MODEL:-$R/$RUN/model} --name $2 --dataset $D \
    --device cuda --workers 14 --work $W --relax-workers 14 --relax-steps 300 --relax-time-limit 120 --progress \
    ${METRICS:+--metrics $METRICS} ${CACHE:+--cache-dir $CACHE} ${EVAL_ARGS:-} \
    $( [ -d $A/denovo ] && [ -z "${EVAL_ARGS:-}" ] && echo --samples $A/denovo ) \
    && cp $S/benchmarks/results/eval_$2_$D.json $E/ \
    && tar czf $E/eval_report_$2.tgz $W/eval_$2_$D/report/metrics.json $W/eval_$2_$D/report/structures.csv \
       \$( [ -d $W/eval_$2_$D/samples ] && echo $W/eval_$2_$D/samples )" \
    > $E/log 2>&1 < /dev/null &
  sleep 5; bash $0 eval-wait $2 ${3:-100000} ;;
eval-wait)  # NAME [WAIT]: the detached evaluation's progress; its files to $OUT once it is done
  wait_for "[e]val_model.py .*--name $2 " ${3:-100000} || echo "eval $2 still running"
  tr '\r' '\n' < /tmp/eval_$2/log | grep -v -i "warn" | tail -25
  cp /tmp/eval_$2/eval_* $OUT/ 2>/dev/null ;;
esac
ls -la $OUT
