#!/usr/bin/env bash
# The GPU checks of issue 34 in one run, for a session lent a GPU machine (/work/.library/device):
# unclip against diffusers on the same weights (fp16 and bf16, eager, compiled, CUDA graphs) and
# every command on the GPU against the CPU. Outputs land in $OUT; commit them with the GPU's name.
#
# That machine has its own python3 with torch but no diffusers. Here, once, in the repo's root:
#   echo /.whl/ >> .git/info/exclude
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl diffusers==0.42.1
# then run, with `.whl` carried:  bash benchmarks/gpu_session.sh   (timeout_s 560; about 8 minutes)
set -o pipefail
OUT=${OUT:-runs/gpu_session}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "no wheels in .whl: see the top of this script"; exit 2; }
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here')" || exit 2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt"
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__,
'transformers', transformers.__version__)" >> "$OUT/gpu.txt"
cat "$OUT/gpu.txt"
timeout 300 python3 benchmarks/vs_diffusers.py --device cuda --dtype float16 --variants diffusers float16 \
    float16+compile float16+graphs bfloat16 bfloat16+compile 2>&1 | tee "$OUT/vs_diffusers_cuda.txt"
timeout 200 python3 benchmarks/gpu_check.py --out /tmp/gpu_check 2>&1 | tee "$OUT/gpu_check.txt"
