#!/usr/bin/env bash
# Several GPU jobs in one device call, in order, each with the time the call has left, everything back as ONE file
# ($OUT/chain.tgz: the device returns at most 8 files). From the repository root on the device machine:
#   carry [".gpu/kit"]   (site.tar.xz: an unpacked-able site-packages of the pinned wheels, fla-core==0.6.0 among
#                         them for Mamba-2's ssd 'fla' (a pure-Python wheel); fashion-mnist/: the data)
#   STEPS="tests segment publish:studies/text_conditioning.yaml publish:studies/scan_ablation.yaml" \
#     ZIGMA_HARNESS_GIT_SHA=<commit> LIMIT=570 bash benchmarks/gpu/chain.sh
# Steps:
#   tests              the GPU tests of the CUDA-graph switches, the packed segment layout and Mamba-2's ssd 'fla'
#                      (-m gpu; TESTS_S, 240; TESTS: other test files instead, e.g. without fla's minutes of autotuning)
#   segment            benchmarks/segment_layout.py: batch-folded vs packed Mamba-1 segments (BENCH_S, 180)
#   publish:STUDY      benchmarks/gpu/publish_study.sh for STUDY (continues a carried runs/ or committed stores/)
#   throughput         benchmarks/gpu/throughput_run.sh (VARIANTS, TRIALS, PROBE as there)
#   mixer2             benchmarks/gpu_mixer2.py checks (no timing), first with Triton's default fp32 dot precision, then
#                      with TRITON_F32_DEFAULT=ieee, side by side: does TF32 explain the fp32 parity miss? (MIXER2_S, 420)
#   flaparity          benchmarks/gpu/fla_parity.py: Mamba-2's SSD by mamba-ssm and by fla against the fp64 reference,
#                      Triton's default fp32 dots, then TRITON_F32_DEFAULT=ieee (FLA_S, 150 each)
#   profile[:SCAN]     benchmarks/profile_step.py: one ZigMa-B step at 4K tokens, mamba1, mamba2 and mamba2-fla
#                      (PROFILE_MIXERS; PROFILE_SCAN: zigzag-8, sweep-1 or sweep-2 (two directions a layer);
#                      PROFILE_S, 300)
#   kernels            benchmarks/scan_kernels.py: Mamba-1's selective scan against its state size, with a memory probe,
#                      and Mamba-2's SSD against chunk size and state size, timed alone at ZigMa-B's shapes (KERNELS_S, 240)
#   directions         benchmarks/directions.py: a two-direction layer at size B, Mamba-1 and Mamba-2, each direction
#                      through the fused layer kernel (now) against the per-direction path (before), side by side
#                      (DIRECTIONS_MIXERS, default mamba1,mamba2; DIRECTIONS_S, 150)
#   mixbench           issue 18's bench (benchmarks/gpu/device_mixer2.sh PART=bench): ZigMa-B mamba1 / mamba2 (its SSD
#                      by mamba-ssm and by fla) beside DiT-B at 1K / 4K / 16K tokens, eager and compiled, for the time left
#   multigpu           issue 22, on 2+ GPUs: benchmarks/gpu/multi_gpu.yaml (one ZigMa-S trial on 1 and on 2 GPUs) with
#                      --gpus ${GPUS-all}, then benchmarks/gpu/multi_gpu_compare.py (GPUS= and PRESET=cpu: on a CPU)
# KIT (default .gpu/kit/site.tar.xz) is unpacked to /tmp/k once per machine; DATA defaults to .gpu/kit/fashion-mnist.
# Triton's autotuning results are cached on disk (TRITON_CACHE_AUTOTUNING=1; Mamba-2's SSD kernels autotune for minutes
# on a fresh machine) and come back in chain.tgz under triton/<precision>/; carried back as TRITON_SEED (default
# .gpu/kit/triton, else the committed benchmarks/gpu/triton-seed: Mamba-2's SSD kernels at size B, one H100, torch 2.11
# / Triton 3.6.0; the cache keys hold the Triton version and the kernel source, so a seed that does not match is
# unused, not wrong) they seed the caches, so a later call compiles only the chosen configurations instead of timing all.
# STEPS_H100 / STEPS_H200: the steps when the card is that one (e.g. a study that must stay on the card it began on),
# else STEPS; the card's name is in $OUT's chain.tgz (card.txt).
# A step starts only with at least MIN_S (default 60) seconds left; the tarball is written even if the call is cut.
set -uo pipefail
LIMIT=${LIMIT:-570}; MIN_S=${MIN_S:-60}
OUT=${OUT:?OUT: the folder whose files come back}
T0=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
KIT=${KIT:-.gpu/kit/site.tar.xz}
if [ -z "${SITE:-}" ] && [ -f "$KIT" ]; then
  [ -d /tmp/k/site312 ] || { mkdir -p /tmp/k && tar xJf "$KIT" -C /tmp/k; }
  export SITE=/tmp/k/site312
fi
export DATA=${DATA:-.gpu/kit/fashion-mnist} PYTHONUNBUFFERED=1
export TRITON_CACHE_AUTOTUNING=1 TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-default}
TRITON_SEED=${TRITON_SEED:-.gpu/kit/triton}
[ -d "$TRITON_SEED" ] || TRITON_SEED=benchmarks/gpu/triton-seed   # committed: a 2026-12-05 H100 mixbench's results
for prec in default ieee; do
  [ -d "$TRITON_SEED/$prec" ] && mkdir -p "/tmp/triton-$prec" && cp -rn "$TRITON_SEED/$prec/." "/tmp/triton-$prec/"
done
[ -n "${SITE:-}" ] && export PYTHONPATH=$SITE:$PWD
WORK=$(mktemp -d)
pack() {
  for prec in default ieee; do   # only the autotuning results (a few KB), not the compiled kernels
    [ -d "/tmp/triton-$prec" ] || continue; mkdir -p "$WORK/triton/$prec"
    (cd "/tmp/triton-$prec" && find . -name '*.autotune.json' | tar cf - -T -) | tar xf - -C "$WORK/triton/$prec"
  done
  tar czf "$OUT/chain.tgz" -C "$WORK" . 2>/dev/null
}
trap pack EXIT
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "card: ${CARD:-none}" | tee "$WORK/card.txt"
case "$CARD" in
  *H200*) STEPS=${STEPS_H200:-${STEPS:-}} ;;
  *H100*) STEPS=${STEPS_H100:-${STEPS:-}} ;;
esac
i=0
for step in ${STEPS:?STEPS: e.g. "tests segment publish:studies/scan_ablation.yaml"}; do
  i=$((i + 1)); name=$(echo "$step" | tr -c 'A-Za-z0-9_.\n-' '_'); dir="$WORK/$i-$name"; mkdir -p "$dir"
  if [ "$(left)" -lt "$MIN_S" ]; then echo "$step: not started ($(left) s left)" | tee "$dir/skipped.txt"; continue; fi
  echo "== $step ($(left) s left)"
  case "$step" in
    tests)
      timeout "${TESTS_S:-240}" python3 -m pytest -v -m gpu -p no:cacheprovider ${TESTS:-tests/harness/test_cuda_graph.py \
        tests/harness/test_speedups.py tests/harness/test_text_step.py tests/zigma/test_mixer_segments.py \
        tests/zigma/test_mixer2_fla.py} \
        > "$dir/gpu_tests.txt" 2>&1
      echo "tests exit $?"; tail -3 "$dir/gpu_tests.txt" ;;
    segment)
      timeout "${BENCH_S:-180}" python3 -m benchmarks.segment_layout --out "$dir/segment_layout.json" \
        > "$dir/segment_layout.md" 2>&1
      echo "segment exit $?"; tail -15 "$dir/segment_layout.md" ;;
    publish:*)
      OUT=$dir LIMIT=$(( $(left) - 10 )) STUDY=${step#publish:} bash benchmarks/gpu/publish_study.sh \
        > "$dir/console.log" 2>&1
      echo "publish exit $?"; tail -3 "$dir/console.log" ;;
    throughput)
      OUT=$dir LIMIT=$(( $(left) - 10 )) bash benchmarks/gpu/throughput_run.sh > "$dir/console.log" 2>&1
      echo "throughput exit $?"; tail -3 "$dir/console.log" ;;
    mixer2)
      # a Triton cache per precision: the setting is read when a kernel compiles
      for prec in default ieee; do
        [ "$(left)" -lt "$MIN_S" ] && { echo "mixer2 $prec: not started" | tee "$dir/skipped-$prec.txt"; continue; }
        budget=$(( $(left) - 10 )); [ "$prec" = default ] && budget=$(( budget / 2 ))
        if [ "$prec" = ieee ]; then export TRITON_F32_DEFAULT=ieee; else unset TRITON_F32_DEFAULT; fi
        TRITON_CACHE_DIR=/tmp/triton-$prec timeout "$(( budget < ${MIXER2_S:-420} ? budget : ${MIXER2_S:-420} ))" \
          python3 -m benchmarks.gpu_mixer2 --no-bench --out "$dir/$prec" > "$dir/$prec.log" 2>&1
        echo "mixer2 $prec exit $?"; unset TRITON_F32_DEFAULT
      done ;;
    flaparity)
      # Mamba-2's two fused SSD kernels against the fp64 reference, with Triton's default (TF32) and ieee fp32 dots
      for prec in default ieee; do
        [ "$(left)" -lt "$MIN_S" ] && { echo "flaparity $prec: not started" | tee "$dir/skipped-$prec.txt"; continue; }
        if [ "$prec" = ieee ]; then export TRITON_F32_DEFAULT=ieee; else unset TRITON_F32_DEFAULT; fi
        TRITON_CACHE_DIR=/tmp/triton-$prec timeout "${FLA_S:-150}" python3 -m benchmarks.gpu.fla_parity \
          --out "$dir/$prec" > "$dir/$prec.log" 2>&1
        echo "flaparity $prec exit $?"; unset TRITON_F32_DEFAULT; grep '^|' "$dir/$prec/fla_parity.md" 2>/dev/null
      done ;;
    profile|profile:*)
      scan=${step#profile}; scan=${scan#:}
      TRITON_CACHE_DIR=/tmp/triton-default timeout "${PROFILE_S:-300}" \
        python3 -m benchmarks.profile_step --size B --tokens 4096 --batch-tokens 65536 \
        --mixers "${PROFILE_MIXERS:-mamba1,mamba2,mamba2-fla}" --scan "${scan:-${PROFILE_SCAN:-zigzag-8}}" \
        --out "$dir" > "$dir/profile.log" 2>&1
      echo "profile exit $?"; tail -14 "$dir/profile.log" ;;
    kernels)
      timeout "${KERNELS_S:-240}" python3 -m benchmarks.scan_kernels --out "$dir" > "$dir/scan_kernels.log" 2>&1
      echo "kernels exit $?"; tail -30 "$dir/scan_kernels.log" ;;
    directions)
      timeout "${DIRECTIONS_S:-150}" python3 -m benchmarks.directions --mixers "${DIRECTIONS_MIXERS:-mamba1,mamba2}" \
        --out "$dir" > "$dir/directions.log" 2>&1
      echo "directions exit $?"; tail -8 "$dir/directions.log" ;;
    mixbench)
      OUT=$dir PART=bench LIMIT=$(( $(left) - 10 )) bash benchmarks/gpu/device_mixer2.sh > "$dir/console.log" 2>&1
      echo "mixbench exit $?"; tail -12 "$dir/console.log" ;;
    multigpu)
      (. benchmarks/gpu/common.sh && stage_data) || echo "no Fashion-MNIST staged from $DATA"
      name=multi_gpu${PRESET:+-$PRESET}; rm -rf "runs/$name"; g=${GPUS-all}
      nvidia-smi --query-gpu=index,name,memory.total --format=csv > "$dir/gpus.csv" 2>&1
      timeout -k 20 $(( $(left) - 20 )) python3 -m harness.cli run benchmarks/gpu/multi_gpu.yaml --runs runs \
        ${PRESET:+--preset "$PRESET"} ${g:+--gpus "$g"} --quiet --no-report > "$dir/run.log" 2>&1
      echo "multigpu run exit $?"; tail -2 "$dir/run.log"
      python3 -m benchmarks.gpu.multi_gpu_compare "runs/$name" --out "$dir" > /dev/null 2>&1; cat "$dir/multi_gpu.md"
      tar czf "$dir/runs.tgz" --exclude='checkpoint*.pt' "runs/$name" 2>/dev/null ;;
    *) echo "unknown step $step (tests, segment, publish:STUDY, throughput, mixer2, flaparity, profile[:SCAN], kernels, mixbench, multigpu)" | tee "$dir/error.txt" ;;
  esac
done
echo "chain done in $(( $(date +%s) - T0 )) s"
