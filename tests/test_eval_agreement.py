"""benchmarks/eval_agreement.py: where two eval runs of the same prompts disagree."""

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from unclip.data import shapes

ROOT = Path(__file__).resolve().parents[1]


def write_run(out: Path, items, scenes) -> Path:
    (out / "images").mkdir(parents=True)
    lines = []
    for i, (item, scene) in enumerate(zip(items, scenes)):
        Image.fromarray(shapes.render(scene, 128)).save(out / "images" / f"{i:05d}.png")
        lines.append(json.dumps({"prompt": item.prompt, "seed": i, "file": f"{i:05d}.png"}))
    (out / "images" / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return out


def agreement(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "eval_agreement.py"), *map(str, args)],
                          capture_output=True, text=True)


def test_it_finds_the_image_whose_verdict_differs(tmp_path):
    items = shapes.eval_split(4)
    truth = [it.scene for it in items]
    a = write_run(tmp_path / "a", items, truth)
    b = write_run(tmp_path / "b", items, truth[:1] + [truth[3]] + truth[2:])  # image 1 shows another scene
    done = agreement(a, b)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert [f["prompt"] for f in report["flipped"]] == [items[1].prompt]
    assert report["flipped"][0]["right"] == [True, False] and report["flipped"][0]["apart"] > 3
    assert sum(s["images"] for s in report["subsets"].values()) == 4
    assert sum(s["flipped"] for s in report["subsets"].values()) == 1


def test_a_folder_that_is_not_an_eval_run_is_refused(tmp_path):
    done = agreement(tmp_path, tmp_path)
    assert done.returncode != 0 and "manifest.jsonl" in done.stderr
