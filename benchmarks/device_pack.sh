#!/usr/bin/env bash
# The device machine takes at most 64 MiB of working tree, and the shipped models alone are 93 MB.
# `pack` (here, before `run`): the shipped shapes model (already fp16) without its AR and ECLIPSE priors in .device/shapes,
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
import json
src, dst = Path("src/unclip/assets/shapes"), Path(".device/shapes")
shutil.rmtree(dst, ignore_errors=True)
# the AR and ECLIPSE priors stay behind (17 MB): no check uses them, and the trip takes 64 MiB
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("ar_prior", "eclipse_prior"))
manifest = json.loads((dst / "unclip.json").read_text())
manifest["components"] = [c for c in manifest["components"] if c not in ("ar_prior", "eclipse_prior")]
(dst / "unclip.json").write_text(json.dumps(manifest, indent=2))
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
