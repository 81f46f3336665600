"""Two CPU processes give the same training as one process with the same global batch."""

import os
import socket
import subprocess
import sys

import pytest

from unclip.train.loop import read_log

from .conftest import TINY


def run_train(out, launcher, extra=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    args = ["-m", "unclip", "train", "clip", "--config", str(TINY / "clip.yaml"), f"--train.out_dir={out}",
            "--train.steps=4", "--train.batch_size=8", *extra]
    try:
        done = subprocess.run([*launcher, *args], env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"training did not finish; its stderr ended with:\n{(e.stderr or b'')[-3000:]!r}")
    assert done.returncode == 0, done.stderr[-3000:]
    log = read_log(out)
    return [r["run"]["processes"] for r in log if "run" in r], {r["step"]: r["loss"] for r in log if "loss" in r}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(sys.platform != "linux", reason="gloo process groups on Linux")
def test_two_processes_match_one(tmp_path):
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--main_process_port", str(free_port())]
    procs_two, two = run_train(tmp_path / "two", accelerate)
    procs_one, one = run_train(tmp_path / "one", [sys.executable])
    assert (procs_one, procs_two) == ([1], [2])
    assert list(one) == list(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-4, abs=1e-5), step
