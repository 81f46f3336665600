#!/usr/bin/env bash
# The device machine takes at most 64 MiB of working tree, and the shipped models alone are 93 MB.
# `pack` (here, before `run`): the shipped shapes model stored in fp16 (34 MB) in .device/shapes,
# the diffusers wheel in .device/wheels, and the assets and docs taken out of what travels (git's
# index and .git/info/exclude; the files stay on disk). `unpack` (here, after): everything back.
# On the device machine, benchmarks/gpu_session.sh puts .device/shapes where the package looks.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIP="src/unclip/assets/dalle1 src/unclip/assets/shapes docs"
case "${1:-}" in
pack)
    mkdir -p .device/wheels
    grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
    .venv/bin/python - <<'PY'
import shutil, torch
from pathlib import Path
from safetensors.torch import load_file, save_file
src, dst = Path("src/unclip/assets/shapes"), Path(".device/shapes")
shutil.rmtree(dst, ignore_errors=True)
shutil.copytree(src, dst)
for f in dst.rglob("*.safetensors"):
    state = load_file(f)
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, f, metadata={"format": "pt"})
print("packed", sum(f.stat().st_size for f in dst.rglob("*") if f.is_file()) / 1e6, "MB")
PY
    ls .device/wheels/diffusers-*.whl >/dev/null 2>&1 || .venv/bin/python -m pip download -q --no-deps \
        --only-binary=:all: --python-version 3.12 -d .device/wheels diffusers==0.42.1
    git rm -r -q --cached $TRIP
    for p in $TRIP; do grep -qx "/$p/" .git/info/exclude || echo "/$p/" >> .git/info/exclude; done
    echo "travels: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes tracked + $(du -sb .device | cut -f1) carried"
    ;;
unpack)
    for p in $TRIP; do sed -i "\#^/$p/\$#d" .git/info/exclude; done
    git reset -q -- $TRIP
    git status --short | head
    ;;
*)
    echo "usage: $0 pack|unpack"; exit 2
    ;;
esac
