#!/usr/bin/env bash
# The GPU checks of issues 52 and 53 in about 11 minutes on one H200, for a session
# lent a GPU machine (/work/.library/device). Each part prints as it goes and has its own limit;
# outputs land in $OUT (commit them with the GPU's name, which gpu.txt holds).
#
# That machine has python3 with torch, transformers, accelerate and peft, but no diffusers and no
# network, and takes at most 64 MiB of working tree (the shipped models are 93 MB). Here, first:
#   bash benchmarks/device_pack.sh pack      # fp16 copy of the shapes model + diffusers' wheel in .device
# then run `bash benchmarks/gpu_session.sh first` (timeout_s 480) and, on the still warm machine,
# `bash benchmarks/gpu_session.sh second` (timeout_s 300), `.device` carried; then, here:
#   bash benchmarks/device_pack.sh unpack
set -o pipefail
OUT=${OUT:-runs/gpu_session}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .device/wheels/*.whl || { echo "no wheels in .device/wheels: see the top of this script"; exit 2; }
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
[ -d src/unclip/assets/shapes ] || cp -r .device/shapes src/unclip/assets/shapes
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here')" || exit 2
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, diffusers, transformers, accelerate; print('torch', torch.__version__, 'diffusers',
diffusers.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
  nproc; } 2>&1 | tee "$OUT/gpu.txt"
part() {  # part NAME LIMIT COMMAND...: one part, its output in $OUT/NAME.txt
    local name=$1 limit=$2 start=$SECONDS; shift 2
    echo "== $name (limit ${limit} s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$OUT/$name.txt"
}
K=/tmp/published/kandinsky
# Two halves, each under one device call's 10 minutes; `all` runs both (about 11 minutes).
if [[ ${1:-all} != second ]]; then
    part offload_check 35 python3 benchmarks/offload_check.py --device cuda
    part published_kandinsky_bf16 180 python3 benchmarks/published_sizes.py --family kandinsky --device cuda \
        --dtype bfloat16 --modes none model sequential --keep $K
    part gpu_check 240 python3 benchmarks/gpu_check.py --out /tmp/gpu_check --limit 40
fi
if [[ ${1:-all} != first ]]; then
    # issue 53's long job: 500 prompts at the defaults (--compile auto compiles: 500 >= 64) against eager
    part eval500_off 90 python3 -m unclip eval shapes --num 500 --device cuda --compile off --out /tmp/eval_off
    part eval500_auto 150 python3 -m unclip eval shapes --num 500 --device cuda --out /tmp/eval_auto
    part published_kandinsky_fp16 40 python3 benchmarks/published_sizes.py --family kandinsky --device cuda \
        --dtype float16 --keep $K
fi
