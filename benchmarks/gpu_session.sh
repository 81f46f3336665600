#!/usr/bin/env bash
# The GPU checks of issues 52, 53 and 54 for a session lent a GPU machine (/work/.library/device):
# what was never measured on a GPU first (the H200 run of 2026-12-04 measured Kandinsky 2.2 bf16
# with and without model offload, and six rows of gpu_check.py). Each part prints as it goes, has
# its own limit, and is cut to end before DEADLINE (seconds from the script's start), so that the
# call returns what it measured before the session's device time runs out; a part with under 20 s
# left is skipped and named in the last line. A call brings back at most 8 files: everything lands
# in one, $OUT/gpu_session.txt.
#
# The machine has python3 with torch, transformers, accelerate and peft, but no diffusers or gradio
# and no network, and takes at most 64 MiB of working tree (the shipped models are 93 MB; their fp16
# copy 49 MB, gradio's wheel alone 31 MB more, and its needs: so `unclip serve` is not checked there, gpu_check's
# serve row says so, and issue 54's GPU load figures stay unmeasured; the batch_gain part measures what
# batching gains inside the pipeline there, the ceiling of a batching server's gain). Here:
#   bash benchmarks/device_pack.sh pack      # fp16 shapes model + the wheels in .device
# then one call (timeout_s 600, carry [".device"]), DEADLINE = what the session's device time
# leaves after the machine's start (1-2 min) and the transfers, at most 570:
#   DEADLINE=540 bash benchmarks/gpu_session.sh            # every part, in the order of PARTS
#   DEADLINE=300 bash benchmarks/gpu_session.sh eval500 finetune   # the parts named
# and here again: bash benchmarks/device_pack.sh unpack
set -o pipefail
OUT=${OUT:-runs/gpu_session}
DEADLINE=${DEADLINE:-570}
PARTS=(check_new kandinsky_sequential karlo_offload eval500 vs_diffusers_fp16 batch_gain kandinsky_fp16
       stable_unclip finetune check_seen)
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of the parts and the deadline here (slow; use a small DEADLINE)
LIMIT_CAP=${LIMIT_CAP:-0}  # >0: no part runs longer (a dry run that shows every part starting, e.g. 30)
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
session() {
    if [[ $DEVICE == cuda ]]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .device/wheels/*.whl || { echo "no wheels in .device/wheels: see the top of this script"; exit 2; }
        export PYTHONPATH=/tmp/site:$PWD/src
        if [ -d .device/shapes ]; then rm -rf src/unclip/assets/shapes; cp -r .device/shapes src/unclip/assets/shapes; fi
        python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here')" || exit 2
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    fi
    python3 -c "import torch, diffusers, transformers, accelerate; print('torch', torch.__version__, 'diffusers',
    diffusers.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
    if (($#)); then LIST=("$@"); else LIST=("${PARTS[@]}"); fi
    echo "cores: $(nproc); parts: ${LIST[*]}; deadline ${DEADLINE} s"
    SKIPPED=()
    part() {  # part NAME LIMIT COMMAND...: one command, cut to the deadline
        local name=$1 limit=$2 start=$SECONDS left=$((DEADLINE - SECONDS - 5)); shift 2
        if ((left < 20)); then SKIPPED+=("$name"); echo "== $name: skipped, ${left} s left"; return; fi
        ((limit > left)) && limit=$left
        ((LIMIT_CAP > 0 && limit > LIMIT_CAP)) && limit=$LIMIT_CAP
        echo "== $name (limit ${limit} s): $*"
        timeout "$limit" "$@"
        printf "\n== %s: exit %s after %s s\n" "$name" $? $((SECONDS - start))  # on a line of its own after a progress bar
    }
    K=/tmp/published/kandinsky
    PS="python3 benchmarks/published_sizes.py --device $DEVICE"
    run_part() {
        rm -rf /tmp/gpu_check /tmp/gpu_check_seen
        case $1 in
        check_new)  # the rows the H200 did not reach; first: --compile auto against off on a first command
            part $1 300 python3 benchmarks/gpu_check.py --devices $DEVICE cpu --out /tmp/gpu_check --limit 60 --parallel \
                --jobs first probe eval demo serve train lora accelerate ;;
        kandinsky_sequential)  # issue 52: at most 3 GB; 20 decoder steps (each streams the 2.5 GB UNet)
            part $1 150 $PS --family kandinsky --dtype bfloat16 --modes sequential --sides unclip \
                --steps decoder=20 --keep $K ;;
        karlo_offload)  # issue 52: at most 4 GB with model offload; fp16, Karlo's published dtype
            part $1 200 $PS --family karlo --dtype float16 --modes model none --keep /tmp/published/karlo ;;
        eval500)  # issue 53: 500 prompts at the defaults (--compile auto compiles: 500 >= 64) against eager
            rm -rf /tmp/eval_off /tmp/eval_auto
            part eval500_off 90 python3 -m unclip eval shapes --num 500 --device $DEVICE --compile off --out /tmp/eval_off
            part eval500_auto 150 python3 -m unclip eval shapes --num 500 --device $DEVICE --out /tmp/eval_auto ;;
        vs_diffusers_fp16)  # issue 53: fp16 at least 1.5x diffusers on the 21 M model; eager, compiled, CUDA graphs
            part $1 150 python3 benchmarks/vs_diffusers.py --device $DEVICE --dtype float16 \
                --variants diffusers float16 float16+compile float16+graphs ;;
        batch_gain)  # issue 54: what batching 8 requests gains inside the pipeline (serve itself cannot travel)
            part $1 120 python3 benchmarks/batch_gain.py --device $DEVICE --requests 24 --rounds 2 ;;
        kandinsky_fp16)  # issue 52: eager at least 1.0x diffusers in fp16 too
            part $1 200 $PS --family kandinsky --dtype float16 --modes none --keep /tmp/published/kandinsky16 ;;
        stable_unclip)
            part $1 150 $PS --family stable_unclip --dtype bfloat16 --modes none model --keep /tmp/published/su ;;
        finetune)  # issue 52: LoRA at the published sizes (needs kandinsky_sequential's, karlo_offload's folders)
            part finetune_kandinsky 120 python3 benchmarks/published_finetune.py --family kandinsky --root $K --device $DEVICE
            part finetune_karlo 120 python3 benchmarks/published_finetune.py --family karlo --root /tmp/published/karlo \
                --device $DEVICE ;;
        check_seen)
            part $1 200 python3 benchmarks/gpu_check.py --devices $DEVICE cpu --out /tmp/gpu_check_seen --limit 60 --parallel \
                --jobs generate invert vary interpolate edit inpaint ;;
        *) echo "no part $1 (parts: ${PARTS[*]})"; exit 2 ;;
        esac
    }
    for p in "${LIST[@]}"; do run_part "$p"; done
    echo "== done after $SECONDS s; skipped: ${SKIPPED[*]:-none}"
}
session "$@" 2>&1 | tee -a "$OUT/gpu_session.txt"
