"""Image-folder data (img2dataset layout, folders and .tar shards) on real photographs."""

import io
import logging
import tarfile

import numpy as np
import pytest
from PIL import Image

from unclip.data.folder import ImageFolderSource
from unclip.data.transforms import open_rgb, resize_center_crop

skdata = pytest.importorskip("skimage.data")

PHOTOS = {"astronaut": "an astronaut in a white suit", "coffee": "a cup of coffee on a saucer",
          "chelsea": "a ginger cat", "rocket": "a rocket on a launch pad"}


def photo(name):
    return getattr(skdata, name)()


@pytest.fixture
def folder(tmp_path):
    """Four captioned photos, one corrupt jpg, one photo without a caption, one empty caption."""
    root = tmp_path / "data" / "00000"
    root.mkdir(parents=True)
    for i, (name, caption) in enumerate(PHOTOS.items()):
        Image.fromarray(photo(name)).save(root / f"{i:05d}.jpg")
        (root / f"{i:05d}.txt").write_text(caption)
    (root / "00010.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (root / "00010.txt").write_text("a broken file")
    Image.fromarray(photo("camera")).save(root / "00011.jpg")  # no caption
    Image.fromarray(photo("coins")).save(root / "00012.png")
    (root / "00012.txt").write_text("   ")
    return tmp_path / "data"


def test_folder_pairs_images_with_their_captions(folder, caplog):
    with caplog.at_level(logging.WARNING):
        src = ImageFolderSource(folder, image_size=32)
    assert len(src) == 5 and src.skipped == 2  # missing and empty caption
    assert "no caption" in caplog.text and "empty caption" in caplog.text
    got, unreadable = {}, 0
    with caplog.at_level(logging.WARNING):
        for i in range(len(src)):
            s = src.get(i)
            if "unreadable" in s:
                unreadable += 1
                assert s["unreadable"].endswith("00010.jpg")  # named, so it is counted once
                continue
            assert s["image"].shape == (32, 32, 3) and s["image"].dtype == np.uint8
            got[s["caption"]] = s["image"]
    assert unreadable == 1 and "unreadable image" in caplog.text
    assert set(got) == set(PHOTOS.values())
    # each caption comes with its own photo: compare with the photo resized the same way
    for name, caption in PHOTOS.items():
        expected = np.asarray(resize_center_crop(open_rgb(_jpeg(photo(name))), 32)).astype(float)
        assert np.abs(got[caption] - expected).mean() < 2


def _jpeg(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def test_tar_shards_like_img2dataset(tmp_path):
    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w") as tar:
        for i, (name, caption) in enumerate(PHOTOS.items()):
            for ext, data in ((".jpg", _jpeg(photo(name))), (".txt", caption.encode()), (".json", b"{}")):
                info = tarfile.TarInfo(f"{i:09d}{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("000000099.jpg")  # an image without caption
        data = _jpeg(photo("camera"))
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (tmp_path / "broken.tar").write_bytes(b"not a tar at all" * 100)
    src = ImageFolderSource(tmp_path, image_size=24)
    assert len(src) == 4 and src.skipped == 2  # no caption, unreadable shard
    caps = {src.get(i)["caption"] for i in range(4)}
    assert caps == set(PHOTOS.values())
    assert src.get(0)["image"].shape == (24, 24, 3)


def test_epochs_are_reshuffled_but_deterministic(folder):
    a, b = ImageFolderSource(folder, 16, seed=1), ImageFolderSource(folder, 16, seed=1)
    caps_a = [(s or {}).get("caption") for s in (a.get(i) for i in range(10))]
    caps_b = [(s or {}).get("caption") for s in (b.get(i) for i in range(10))]
    assert caps_a == caps_b
    assert sorted(map(str, caps_a[:5])) == sorted(map(str, caps_a[5:10]))  # each epoch sees all
    orders = [[(src.get(i) or {}).get("caption") for i in range(5)]
              for src in (ImageFolderSource(folder, 16, seed=s) for s in range(4))]
    assert len({tuple(map(str, o)) for o in orders}) > 1


def test_any_image_mode_becomes_rgb(tmp_path):
    rgba = Image.new("RGBA", (10, 20), (255, 0, 0, 0))
    for mode, img in {"RGBA": rgba, "L": Image.new("L", (7, 7), 90), "P": rgba.convert("P")}.items():
        path = tmp_path / f"x_{mode}.png"
        img.save(path)
        out = open_rgb(path)
        assert out.mode == "RGB"
    assert open_rgb(tmp_path / "x_RGBA.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert resize_center_crop(open_rgb(tmp_path / "x_RGBA.png"), 8).size == (8, 8)


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ImageFolderSource(tmp_path / "nope", 16)
    with pytest.raises(ValueError, match="no captioned images"):
        ImageFolderSource(tmp_path, 16)
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read image"):
        open_rgb(tmp_path / "x.png")


def test_upsampler_trains_on_a_folder_of_photographs(folder, tmp_path):
    from unclip.cli import main
    from unclip.pipelines.dalle2.pipeline import DalleTwoPipeline

    from .conftest import TINY

    out = tmp_path / "up"
    assert main(["train", "upsampler", "--config", str(TINY / "upsampler.yaml"), "--data.source=folder",
                 f"--data.path={folder}", f"--train.out_dir={out}"]) == 0
    up = DalleTwoPipeline.from_pretrained(out / "model").upsamplers[0]
    import torch

    assert up.sample(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 16, 16)
    from unclip.train.loop import read_log

    log = read_log(out)
    assert [r["skipped_at_index"] for r in log if "skipped_at_index" in r] == [2]  # no caption, empty caption
    seen = [r["skipped"] for r in log if "skipped" in r]
    assert seen and max(seen) == 1  # one unreadable file, counted once however often it comes round
