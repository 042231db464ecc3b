# Sourced by the GPU scripts here (throughput_run.sh, publish_study.sh, torchrun_check.sh), from the repository root
# on the device machine: the environment, the clock and the packages and data every one of them needs.
#   LIMIT   seconds the script may take (each script sets its own default before sourcing); `left` prints what is left
#   SITE    an unpacked site-packages put on PYTHONPATH; without it the wheels in .gpu/study/wheels are installed
#   DATA    a folder of Fashion-MNIST *.gz files (default .gpu/study/data/fashion-mnist); `stage_data` copies them to
#           where the dataset plugin reads them and fails (status 1) when there are none. It never overwrites files
#           already there (a machine with Debian's dataset-fashion-mnist keeps the full set: the studies' num_train /
#           num_reference take the same first images from it as from the subset)
export PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
if [ -n "${SITE:-}" ]; then
  export PYTHONPATH=$SITE:$PWD
else
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/study/wheels/*.whl 2>&1 | tail -2
  export PYTHONPATH=/tmp/site:$PWD
fi
DATA=${DATA:-.gpu/study/data/fashion-mnist}
stage_data() {
  ls "$DATA"/*.gz > /dev/null 2>&1 || return 1
  mkdir -p /usr/share/datasets/fashion-mnist || return 1
  local f
  for f in "$DATA"/*.gz; do
    [ -e "/usr/share/datasets/fashion-mnist/${f##*/}" ] || cp "$f" /usr/share/datasets/fashion-mnist/ || return 1
  done
}
