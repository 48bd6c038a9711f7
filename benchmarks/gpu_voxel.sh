#!/usr/bin/env bash
# GPU leases of the voxel issue (Court et al. on perov_5). Run on the device machine from the
# repository root with .whl_train (benchmarks/device_setup.sh wheels) and the perov_5 npz files of
# benchmarks/.work (or WORK) carried:
#   bash benchmarks/gpu_voxel.sh segmenter MINUTES   # install, train the UNet segmenter, pack it
#   bash benchmarks/gpu_voxel.sh vae MINUTES         # train the conditional DFC-VAE, pack it
#   bash benchmarks/gpu_voxel.sh continue MINUTES    # both warm-started from the carried exports, side
#                                                    # by side on the GPU (the VAE's feature loss keeps
#                                                    # the carried segmenter), packed as above
#   bash benchmarks/gpu_voxel.sh bench [ARGS]        # benchmarks/voxel.py on the trained pair
#   CALL_S=4000 OUT=/tmp/vox_out setsid nohup bash benchmarks/gpu_voxel.sh chain SEG_MIN VAE_MIN &
#       # segmenter, then the VAE on it, then bench (the standard prior) and a second generation
#       # from the posterior-matched prior, one after the other, detached (the machine must stay
#       # held: follow with `bash benchmarks/gpu_session.sh collect /tmp/vox_out`)
# The machine may be a fresh one at every call, so each training call packs its exported model
# (and logs) into $OUT as $kind.tar.* pieces of 15 MB; unpacked here under benchmarks/.work/voxel_runs/
# and carried back, they are what the next call uses. CRYSGEN_COMMIT must hold the commit being run
# (the device copy has no .git).
source benchmarks/gpu_env.sh
DATA=$W/perov_5_train_labelled.npz
V=$W/voxel_runs  # carried exports of earlier calls

train() {  # kind minutes [extra args]
  local kind=$1 minutes=$2; shift 2
  local resume=""
  [ -f $R/$kind/checkpoints/last.ckpt ] && resume="--resume"
  python3 -m crysgen train $kind --data $DATA --out $R/$kind --config configs/voxel_${kind}_perov5.yaml \
    --max-minutes $minutes $resume --quiet "$@" 2>&1 | grep -v -E "Warning|warn\(|deprecated" | tee -a $OUT/$kind.log
  cp $R/$kind/train_summary.json $OUT/${kind}_summary.json 2>/dev/null
  ls $R/$kind/logs/*/metrics.csv > /dev/null 2>&1 && cp $(ls $R/$kind/logs/*/metrics.csv | tail -1) $OUT/${kind}_metrics.csv
  # the VAE's segmenter/ copy is left out: it is the segmenter's model, carried beside it
  tar cf - -C $R --exclude checkpoints --exclude vae/model/segmenter $kind | split -b 15M - $OUT/$kind.tar.
}

vae_model() {  # the VAE model directory with its segmenter copy restored
  local d=$V/vae/model
  [ -d $d/segmenter ] || cp -r $V/segmenter/model $d/segmenter
  echo $d
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
    train vae "$2" --segmenter $V/segmenter/model
    ;;
  continue)
    install || exit 1
    R=/tmp/runs_continued
    mkdir -p $R
    train segmenter "$2" --init $V/segmenter/model > /dev/null &
    train vae "$2" --segmenter $V/segmenter/model --init $(vae_model) > /dev/null &
    wait
    tail -n 2 $OUT/segmenter.log $OUT/vae.log
    ;;
  chain)
    mkdir -p $V
    bash "$0" segmenter "$2" && ln -sfn $R/segmenter $V/segmenter || exit 1
    bash "$0" vae "$3" && ln -sfn $R/vae $V/vae || exit 1
    bash "$0" bench
    python3 benchmarks/voxel.py --model $(vae_model) --device cuda --stages generation --prior posterior \
      --samples-out $R/voxel_vae_posterior --out $OUT/voxel_perov_5_posterior.json
    tar czf $OUT/voxel_vae_posterior_samples.tgz -C $R voxel_vae_posterior
    echo "chain done"
    ;;
  bench)
    install || exit 1
    shift
    python3 benchmarks/voxel.py --model $(vae_model) --device cuda --samples-out $R/voxel_vae \
      --out $OUT/voxel_perov_5.json "$@"
    cp benchmarks/results/voxel_perov_5_latent.png $OUT/ 2>/dev/null
    tar czf $OUT/voxel_vae_samples.tgz -C $R voxel_vae
    ;;
esac
