#!/usr/bin/env bash
# Issue 18 in one call on the lent GPU machine (one H200), from the repository root there, everything into $OUT:
#   LIMIT=570 bash benchmarks/gpu/device_mixer2.sh          (carry [".gpu"] when the wheels come from there)
# PART=checks runs 1-3 only, PART=bench 4 only (each then gets the whole LIMIT: two calls give the bench's compiled
# variants time to compile); the default PART=all runs 1-4 and gives the bench what is left (~4 min).
# 1. the GPU tests of both mixers (fused vs reference, fp32; Mamba-2's ssd 'fla' too: test_mixer2_fla.py, skipped
#    without fla-core)                                                   ~1 min (Triton compiles the SSD kernels)
# 2. benchmarks/gpu_mixer2.py: Mamba-2 parity fp32/bf16, init + state dict into mamba_ssm.Mamba2, 1-layer timing
# 3. benchmarks/profile_step.py: one ZigMa-B step at 4K tokens, mamba1, mamba2 and mamba2-fla, kernel groups vs roofline
# 4. the bench: ZigMa-B mamba1 / mamba2 beside DiT-B at 1K/4K/16K tokens, eager and compiled, scan overhead, and
#    mamba2 with its SSD by flash-linear-attention (zigzag-8-mamba2-fla[-compiled]: needs the fla-core wheel beside
#    the others, pure Python; without it those points are "skipped" with the install command)
set -uo pipefail
export PYTHONUNBUFFERED=1
T0=$(date +%s); LIMIT=${LIMIT:-570}
# Triton compiles and autotunes the SSD kernels on a fresh machine for minutes: one cache for every step below
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache} TRITON_CACHE_AUTOTUNING=1
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl 2>&1 | tail -2
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=${SITE:+$SITE:}$PWD   # SITE: an unpacked site-packages folder carried instead of wheels
fi
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv > "$OUT/gpus.csv"
python3 -c "import torch, mamba_ssm, causal_conv1d, triton; print('torch', torch.__version__, 'mamba_ssm', \
mamba_ssm.__version__, 'causal_conv1d', causal_conv1d.__version__, 'triton', triton.__version__)" | tee "$OUT/versions.txt"
python3 -W ignore -c "import fla; print('fla-core', fla.__version__)" 2>/dev/null | tee -a "$OUT/versions.txt" \
  || echo "fla-core not importable: the ssd 'fla' tests and variants are skipped" | tee -a "$OUT/versions.txt"
PART=${PART:-all}
if [ "$PART" != bench ]; then
timeout ${TESTS_S:-100} python3 -m pytest -q -m gpu tests/zigma/test_mixer2.py tests/zigma/test_mixer2_fla.py \
  tests/zigma/test_mixer.py -p no:cacheprovider \
  > "$OUT/gpu_tests.log" 2>&1; echo "gpu tests exit $? ($(( $(date +%s) - T0 )) s)"
timeout ${MIXER2_S:-150} python3 -m benchmarks.gpu_mixer2 --out "$OUT/gpu_mixer2" > "$OUT/gpu_mixer2.log" 2>&1
echo "gpu_mixer2 exit $? ($(( $(date +%s) - T0 )) s)"
timeout ${PROFILE_S:-120} python3 -m benchmarks.profile_step --size B --tokens 4096 --batch-tokens 65536 \
  --mixers ${PROFILE_MIXERS:-mamba1,mamba2,mamba2-fla} --out "$OUT/profile" \
  > "$OUT/profile.log" 2>&1; echo "profile exit $? ($(( $(date +%s) - T0 )) s)"
fi
if [ "$PART" != checks ]; then
B=$(( $(left) - 15 ))
# Variants run in the order given, each at every size, until the time budget is spent: the goal's points first
# (DiT's fastest configuration against each ZigMa-Mamba-2 configuration at the goal's 4K / 16K tokens), then the
# scan-overhead pair, then Mamba-1 and the chunk-size variant, measured in earlier runs. TOKENS=1024,4096,16384
# adds 1K back; BENCH_VARIANTS= replaces the list.
timeout $B python3 -m benchmarks.bench --device cuda --size B --tokens ${TOKENS:-4096,16384} --compile \
  --variants ${BENCH_VARIANTS:-attention-compiled,attention,zigzag-8-mamba2,zigzag-8-mamba2-compiled,zigzag-8-mamba2-fla,zigzag-8-mamba2-fla-compiled,no-scan-mamba2,zigzag-8,no-scan,zigzag-8-compiled,zigzag-8-mamba2-c128} \
  --no-ceiling --no-mixer-check --no-permute-check --time-budget-s $(( B - 45 )) --out "$OUT/bench" > "$OUT/bench.log" 2>&1
echo "bench exit $? ($(( $(date +%s) - T0 )) s)"
fi
tail -30 "$OUT/bench.log" 2>/dev/null; cat "$OUT/gpu_mixer2/gpu_mixer2.md" "$OUT/profile/profile_step.md" 2>/dev/null
tail -3 "$OUT/gpu_tests.log" 2>/dev/null
