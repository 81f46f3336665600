"""The `unclip` command as a user types it."""

import json
import subprocess
import sys

from PIL import Image

from unclip.cli import main

from .conftest import TINY


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "unclip", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("data", "train", "eval"):
        assert name in out.stdout


def test_data_shapes_writes_pngs_and_a_manifest(tmp_path, capsys):
    assert main(["data", "shapes", "--split", "eval", "--num", "12", "--size", "32", "--out", str(tmp_path)]) == 0
    lines = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    for line in lines:
        assert set(line) >= {"prompt", "file", "scene"}
        assert Image.open(tmp_path / line["file"]).size == (32, 32)
    assert {line["subset"] for line in lines} == {"in_distribution", "novel"}
    assert main(["data", "shapes", "--split", "train", "--num", "3", "--size", "16", "--out",
                 str(tmp_path / "t")]) == 0
    assert len((tmp_path / "t" / "manifest.jsonl").read_text().splitlines()) == 3


def test_train_then_eval_prints_a_table_and_json_last(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "clip", "--config", str(TINY / "clip.yaml"), f"--train.out_dir={out}",
                 "--train.steps", "2"])
    assert code == 0
    capsys.readouterr()
    assert main(["eval", "clip", "--model", str(out / "model"), "--num", "20"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(printed[-1])
    assert set(figures) == {"in_distribution", "novel"}
    assert any("in_distribution / top1" in line for line in printed[:-1])


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    assert main(["train", "clip", "--config", str(TINY / "clip.yaml"), "--train.sttps=3"]) == 2
    assert "train.sttps" in capsys.readouterr().err
    assert main(["train", "clip", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["eval", "clip", "--model", str(tmp_path / "nope")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["data", "shapes", "--num", "0", "--out", str(tmp_path)]) == 2


def test_the_program_exits_with_mains_code_and_writes_everything(tmp_path):
    """`python -m unclip` (unclip.cli.run) freezes the collector before exiting: the exit code is
    main's, and what the command wrote is whole."""
    out = tmp_path / "d"
    done = subprocess.run([sys.executable, "-m", "unclip", "data", "shapes", "--split", "eval", "--num", "5",
                           "--size", "16", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 5
    bad = subprocess.run([sys.executable, "-m", "unclip", "data", "shapes", "--split", "eval", "--num", "-1",
                          "--out", str(tmp_path / "e")], capture_output=True, text=True)
    assert bad.returncode == 2 and "unclip: error:" in bad.stderr
