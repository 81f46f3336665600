"""`--compile on`: a network compiles once for its first batch size and once more with a symbolic
one (torch.compile's automatic dynamic shapes), then reranking rounds, guidance halves and chunks
of any size reuse that graph; a second process loads the kernels from inductor's on-disk cache
instead of compiling them again. Slow: it really compiles (on the CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("compile_probe.py")


def _probe(model, cache: Path) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "2"}
    r = subprocess.run([sys.executable, str(PROBE), str(model)], capture_output=True, text=True, env=env,
                       timeout=1500, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_each_network_compiles_for_two_shapes_at_most_and_a_second_process_reuses_the_kernels(tiny_model, tmp_path):
    first = _probe(tiny_model, tmp_path / "inductor")
    graphs = first["graphs_after_each_call"]
    assert graphs[0] <= 2 * first["networks"]  # rounds of 1, 3 and 4 candidates, halves, chunks
    assert graphs[1] == graphs[0] == graphs[2]  # other batch sizes: no new graph
    assert first["fxgraph_cache_miss"] > 0
    second = _probe(tiny_model, tmp_path / "inductor")
    assert second["fxgraph_cache_miss"] == 0 and second["fxgraph_cache_hit"] >= first["fxgraph_cache_miss"]
