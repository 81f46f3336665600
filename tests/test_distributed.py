"""Several CPU processes under `accelerate launch`: the same training, images and figures as one."""

import os
import socket
import subprocess
import sys

import pytest

from unclip.train.loop import read_log

from .conftest import TINY


def two_processes() -> list[str]:
    """`accelerate launch` with 2 CPU processes, on a free local port."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--main_process_port", str(free_port())]


ONE_PROCESS = [sys.executable]


def run_unclip(launcher: list[str], args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    """`unclip ARGS` under `launcher` on the CPU, one thread a process; it must succeed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    try:
        done = subprocess.run([*launcher, "-m", "unclip", *args], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"unclip {args[0]} did not finish; its stderr ended with:\n{(e.stderr or b'')[-3000:]!r}")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def one_and_two_processes(args: list[str], tmp_path) -> dict[str, list[dict]]:
    """`unclip generate ARGS` alone and under `accelerate launch` with 2 processes: each run's
    manifest records; the two runs must draw the same images (within rounding) for the same seeds."""
    import json

    import numpy as np
    from PIL import Image

    runs = {}
    for name, launcher in (("two", two_processes()), ("one", ONE_PROCESS)):
        run_unclip(launcher, [*args, "--out", str(tmp_path / name)])
        runs[name] = [json.loads(x) for x in (tmp_path / name / "manifest.jsonl").read_text().splitlines()]
    assert {r["process"] for r in runs["two"]} == {0, 1} and {r["process"] for r in runs["one"]} == {0}
    for a, b in zip(runs["one"], runs["two"], strict=True):
        x, y = (np.asarray(Image.open(tmp_path / d / r["file"])).astype(int) for d, r in (("one", a), ("two", b)))
        assert a["seed"] == b["seed"] and np.abs(x - y).mean() <= 1, a["file"]
    return runs


def run_train(out, launcher, extra=()):
    run_unclip(launcher, ["train", "clip", "--config", str(TINY / "clip.yaml"), f"--train.out_dir={out}",
                          "--train.steps=4", "--train.batch_size=8", *extra])
    log = read_log(out)
    return [r["run"]["processes"] for r in log if "run" in r], {r["step"]: r["loss"] for r in log if "loss" in r}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="gloo process groups on Linux")
def test_two_processes_match_one(tmp_path):
    procs_two, two = run_train(tmp_path / "two", two_processes())
    procs_one, one = run_train(tmp_path / "one", ONE_PROCESS)
    assert (procs_one, procs_two) == ([1], [2])
    assert list(one) == list(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-4, abs=1e-5), step


GENERATE = ["generate", "a red circle", "a blue square", "a green star", "--num-images", "2", "--batch-size", "2",
            "--steps", "prior=2", "decoder=2", "upsampler=1", "--dtype", "float32", "--rerank", "1"]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="gloo process groups on Linux")
def test_generate_splits_prompts_over_two_processes(tiny_model, tmp_path):
    """`accelerate launch -m unclip generate`: one folder, one manifest in prompt order naming the
    process of each image, the same images as one process draws."""
    import json

    import numpy as np
    from PIL import Image

    runs = {}
    for name, launcher in (("two", two_processes()), ("one", ONE_PROCESS)):
        out = tmp_path / name
        run_unclip(launcher, [*GENERATE, "--model", str(tiny_model), "--out", str(out)])
        runs[name] = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    one, two = runs["one"], runs["two"]
    assert [(r["prompt"], r["seed"], r["file"]) for r in one] == [(r["prompt"], r["seed"], r["file"]) for r in two]
    assert [r["prompt"] for r in one][:2] == ["a red circle"] * 2 and len(one) == 6
    assert {r["process"] for r in two} == {0, 1} and {r["process"] for r in one} == {0}
    for a, b in zip(one, two):
        x, y = (np.asarray(Image.open(tmp_path / d / r["file"])).astype(int) for d, r in (("one", a), ("two", b)))
        assert np.abs(x - y).mean() <= 1, a["file"]


def test_resume_draws_only_what_is_missing(tiny_model, tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from unclip.cli import main

    out = tmp_path / "run"
    args = [*GENERATE, "--model", str(tiny_model), "--out", str(out)]
    assert main(args) == 0
    first = {p.name: np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))}
    kept = (out / "00000.png").stat().st_mtime_ns
    (out / "00003.png").unlink()  # as if the run had been killed before these
    (out / "manifest.jsonl").unlink()
    assert main(args) == 2 and "--resume" in capsys.readouterr().err  # never silently redrawn
    assert main([*args, "--resume"]) == 0
    assert (out / "00000.png").stat().st_mtime_ns == kept
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["file"] for r in lines] == sorted(first) and [r["seed"] for r in lines] == list(range(6))
    for name, image in first.items():  # the redrawn one up to rounding (it is drawn in a batch of 1, not 2)
        assert np.abs(np.asarray(Image.open(out / name)).astype(int) - image).mean() <= 1, name
    changed = [*args[:-4], "--steps", "prior=3", "decoder=2", "upsampler=1", *args[-4:], "--resume"]
    assert main(changed) == 0  # other settings: every image is drawn again
    assert (out / "00000.png").stat().st_mtime_ns != kept


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="gloo process groups on Linux")
def test_eval_shapes_over_two_processes_scores_like_one(tiny_model, tmp_path):
    import json

    figures = {}
    for name, launcher in (("two", two_processes()), ("one", ONE_PROCESS)):
        out = tmp_path / name
        done = run_unclip(launcher, ["eval", "shapes", "--model", str(tiny_model), "--num", "6", "--batch-size", "2",
                                     "--dtype", "float32", "--rerank", "1", "--out", str(out)])
        assert done.stdout.count("shapes: generated images scored") == 1  # one report, from the main process
        figures[name] = json.loads(done.stdout.strip().splitlines()[-1])
        lines = (out / "images" / "manifest.jsonl").read_text().splitlines()
        assert [json.loads(x)["seed"] for x in lines] == list(range(6))
    one, two = figures["one"], figures["two"]
    assert one["in_distribution"]["single"]["images"] == two["in_distribution"]["single"]["images"]
    assert abs(one["speckle"] - two["speckle"]) < 0.05


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="gloo process groups on Linux")
def test_karlo_fine_tuning_runs_data_parallel(tmp_path):
    """The Karlo decoder stage under `accelerate launch` with 2 CPU processes: both train, one
    log and one exported Karlo folder, which loads."""
    from unclip.pipelines.karlo import KarloPipeline
    from unclip.pipelines.karlo.synthetic import random_components, write_folder

    from .conftest import ROOT

    karlo = write_folder(random_components(seed=0), tmp_path / "karlo")
    variations = write_folder(random_components(seed=1, variations=True), tmp_path / "variations")
    out = tmp_path / "run"
    args = ["train", "decoder", "--config", str(ROOT / "configs" / "karlo" / "decoder_finetune.yaml"),
            "--init", str(karlo), "--image-encoder", str(variations), f"--train.out_dir={out}", "--train.steps=4",
            "--train.batch_size=8", "--train.checkpoint_every=2", "--train.sample_every=0",
            "--train.mixed_precision=fp32", "--data.num_workers=0"]
    run_unclip(two_processes(), args, timeout=600)
    log = read_log(out)
    assert [r["run"]["processes"] for r in log if "run" in r] == [2]
    assert sorted(r["step"] for r in log if "loss" in r) == [1, 2, 3, 4]
    assert KarloPipeline.from_pretrained(out / "model").decoder is not None
