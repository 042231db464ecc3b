#!/usr/bin/env bash
# One call on the lent GPU machine (see benchmarks/README.md). Run from the repository root there, with
# carry [".gpu", "runs"]; .gpu holds wheels/ (mamba-ssm, causal-conv1d and the project's dependencies for the
# device's Python, e.g. from `pip download`/`pip wheel`) and the Fashion-MNIST subset from
# benchmarks/gpu/subset_fashion_mnist.py. Everything it produces lands in $OUT.
#   PHASE=1: GPU0 runs `harness bench` then joins backbone_comparison; GPU1 runs scan_ablation (one worker each)
#   PHASE=2: scan_ablation then backbone_comparison with two workers (--gpus 0,1) on the same studies
set -uo pipefail
export PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s); LIMIT=${LIMIT:-555}
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /usr/share/datasets/fashion-mnist && cp .gpu/data/fashion-mnist/*.gz /usr/share/datasets/fashion-mnist/
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv > "$OUT/gpus.csv"
nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader -l 5 > "$OUT/gpu_util.csv" &
python3 -c "import torch, mamba_ssm, optuna, mlflow, pydantic; print('torch', torch.__version__, 'mamba_ssm', mamba_ssm.__version__)"
H="python3 -m harness.cli"
pack() { tar czf "$OUT/runs.tgz" --exclude='checkpoint*.pt' runs 2>/dev/null; }
trap pack EXIT
if [ "${PHASE:-1}" = 1 ]; then
  ( CUDA_VISIBLE_DEVICES=1 timeout $(left) $H run studies/scan_ablation.yaml --runs runs --quiet --no-report \
      > "$OUT/scan_ablation.log" 2>&1 ) &
  ( export CUDA_VISIBLE_DEVICES=0
    timeout 300 python3 -m benchmarks.bench --device cuda --time-budget-s 270 --out "$OUT/bench" > "$OUT/bench.log" 2>&1
    timeout $(left) $H run studies/backbone_comparison.yaml --runs runs --quiet --no-report \
      > "$OUT/backbone_comparison.log" 2>&1 ) &
  wait
else
  timeout $(( $(left) - 150 )) $H run studies/scan_ablation.yaml --runs runs --gpus 0,1 --quiet --no-report \
    > "$OUT/scan_ablation.log" 2>&1
  timeout $(left) $H run studies/backbone_comparison.yaml --runs runs --gpus 0,1 --quiet --no-report \
    > "$OUT/backbone_comparison.log" 2>&1
fi
kill %1 2>/dev/null
for s in scan_ablation backbone_comparison; do $H status runs/$s > "$OUT/status_$s.txt" 2>&1; done
echo "done in $(( $(date +%s) - T0 )) s"
