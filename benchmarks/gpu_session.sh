#!/usr/bin/env bash
# The GPU checks of issues 52 and 53 in about 13 minutes on one H200 (the 15 minutes a session gets), for a session
# lent a GPU machine (/work/.library/device). Each part prints as it goes and has its own limit;
# outputs land in $OUT (commit them with the GPU's name, which gpu.txt holds).
#
# That machine has python3 with torch, transformers, accelerate and peft, but no diffusers and no
# network, and takes at most 64 MiB of working tree (the shipped models are 93 MB). Here, first:
#   bash benchmarks/device_pack.sh pack      # fp16 copy of the shapes model + diffusers' wheel in .device
# then run `bash benchmarks/gpu_session.sh first` (timeout_s 330) and, on the still warm machine
# (call again within 30 s), `bash benchmarks/gpu_session.sh second` (timeout_s 500), `.device`
# carried; then, here:
#   bash benchmarks/device_pack.sh unpack
set -o pipefail
OUT=${OUT:-runs/gpu_session}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .device/wheels/*.whl || { echo "no wheels in .device/wheels: see the top of this script"; exit 2; }
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
if [ -d .device/shapes ]; then rm -rf src/unclip/assets/shapes; cp -r .device/shapes src/unclip/assets/shapes; fi
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
# Two halves, each under one device call's 10 minutes (about 5 and 8 minutes; the
# machine's start and the transfers take the rest of the 15).
if [[ ${1:-all} != second ]]; then
    part offload_check 35 python3 benchmarks/offload_check.py --device cuda
    part published_kandinsky_bf16 200 python3 benchmarks/published_sizes.py --family kandinsky --device cuda \
        --dtype bfloat16 --modes none model --keep $K
    # one layer at a time streams the 2.5 GB UNet at every step: 20 decoder steps, not 100
    part published_kandinsky_sequential 60 python3 benchmarks/published_sizes.py --family kandinsky --device cuda \
        --dtype bfloat16 --modes sequential --sides unclip --steps decoder=20 --keep $K
fi
if [[ ${1:-all} != first ]]; then
    part gpu_check 260 python3 benchmarks/gpu_check.py --out /tmp/gpu_check --limit 50 --parallel
    # issue 53's long job: 500 prompts at the defaults (--compile auto compiles: 500 >= 64) against eager
    part eval500_off 90 python3 -m unclip eval shapes --num 500 --device cuda --compile off --out /tmp/eval_off
    part eval500_auto 120 python3 -m unclip eval shapes --num 500 --device cuda --out /tmp/eval_auto
fi
