#!/usr/bin/env bash
# Study throughput on one lent H200 (issue 16): benchmarks/study_throughput.py on studies/scan_ablation.yaml at its
# full budget, today's path beside each speed-up switch, results in $OUT. From the repository root there:
#   carry [".gpu/study"]   (wheels/ and data/fashion-mnist, as for benchmarks/gpu/device_study.sh)
#   LIMIT=520 bash benchmarks/gpu/throughput_run.sh
# STUDY (default studies/scan_ablation.yaml) picks the study, e.g. STUDY=studies/video_scans.yaml VARIANTS=batch,packed
# TRIALS=1: the whole video trial with Mamba-1 segments folded into the batch vs packed in rows.
# TESTS_S (default 240) bounds the GPU tests run first (test_speedups, test_cuda_graph, test_text_step, -m gpu).
# MODE=tpg instead runs the study itself with --trials-per-gpu ${TPG:-2} until the limit (a second call), so
# harness status / gpu_util.csv show whether several trials on one GPU pay.
set -uo pipefail
LIMIT=${LIMIT:-520}; MODE=${MODE:-bench}
. benchmarks/gpu/common.sh
stage_data || { echo "no Fashion-MNIST *.gz in $DATA"; exit 2; }
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv > "$OUT/gpus.csv"
nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader -l 1 > "$OUT/gpu_util.csv" &
SMI=$!
python3 -c "import torch, mamba_ssm, optuna, mlflow, pydantic; print('torch', torch.__version__, 'mamba_ssm', mamba_ssm.__version__, torch.cuda.get_device_name())"
if [ "$MODE" = tpg ]; then
  pack() { tar czf "$OUT/runs.tgz" --exclude='checkpoint*.pt' runs 2>/dev/null; }
  trap pack EXIT
  timeout -k 20 $(( $(left) - 40 )) python3 -m harness.cli run studies/scan_ablation.yaml --runs runs \
    --trials-per-gpu "${TPG:-2}" --quiet --no-report > "$OUT/tpg.log" 2>&1
  echo "run exit $?"
  python3 -m harness.cli status runs/scan_ablation > "$OUT/status.txt" 2>&1; cat "$OUT/status.txt"
else
  if python3 -m pytest --version > /dev/null 2>&1; then     # the switches' GPU tests (seconds), when pytest is there
    timeout "${TESTS_S:-240}" python3 -m pytest tests/harness/test_speedups.py tests/harness/test_cuda_graph.py \
      tests/harness/test_text_step.py -m gpu -q -p no:cacheprovider > "$OUT/gpu_tests.txt" 2>&1
    tail -3 "$OUT/gpu_tests.txt"
  fi
  # order = priority: the budget stops starting trials that would not end in time (results written after each)
  timeout -k 20 $(( $(left) - 15 )) python3 -m benchmarks.study_throughput "${STUDY:-studies/scan_ablation.yaml}" \
    --variants "${VARIANTS:-baseline,all,compile,eval-batch,resident,ckpt-async}" --trials "${TRIALS:-2}" \
    --probe "${PROBE:-false,max-autotune-no-cudagraphs}" --probe-iters 100 --profile-steps 20 \
    --budget-s $(( $(left) - 45 )) --out "$OUT/throughput" > "$OUT/throughput.log" 2>&1
  echo "benchmark exit $?"
  rm -rf "$OUT/throughput/work/trials" "$OUT/throughput/work/cache"    # checkpoints and samples: not needed back
  tail -45 "$OUT/throughput.log"
fi
kill $SMI 2>/dev/null
echo "done in $(( $(date +%s) - T0 )) s"
