#!/usr/bin/env bash
# Issue 20 on one lent GPU: benchmarks/gpu/torchrun_check.yaml (the scan ablation's sweep-1 seed-0 trial at 200
# steps) run plainly in the worker and under torchrun with one process and NCCL (DDP), then the plain trial once more
# in a folder of its own (the noise floor of two plain runs on this card); benchmarks/gpu/torchrun_compare.py writes
# $OUT/torchrun_check.{json,md} (loss curves' max abs diff, FD of each). From the repository root there:
#   SITE=/path/to/site-packages bash benchmarks/gpu/torchrun_check.sh        # about 2-3 minutes on an H200
# SITE: an unpacked site-packages with the project's dependencies (else wheels from .gpu/study/wheels, as
# throughput_run.sh); DATA: the Fashion-MNIST subset (default .gpu/study/data/fashion-mnist; without it sklearn's
# digits, preset `digits`); REPEAT=0 skips the second plain run; LIMIT: seconds for everything (default 240).
set -uo pipefail
LIMIT=${LIMIT:-240}; OUT=${OUT:-out}
mkdir -p "$OUT"
. benchmarks/gpu/common.sh
PRESET=(); NAME=torchrun_check
if ! stage_data; then
  echo "no Fashion-MNIST in $DATA: sklearn's digits instead (preset digits)"
  PRESET=(--preset digits); NAME=torchrun_check-digits
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv > "$OUT/gpus.csv"
python3 -c "import torch, optuna, mlflow; print('torch', torch.__version__, 'nccl', torch.cuda.nccl.version() if torch.cuda.is_available() else None, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
STUDY=benchmarks/gpu/torchrun_check.yaml
H="python3 -m harness.cli"
rm -rf runs/$NAME runs-again/$NAME
timeout -k 10 $(( $(left) - 70 )) $H run $STUDY "${PRESET[@]}" --runs runs --quiet --no-report > "$OUT/run.log" 2>&1
echo "run exit $?"; tail -4 "$OUT/run.log"
REPEATED=()
if [ "${REPEAT:-1}" = 1 ] && [ "$(left)" -gt 75 ]; then   # the plain trial again: same study name, its own folder
  sed 's/^  train.launcher: \[auto, torchrun\]$/  train.launcher: [auto]/' $STUDY > /tmp/torchrun_check_again.yaml
  timeout -k 10 $(( $(left) - 15 )) $H run /tmp/torchrun_check_again.yaml "${PRESET[@]}" --runs runs-again --quiet \
    --no-report > "$OUT/run_again.log" 2>&1
  echo "run again exit $?"; tail -2 "$OUT/run_again.log"
  REPEATED=(--repeat runs-again/$NAME)
fi
python3 -m benchmarks.gpu.torchrun_compare runs/$NAME "${REPEATED[@]}" --out "$OUT"
tar czf "$OUT/runs.tgz" --exclude='checkpoint*.pt' runs/$NAME 2>/dev/null   # configs, results, the ranks' logs
echo "done in $(( $(date +%s) - T0 )) s"
