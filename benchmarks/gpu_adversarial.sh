#!/usr/bin/env bash
# One GPU lease of the adversarial issue: the GAN and the WGAN-GP trained side by side on one GPU on
# mp_20 (the same data as the bundled diffusion model), then the three-way comparison. Run on the
# device machine from the repository root, with .whl_train (benchmarks/device_setup.sh wheels) and benchmarks/.work (or WORK) carried:
#   bash benchmarks/gpu_adversarial.sh launch MINUTES GAN_ITERS WGAN_ITERS  # install, start, watch
#   bash benchmarks/gpu_adversarial.sh finish                               # wait, compare, pack $OUT
# CRYSGEN_COMMIT must hold the commit being run (the device copy has no .git).
source benchmarks/gpu_env.sh

train() {  # kind minutes iterations
  mkdir -p $R
  setsid nohup python3 -m crysgen train "$1" --data $W/mp_20_train_partial.npz --out $R/$1 \
    --max-minutes "$2" --max-steps "$3" --quiet > $R/$1.log 2>&1 < /dev/null &
}

progress() {
  nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv,noheader
  for k in gan wgan; do
    m=$(ls $R/$k/logs/*/metrics.csv 2>/dev/null | tail -1)
    echo "$k: $( [ -n "$m" ] && tail -1 $m ) | $(ls $R/$k/checkpoints 2>/dev/null | tail -2 | tr '\n' ' ')"
    grep -i -E "error|traceback" $R/$k.log > /dev/null && tail -20 $R/$k.log
  done
}

pack() {  # $OUT takes files of up to 16 MiB: the runs (without checkpoints) in 15 MB pieces
  rm -f $OUT/runs.tar.*
  tar cf - -C $R --exclude checkpoints gan wgan gan.log wgan.log | split -b 15M - $OUT/runs.tar.
}

case "$1" in
  launch)
    install || exit 1
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    train gan "$2" "$3"
    train wgan "$2" "$4"
    wait_for "python3 -m [c]rysgen train" "${5:-480}"; progress
    pack
    ;;
  finish)
    wait_for "python3 -m [c]rysgen train" || { progress; echo "still training; call again"; exit 0; }
    progress
    tail -3 $R/gan.log $R/wgan.log
    cd benchmarks && python3 compare_models.py --dataset mp_20 --reference .work/mp_20_test.npz \
      --model gan=$R/gan --model wgan=$R/wgan \
      --model diffusion=../src/crysgen/pretrained/crystens_diffusion_mp20 \
      --budget-from diffusion=results/diffusion_mp_20_default.json && cd ..
    tar cf $OUT/compare.tar benchmarks/results/compare_models_mp_20*
    pack
    ;;
esac
