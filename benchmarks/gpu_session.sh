#!/usr/bin/env bash
# One GPU lease of the diffusion issue: five concurrent training runs (mp_20 single stage, the mp_20
# cascade's two stages, carbon_24, perov_5), then their benchmarks. Run on the device machine from
# the repository root, with .whl_min and benchmarks/.work carried:
#   bash benchmarks/gpu_session.sh launch MINUTES   # install, start the runs detached, watch ~9 min
#   bash benchmarks/gpu_session.sh watch SECONDS    # watch; copy the mp_20 model to $OUT
#   bash benchmarks/gpu_session.sh finish           # wait for the runs, export, benchmark, pack $OUT
# A second lease warm-starts one run alone from a model directory brought back by the first:
#   bash benchmarks/gpu_session.sh warm NAME CONFIG TRAIN VAL INIT_MODEL_DIR MINUTES
#   bash benchmarks/gpu_session.sh watch SECONDS NAME
#   bash benchmarks/gpu_session.sh finish-one NAME BENCH_NAME REFERENCE
# One run alone on the GPU (the bundled default model): start it, watch it (each watch copies its
# model directory to $OUT), then benchmark it; a later lease warm-starts it with --init:
#   bash benchmarks/gpu_session.sh one NAME CONFIG TRAIN VAL MINUTES [--init MODEL_DIR]
#   bash benchmarks/gpu_session.sh watch SECONDS NAME
#   bash benchmarks/gpu_session.sh finish-one NAME BENCH_NAME REFERENCE [SYMPREC]
# Issue 17 ablation (same 26.6 M UNet and optimiser, concurrent on one GPU for the same minutes).
# Data in WORK (default benchmarks/.work; `bash benchmarks/device_setup.sh data mp_20` and
# `... data-conv mp_20` make them in .gpuwork): mp_20_conv_{train_partial,val}.npz (crysgen data
# prepare defaults: conventional cells, <= 52 sites) for the S = 52 row, mp_20_asis_{train_partial,
# val,test}.npz (--cell as-is --max-sites 20) for the others, and the CSP targets
# mp_20_{asis,conv}_test_csp1k.npz (the seeded 1,000 of atom_csp_sweep.py, one cell each). Run from
# the committed code (cd .snap) with WORK and CRYSGEN_MODELS_DIR (.cgcnn) absolute paths:
#   bash benchmarks/gpu_session.sh ablation MINUTES WAIT   # start the four rows detached, watch WAIT s
#       (ABL_SET='unet.block_out_channels=[32,64,128,128]': one `crysgen train --set` for every row, e.g.
#        the 6.7 M UNet, which trains ~4x faster than the configs' 26.6 M and comes back in 13 MB)
#       (ABL_GPUS=0,1 deals the rows over two GPUs, two each, so that each row gets half a GPU;
#        default 0: all four on one GPU, the other one free for evaluations)
#   bash benchmarks/gpu_session.sh ablation-watch WAIT     # watch the rows
#   bash benchmarks/gpu_session.sh ablation-finish WAIT    # when all rows stopped (equal minutes, so
#       each at its own step): score the four at once, detached and spread over the GPUs (diffusion.py's Table 1/2,
#       eval_model.py's suite without stability, CSP on the 1,000 targets); results -> /tmp/abl_out
#       (brought back as $OUT/abl_results.tar)
#   bash benchmarks/gpu_session.sh ablation-wait WAIT      # follow the scoring; copies what is done to $OUT
# CrysTens CSP (one sample per test composition, inpainted and decoded as given):
#   bash benchmarks/gpu_session.sh csp NAME MODEL_DIR TARGETS [STEPS] [SAMPLER]
#     -> benchmarks/results/csp_NAME_mp_20.json (+ .targets.csv), copied to $OUT
# One run trained and then scored as an ablation row, as one detached chain that outlives the call
# (CALL_S large, e.g. 4000, so that no wait inside ends by the call's clock; follow it with collect):
#   CALL_S=4000 setsid nohup bash benchmarks/gpu_session.sh one-scored NAME CONFIG TRAIN VAL MINUTES [options] &
#   bash benchmarks/gpu_session.sh collect DIR...  # new files under DIRs -> $OUT/collect_*.tar.*
# CRYSGEN_COMMIT must hold the commit being run (the device copy has no .git).
source benchmarks/gpu_env.sh

train() {  # name config train val minutes [more options]
  mkdir -p $R
  setsid nohup python3 -m crysgen train diffusion --data $W/$3.npz --val $W/$4.npz --out $R/$1 \
    --config configs/$2.yaml --max-minutes $5 --quiet "${@:6}" > $R/$1.log 2>&1 < /dev/null &
}

wait_runs() {  # true when no training is left (false when the call's clock ran out first)
  wait_for "[c]rysgen train diffusion"; local done=$?
  progress; return $done
}

progress() {
  nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv,noheader
  for d in $R/*/; do
    n=$(basename $d)
    m=$(ls $d/logs/*/metrics.csv 2>/dev/null | tail -1)
    echo "$n: $( [ -n "$m" ] && tail -1 $m ) | ckpts: $(ls $d/checkpoints 2>/dev/null | tail -2 | tr '\n' ' ')"
    tail -2 $R/$n.log | grep -i -E "error|traceback" && tail -20 $R/$n.log
  done
}

watch() {  # seconds (ended early by the call's clock): progress every minute
  local end=$(( $(date +%s) + $1 )) next=$((SECONDS + 60))
  [ $end -gt $CALL_END ] && end=$CALL_END
  while [ "$(date +%s)" -lt $end ] && pgrep -f "[c]rysgen train diffusion" > /dev/null; do
    sleep 5
    [ $SECONDS -ge $next ] && { echo "--- t+${SECONDS}s"; progress; next=$((SECONDS + 60)); }
  done
  pgrep -f "[c]rysgen train diffusion" > /dev/null || echo "no training process left"
  progress
}

csp() {  # name model_dir targets [steps] [sampler]
  python3 -m crysgen sample $2 --compositions $W/$3.npz --steps ${4:-50} --sampler ${5:-ddim} \
    --device cuda --workers 14 --out $W/csp_$1 --quiet
  python3 benchmarks/csp.py $W/csp_$1 --targets $W/$3.npz --name $1 --dataset mp_20 --workers 14
  cp benchmarks/results/csp_$1_mp_20.* $OUT/
}

ROWS="abl_s52_ddpm abl_s32_ddpm abl_s32_edm abl_s32_edm_regions"

case "$1" in
  launch)
    install || exit 1
    nvidia-smi
    train mp20_single diffusion_mp20_small mp_20_train_partial mp_20_val "$2"
    train mp20_base cascade_mp20_base mp_20_train_partial mp_20_val "$2"
    train mp20_sr cascade_mp20_sr mp_20_train_partial mp_20_val "$2"
    train carbon24 diffusion_carbon24 carbon_24_train_poscar carbon_24_val "$2"
    train perov5 diffusion_perov5 perov_5_train_poscar perov_5_val "$2"
    watch 510
    ;;
  one)
    install || exit 1
    nvidia-smi
    train "$2" "$3" "$4" "$5" "$6" "${@:7}"
    watch 500
    [ -f $R/$2/model/weights.safetensors ] && tar cf $OUT/${2}_model.tar -C $R/$2 model
    ;;
  warm)
    install || exit 1
    nvidia-smi
    train "$2" "$3" "$4" "$5" "$7" --init "$6"
    watch 510
    ;;
  watch)
    watch "$2"
    n=${3:-mp20_single}
    [ -f $R/$n/model/weights.safetensors ] && tar cf $OUT/${n}_model.tar -C $R/$n model
    ;;
  finish-one)
    install || exit 1
    wait_runs || { echo "still training; call again"; exit 0; }
    python3 benchmarks/diffusion.py --device cuda --ddpm-n 50 $R/$2/model --reference $W/$4.npz \
      --name "$3" --run $R/$2 ${5:+--symprec $5}
    tar cf $OUT/results.tar benchmarks/results
    tar cf $OUT/logs.tar --exclude='*.ckpt' --exclude='*.safetensors' -C $R .
    tar cf $OUT/$2_model.tar -C $R/$2 model
    ;;
  ablation)
    install || exit 1
    nvidia-smi
    set_row=(); [ -n "${ABL_SET:-}" ] && set_row=(--set "$ABL_SET")
    IFS=, read -ra gpus <<< "${ABL_GPUS:-0}"; g=0  # rows dealt round-robin over these GPUs
    for n in s52_ddpm s32_ddpm s32_edm s32_edm_regions; do
      case $n in s52*) T=mp_20_conv ;; *) T=mp_20_asis ;; esac
      CUDA_VISIBLE_DEVICES=${gpus[$((g % ${#gpus[@]}))]} \
        train abl_$n diffusion_mp20_$n ${T}_train_partial ${T}_val "$2" "${set_row[@]}"
      g=$((g + 1))
    done
    watch "$3"
    ;;
  ablation-watch)
    watch "$2"
    ;;
  ablation-finish)
    install || exit 1
    wait_runs || { echo "rows still training; call ablation-finish again"; exit 0; }
    mkdir -p /tmp/abl_out
    g=0; ngpu=$(nvidia-smi -L | wc -l)  # the rows' scoring spread over the machine's GPUs
    for n in $ROWS; do
      CUDA_VISIBLE_DEVICES=$((g % ngpu)) setsid nohup bash "$0" ablation-row $n > /tmp/abl_out/$n.log 2>&1 < /dev/null &
      g=$((g + 1)); sleep 20  # the rows copy the training split in turn
    done
    bash "$0" ablation-wait "$2"
    ;;
  one-scored)
    install || exit 1
    train "$2" "$3" "$4" "$5" "$6" "${@:7}"
    sleep 30; wait_runs  # (CALL_S large: no end by the call's clock)
    mkdir -p /tmp/abl_out; cp $R/$2.log /tmp/abl_out/
    # .snap carried again by a later call is a new folder at the same path: enter it again
    cd "$HERE" || exit 1
    bash "$HERE/benchmarks/gpu_session.sh" ablation-row "$2" > /tmp/abl_out/$2.score.log 2>&1
    tar cf /tmp/abl_out/$2_model.tar -C $R $2/model
    tar cf /tmp/abl_out/$2_logs.tar --exclude='*.ckpt' --exclude='*.safetensors' -C $R $2
    ;;
  collect)
    shift; collect "$@"
    ;;
  ablation-row)  # one row's scores, into /tmp/abl_out (detached by ablation-finish)
    n=$2; M=$R/$n/model  # exported at the wall-clock stop: every row had the same minutes
    case $n in abl_s52*) T=mp_20_conv ;; *) T=mp_20_asis ;; esac
    wait_files $W/${T}_test.npz $W/${T}_test_csp1k.npz $W/mp_20_train_partial.npz $W/mp_20_test.npz || exit 1
    python3 benchmarks/diffusion.py --device cuda --ddpm-n 0 $M --reference $W/${T}_test.npz \
      --name ${n}_mp_20 --run $R/$n && cp benchmarks/results/diffusion_${n}_mp_20* /tmp/abl_out/
    python3 benchmarks/eval_model.py $M --name $n --dataset mp_20 \
      --device cuda --workers 4 --work $W --cache-dir /tmp/evs_cache \
      --metrics validity,distributions,coverage,novelty,properties 2>&1 | tr '\r' '\n' | grep -v -i warn | tail -30
    cp benchmarks/results/eval_${n}_mp_20.json /tmp/abl_out/
    # its per-structure rows too, so that a later rule (a new hull, a new validity) can rescore it here
    cp $W/eval_${n}_mp_20/report/structures.csv /tmp/abl_out/eval_${n}_mp_20_structures.csv
    python3 -m crysgen sample $M --compositions $W/${T}_test_csp1k.npz --steps 50 --device cuda \
      --workers 4 --out /tmp/csp_$n --quiet
    python3 benchmarks/csp.py /tmp/csp_$n --targets $W/${T}_test_csp1k.npz --name $n --dataset mp_20 --workers 4
    cp benchmarks/results/csp_${n}_mp_20.* /tmp/abl_out/
    echo "row $n done"
    ;;
  ablation-wait)
    wait_for "[a]blation-row" "$2"
    for n in $ROWS; do echo "== $n"; tail -6 /tmp/abl_out/$n.log; done
    tar cf $OUT/abl_results.tar -C /tmp/abl_out .  # one file: a call brings back at most 8
    tar cf $OUT/abl_logs.tar --exclude='*.ckpt' --exclude='*.safetensors' -C $R $ROWS $(cd $R && ls abl_*.log)
    for n in $ROWS; do  # one tar per row (~13 MB each in fp16): a call brings back files of <= 16 MiB
      [ -d $R/$n/model ] && tar cf $OUT/${n}_model.tar -C $R $n/model
    done
    ;;
  csp)
    install || exit 1
    csp "$2" "$3" "$4" "${5:-50}" "${6:-ddim}"
    ;;
  finish)
    install || exit 1
    wait_runs || { echo "still training; call again"; exit 0; }
    # the step budget all three mp_20 runs reached: single stage vs cascade compared there
    S=$(for n in mp20_single mp20_base mp20_sr; do
          ls $R/$n/checkpoints | sed -n 's/^step0*\([0-9]*\)\.ckpt$/\1/p' | sort -n | tail -1
        done | sort -n | head -1)
    echo "common step budget: $S"
    M=/tmp/models
    mkdir -p $M
    for n in mp20_single mp20_base mp20_sr; do
      python3 -m crysgen model export $R/$n --step "$S" --out $M/${n}_at_step
    done
    python3 -m crysgen model cascade $M/mp20_base_at_step $M/mp20_sr_at_step --out $M/mp20_cascade_at_step
    B="python3 benchmarks/diffusion.py --device cuda --ddpm-n 50"
    $B $R/mp20_single/model --reference $W/mp_20_test.npz --name mp_20 --run $R/mp20_single
    $B $M/mp20_single_at_step --reference $W/mp_20_test.npz --name mp_20_stage_single --run $R/mp20_single
    $B $M/mp20_cascade_at_step --reference $W/mp_20_test.npz --name mp_20_stage_cascade \
      --run $R/mp20_base --run $R/mp20_sr
    $B $R/carbon24/model --reference $W/carbon_24_test.npz --name carbon_24 --run $R/carbon24
    $B $R/perov5/model --reference $W/perov_5_test.npz --name perov_5 --run $R/perov5
    tar cf $OUT/results.tar benchmarks/results
    tar cf $OUT/logs.tar --exclude='*.ckpt' --exclude='*.safetensors' -C $R .
    tar cf $OUT/mp20_single_model.tar -C $R/mp20_single model
    tar cf $OUT/mp20_cascade_base.tar -C $M mp20_cascade_at_step/base mp20_cascade_at_step/config.json mp20_cascade_at_step/scaling.json
    tar cf $OUT/mp20_cascade_sr.tar -C $M mp20_cascade_at_step/sr
    tar cf $OUT/carbon24_model.tar -C $R/carbon24 model
    tar cf $OUT/perov5_model.tar -C $R/perov5 model
    ls -la $OUT
    ;;
esac
