#!/usr/bin/env bash
# The packed segment layout (zigma/mixer/segments.py) in one call on the lent GPU machine (one H200), from the
# repository root there, everything into $OUT:
#   here, once: mamba-ssm + causal-conv1d wheels built for the device's torch and CUDA into .gpu/wheels/
#   device run, carry [".gpu"]:  bash benchmarks/gpu/device_segment_layout.sh
# 1. the GPU tests: packed vs batch-folded with the kernels (video shape, fp32 and bf16), the kernel's state reset,
#    and the mixer's fused-vs-reference tests                                                 (~1 min at most)
# 2. benchmarks/segment_layout.py: one ZigMa-XS mixer layer fwd+bwd, batch-folded vs packed    (~10-30 s)
set -uo pipefail
export PYTHONUNBUFFERED=1
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, mamba_ssm, causal_conv1d; print('torch', torch.__version__, 'mamba_ssm', mamba_ssm.__version__, \
'causal_conv1d', causal_conv1d.__version__, torch.cuda.get_device_name())" | tee "$OUT/versions.txt"
timeout ${TESTS_S:-240} python3 -m pytest -q -m gpu tests/zigma/test_mixer_segments.py tests/zigma/test_mixer.py \
  -p no:cacheprovider > "$OUT/gpu_tests.log" 2>&1
echo "gpu tests exit $? ($(( $(date +%s) - T0 )) s)"; tail -15 "$OUT/gpu_tests.log"
timeout ${BENCH_S:-180} python3 -m benchmarks.segment_layout --out "$OUT/segment_layout.json" 2>&1 \
  | tee "$OUT/segment_layout.md"
echo "benchmark exit ${PIPESTATUS[0]} ($(( $(date +%s) - T0 )) s)"
