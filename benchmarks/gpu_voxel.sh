#!/usr/bin/env bash
# GPU leases of the voxel issue (Court et al. on perov_5). Run on the device machine from the
# repository root with .whl_min and the perov_5 npz files of benchmarks/.work carried:
#   bash benchmarks/gpu_voxel.sh segmenter MINUTES   # install, train (or resume) the UNet segmenter
#   bash benchmarks/gpu_voxel.sh vae MINUTES         # train (or resume) the conditional DFC-VAE
#   bash benchmarks/gpu_voxel.sh bench [ARGS]        # benchmarks/voxel.py on the trained pair
#   bash benchmarks/gpu_voxel.sh pack                # the exported models into $OUT (15 MB pieces)
# A carried benchmarks/.work/voxel_runs/{segmenter,vae} (a previous lease's export) is used when
# /tmp/runs has none. CRYSGEN_COMMIT must hold the commit being run (the device copy has no .git).
source benchmarks/gpu_env.sh
DATA=$W/perov_5_train_labelled.npz

train() {  # kind minutes [extra args]
  local kind=$1 minutes=$2; shift 2
  local resume=""
  [ -f $R/$kind/checkpoints/last.ckpt ] && resume="--resume"
  python3 -m crysgen train $kind --data $DATA --out $R/$kind --config configs/voxel_${kind}_perov5.yaml \
    --max-minutes $minutes $resume --quiet "$@" 2>&1 | grep -v -E "Warning|warn\(|deprecated" | tee -a $OUT/$kind.log
  cp $R/$kind/train_summary.json $OUT/${kind}_summary.json 2>/dev/null
  ls $R/$kind/logs/*/metrics.csv > /dev/null 2>&1 && cp $(ls $R/$kind/logs/*/metrics.csv | tail -1) $OUT/${kind}_metrics.csv
}

mkdir -p $R $OUT
case "$1" in
  segmenter)
    install || exit 1
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    train segmenter "$2"
    ;;
  vae)
    install || exit 1
    train vae "$2" --segmenter $R/segmenter/model
    ;;
  bench)
    install || exit 1
    shift
    python3 benchmarks/voxel.py --model $R/vae/model --device cuda "$@"
    cp benchmarks/results/voxel_perov_5* $OUT/ 2>/dev/null
    ;;
  pack)  # both models in one tar (the VAE's segmenter/ copy left out: it is the segmenter's model)
    rm -f $OUT/models.tar.*
    tar cf - -C $R --exclude checkpoints --exclude vae/model/segmenter segmenter vae \
      | split -b 15M - $OUT/models.tar.
    ;;
esac
