#!/usr/bin/env bash
# Measurement leases (no training): each job runs detached from the committed code in $T/.snap and
# survives between chained calls; `status` copies every result file written so far to $OUT.
# Call 1 carries .snap .gpuwork8 .whl_train, later calls what their jobs need (the tree carries
# the bundled atom model; the CrysTens model is hidden by device_tree.sh, carry it as .atommodel):
#   T=/tmp/root; mkdir -p $T; cp -r .snap .gpuwork8 .whl_train $T/; cp -r src/crysgen/pretrained/atom_diffusion_mp20 $T/
#   bash $T/.snap/benchmarks/gpu_measure.sh speed      # WGAN-GP step grid (quiet GPU first), profiles
#                                                      # (COMPILE=false,default SUFFIX=_channel_norm: another
#                                                      # grid into its own file)
#   # next call, carry .whl_eval .cgcnn .whl_7net (sevenn: --potential both; the jobs wait for them):
#   cp -r .cgcnn .whl_7net $T/; cp -r .whl_eval $T/.whl_eval.tmp && mv $T/.whl_eval.tmp $T/.whl_eval
#   bash $T/.snap/benchmarks/gpu_measure.sh csp        # generate-relax-rank CSP on 1,000 mp_20 targets
#   bash $T/.snap/benchmarks/gpu_measure.sh relax-engines  # eval_speed: 10k de novo samples, cold (torch engine)
#   # a call that carries .atommodel (bash benchmarks/device_tree.sh model src/crysgen/pretrained/crystens_diffusion_mp20):
#   cp -r .atommodel $T/crystens; bash $T/.snap/benchmarks/gpu_measure.sh crystens-eval $T/crystens
#   (NAME=crystens_bundled_dpm8 EVAL_ARGS="--sampler dpmsolver --steps 8": another sampler setting)
#   bash $T/.snap/benchmarks/gpu_measure.sh gan-speed  # the vanilla GAN's step grid (batch 64) -> _gan.json
#   (a call that carries .gpuwork8 with mp_20_conv_train_partial.npz, from `device_setup.sh data-conv`:)
#   bash $T/.snap/benchmarks/gpu_measure.sh adv-train KIND MINUTES [crysgen train options]
#                                                      # GAN / WGAN-GP training (channels-last, fused Adam,
#                                                      # compiled), detached; its
#                                                      # exported model, logs and curves (adv_KIND.tgz) and
#                                                      # last.ckpt (adv_KIND_ckpt.tgz: WGAN-GP 19 MB, GAN
#                                                      # ~390 MB) are packed in 15 MiB pieces when it stops,
#                                                      # and each `status` call brings back ADV_PIECES (3)
#                                                      # of them, the model's pack first.
#                                                      # A later lease resumes it (`--resume`) from the
#                                                      # pieces carried back into $T/adv_in, ADV_PIECES per
#                                                      # call: `bash benchmarks/device_tree.sh pieces DIR I`
#                                                      # puts the I-th group into .advin (carry it, then
#                                                      # `mkdir -p $T/adv_in; cp .advin/* $T/adv_in/`)
#   bash $T/.snap/benchmarks/gpu_measure.sh adv-snap KIND  # a running training's latest state now, in
#                                                      # this call's $OUT: WGAN-GP its checkpoint (every
#                                                      # 50 iterations, resumable), GAN its records and
#                                                      # exported generator (every 1,000 iterations; not
#                                                      # resumable): run it at the end of every call of
#                                                      # a training lease
#   bash $T/.snap/benchmarks/gpu_measure.sh adv-auto MINUTES  # after gan-speed: the GAN's 100 epochs
#                                                      # (GAN_STEPS, 11,800 on the conventional partial split)
#                                                      # when they fit in MINUTES at its best measured rate
#                                                      # (+15 % for Lightning and data), else the WGAN-GP
#                                                      # (resumable; RESUME=1 continues the one in $T/adv_in)
#   bash $T/.snap/benchmarks/gpu_measure.sh status     # every call: logs, results to $OUT
#   bash $T/.snap/benchmarks/gpu_measure.sh stop NAME  # end a job (its process group only)
# T defaults to /tmp/root; CRYSGEN_COMMIT comes from $T/.snap/COMMIT.
set -u
T=${T:-/tmp/root}
cd "$T/.snap" || exit 1
export CRYSGEN_COMMIT=$(cat "$T/.snap/COMMIT") CRYSGEN_MODELS_DIR=$T/.cgcnn
CALL_S=${CALL_S:-540} source benchmarks/gpu_env.sh  # install, PYTHONPATH, OUT, left
L=/tmp/measure; mkdir -p $L
W=$T/.gpuwork8

detach() {  # NAME COMMAND...: run detached, log in $L/NAME.log, $L/NAME.done when finished;
  # with AFTER=JOB it starts once JOB is done (timings of one job never share the machine)
  local name=$1; shift
  local wait=${AFTER:+"while [ ! -f $L/$AFTER.done ]; do sleep 5; done; "}
  (setsid nohup bash -c "${wait}cd $T/.snap; $*; echo \"exit \$? \$(date +%T)\" > $L/$name.done" \
    > $L/$name.log 2>&1 < /dev/null & echo $! > $L/$name.pid)  # setsid: the pid is the job's process group
  echo "started $name $(date +%T)"
}

eval_wheels() {  # wait until a call has brought .whl_eval (last: .whl_7net is copied before it), then install
  echo "while [ ! -d $T/.whl_eval ]; do sleep 3; done; source benchmarks/gpu_env.sh; install"
}

case "${1:-status}" in
  speed)
    install || exit 1
    detach speed "python3 benchmarks/adversarial_step_speed.py --compile ${COMPILE:-false,default,reduce-overhead} \
      --channels-last true --fused true --micro-batch 0 --steps 20 --warmup 5 --profile --suffix ${SUFFIX:-_compiled}"
    ;;
  csp)
    detach csp "$(eval_wheels); python3 benchmarks/csp_rank.py $T/atom_diffusion_mp20 \
      --targets $W/mp_20_asis_test.npz --symmetry-prior $W/mp_20_asis_train_partial.npz --n 1000 \
      --candidates templates:0,templates:1,plain:0 --also templates:0 --relax-steps 25,200 --score-relaxed \
      --relax-batch 512 --device cuda --workers 12 --suffix _relaxed_answer1000"
    ;;
  crystens-eval)
    ln -sf $W/mp_20_asis_train_partial.npz $W/mp_20_train_partial.npz
    ln -sf $W/mp_20_asis_test.npz $W/mp_20_test.npz
    detach ${NAME:-crystens_bundled} "$(eval_wheels); python3 benchmarks/eval_model.py $2 \
      --name ${NAME:-crystens_bundled} --dataset mp_20 --device cuda --workers 12 --relax-batch 512 --work $W \
      ${EVAL_ARGS:-}"
    ;;
  gan-speed)
    install || exit 1
    detach gan_speed "python3 benchmarks/adversarial_step_speed.py --kind gan --compile ${COMPILE:-false,default,reduce-overhead} \
      --channels-last ${CHANNELS_LAST:-true} --fused true --micro-batch 0 --steps 100 --warmup 10 --profile \
      --suffix ${SUFFIX:-_gan}"
    ;;
  adv-train)  # KIND MINUTES [crysgen train options]
    install || exit 1
    k=$2; run=/tmp/runs/$k; mkdir -p /tmp/runs
    # a carried run, for --resume: the pieces of one pack (adv_KIND.tgz.* with its checkpoint's
    # adv_KIND_ckpt.tgz.*, or adv_KIND_snap.tgz.*)
    sets=$(ls $T/adv_in/ 2>/dev/null | grep "^adv_$k[_.].*tgz.part_" | sed 's/.part_.*//' | sort -u \
      | grep -v "_ckpt.tgz$")
    if [ ! -d $run ] && [ -n "$sets" ]; then
      [ $(echo "$sets" | wc -l) -eq 1 ] || { echo "adv_in holds pieces of several packs: $sets" >&2; exit 1; }
      cat $T/adv_in/$sets.part_* | tar xz -C /tmp/runs || exit 1
      if [ $sets = adv_$k.tgz ] && ls $T/adv_in/adv_${k}_ckpt.tgz.part_* > /dev/null 2>&1; then
        cat $T/adv_in/adv_${k}_ckpt.tgz.part_* | tar xz -C /tmp/runs || exit 1
      fi
    fi
    # packed into $L (status brings the pieces back once): a detached job outlives its call's $OUT.
    # Two packs: the run without its checkpoints (records and model, small: status brings it
    # first) and last.ckpt alone (the GAN's ~390 MB, needed only to --resume)
    pack="cd /tmp/runs && tar czf $L/adv_$k.tgz --exclude='$k/checkpoints' $k \
      && tar czf $L/adv_${k}_ckpt.tgz $k/checkpoints/last.ckpt && cd $L \
      && for f in adv_$k.tgz adv_${k}_ckpt.tgz; do split -b 15m \$f \$f.part_ && rm \$f; done"
    # a resumed run keeps its saved config (crysgen refuses --set with --resume); a new one
    # checkpoints often enough for adv-snap (WGAN-GP: every 50 iterations, GAN: every 1,000; ~2 min each
    # on an H200)
    # both compiled (the GAN's iteration: 0.076 s vs 0.111 s eager on an H200, adversarial_step_speed_gan.json)
    case $k in wgan) every=50 ;; *) every=1000 ;; esac
    compile=default
    set_=" --set optim.compile=${ADV_COMPILE:-$compile} --set optim.channels_last=true --set optim.fused=true"
    set_+=" --set optim.checkpoint_every=${ADV_CKPT_EVERY:-$every}"
    [[ " ${*:4} " == *" --resume "* ]] && set_=
    detach train_$k "python3 -m crysgen train $k --data $W/mp_20_conv_train_partial.npz --out $run \
      --max-minutes $3 --quiet$set_ ${*:4}; $pack"
    ;;
  adv-snap)  # KIND: a running training's latest state, now, into this call's $OUT (15 MiB pieces),
    # so that a machine lost mid-lease loses only what came after it. WGAN-GP: last.ckpt with the
    # records (19 MB; `--resume` continues from it). GAN: the records and model/ (the generator as
    # exported at the last checkpoint, ~21 MB fp16) without checkpoints: its ~390 MB last.ckpt
    # does not fit a call, so a lost GAN lease keeps a model to score but cannot be resumed
    k=${2:-wgan}
    case $k in
      wgan) [ -f /tmp/runs/$k/checkpoints/last.ckpt ] || { echo "no last.ckpt yet"; exit 0; }
            skip="--exclude=$k/checkpoints/step* --exclude=$k/model" ;;
      gan) [ -f /tmp/runs/$k/model/config.json ] || { echo "no exported model yet"; exit 0; }
           skip="--exclude=$k/checkpoints" ;;
      *) echo "adv-snap: gan or wgan" >&2; exit 1 ;;
    esac
    # a checkpoint written while tar reads would tear the pack: tar again if one was
    written() { stat -c %Y /tmp/runs/$k/model/* /tmp/runs/$k/checkpoints/last.ckpt 2>/dev/null; }
    for _ in 1 2 3; do
      before=$(written); tar czf /tmp/adv_snap.tgz -C /tmp/runs $skip $k
      [ "$before" = "$(written)" ] && break
      sleep 5
    done
    split -b 15m /tmp/adv_snap.tgz "$OUT/adv_${k}_snap.tgz.part_" && rm /tmp/adv_snap.tgz
    grep -o '"step": *[0-9]*' /tmp/runs/$k/model/config.json | tail -1
    tail -1 /tmp/runs/$k/logs/*/metrics.csv
    ;;
  adv-auto)  # MINUTES
    while [ ! -f $L/gan_speed.done ]; do sleep 5; done
    read -r mode need < <(python3 - benchmarks/results/adversarial_step_speed_gan.json ${GAN_STEPS:-11800} <<'PY'
import json, sys
rows = [r for r in json.load(open(sys.argv[1]))["rows"] if "seconds_per_iteration" in r]
best = min(rows, key=lambda r: r["seconds_per_iteration"])
mode = best["options"]["compile"]
print("false" if mode is False else mode, round(int(sys.argv[2]) * best["seconds_per_iteration"] * 1.15 / 60, 1))
PY
)
    echo "GAN's 100 epochs: ~$need min at its best rate (compile: $mode); $2 min left for training"
    if python3 -c "import sys; sys.exit(not $need <= $2)"; then
      ADV_COMPILE=$mode bash "$0" adv-train gan $2 --max-steps ${GAN_STEPS:-11800}
    else
      bash "$0" adv-train wgan $2 ${RESUME:+--resume}
    fi
    ;;
  relax-engines)  # 10,000 de novo samples of the bundled atom model, evaluated cold with the torch
    # engine (the CDVAE protocol's size; the 1,000-sample cold row and the CPU engine comparison are
    # in eval_speed.json and relax_engines_cpu.json already)
    detach engines "$(eval_wheels); set -x; python3 -m crysgen sample $T/atom_diffusion_mp20 -n 10000 \
      --device cuda --out /tmp/denovo10k --quiet; \
      python3 benchmarks/eval_speed.py /tmp/denovo10k -n 10000 --device cuda --workers 14 \
        --relax-engine torch --relax-batch 512 --cold --train $W/mp_20_asis_train_partial.npz \
        --reference $W/mp_20_asis_test.npz --cache-dir /tmp/evs_cache10k --models-dir $T/.cgcnn"
    ;;
  stop)  # stop NAME: end job NAME and everything it started (its process group), then mark it done,
    # so AFTER=NAME jobs go on. Never `pkill -f PATTERN`: a pattern also matches the calling shell and
    # every waiting job whose command line names the same file (a lease lost its 10k run that way).
    kill -- -"$(cat $L/$2.pid)" 2>/dev/null; sleep 2; kill -9 -- -"$(cat $L/$2.pid)" 2>/dev/null
    echo "stopped $(date +%T)" > $L/$2.done; echo "stopped $2"
    ;;
  status)
    for f in $L/*.log; do [ -f "$f" ] && { echo "== $f"; tail -c 1500 "$f"; echo; }; done
    ls $L/*.done 2>/dev/null
    n=0  # a finished training's pieces, each brought back once, ADV_PIECES per call (64 MiB a call)
    for f in $(ls $L/adv_*.tgz.part_* 2>/dev/null | grep -v _ckpt.tgz) $(ls $L/adv_*_ckpt.tgz.part_* 2>/dev/null); do
      [[ $f == *.sent ]] || [ -f "$f.sent" ] || [ ! -f "$f" ] && continue
      if [ $n -lt ${ADV_PIECES:-3} ]; then cp "$f" "$OUT/" && touch "$f.sent"; n=$((n + 1))
      else echo "to bring back in a later status call: $(basename "$f")"; fi
    done
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
    find benchmarks/results -newer COMMIT -type f \( -name "*.json" -o -name "*.txt" -o -name "*.png" \) \
      ! -path "*/profiles/*" -exec cp --parents {} "$OUT/" \; 2>/dev/null
    # profiles flat in $OUT/prof: results/profiles/ is one folder too deep to come back
    mkdir -p "$OUT/prof"; find benchmarks/results/profiles -newer COMMIT -type f -exec cp {} "$OUT/prof/" \; 2>/dev/null
    (cd "$OUT" && find . -type f | head -40)
    ;;
esac
