"""Inpainting: the kept region stays the input's, the repainted one follows the caption, bad
masks are clear errors; for unclip's own models and Karlo's folders, from the API and the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from unclip import DalleTwoPipeline, KarloPipeline, load_pipeline
from unclip.cli import main
from unclip.data import shapes
from unclip.pipelines.inpaint import Region
from unclip.pipelines.karlo.synthetic import random_components, write_folder

FAST = {"decoder_num_inference_steps": 3, "super_res_num_inference_steps": 2}


def picture(side=48):
    scene = [it.scene for it in shapes.eval_split(20) if len(it.scene.objects) == 2][0]
    return shapes.render(scene, side)


def top_half(side=48):
    mask = np.zeros((side, side), np.uint8)
    mask[: side // 2] = 255
    return mask


def test_the_kept_region_is_the_input_and_the_rest_is_drawn(tiny_model):
    pipe = load_pipeline(tiny_model)
    image = picture(32)  # the tiny model's output size
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out = pipe.inpaint(image, top_half(32), "a red circle", num_images_per_prompt=2, generator=gens,
                       output_type="uint8", rerank=1, **FAST)
    assert out.images.shape == (2, 32, 32, 3) and out.image_embeds.shape[0] == 2
    assert np.array_equal(out.images[:, 16:], np.broadcast_to(image[16:], (2, 16, 32, 3)))
    assert np.abs(out.images[:, :16].astype(int) - image[:16]).mean() > 5  # drawn anew, not copied
    again = pipe.inpaint(image, top_half(32), "a red circle", num_images_per_prompt=2, output_type="uint8", rerank=1,
                         generator=[torch.Generator().manual_seed(i) for i in range(2)], **FAST)
    assert np.array_equal(again.images, out.images)  # a seed repeats


def test_resampling_and_reranking_run_and_change_the_result(tiny_model):
    pipe = load_pipeline(tiny_model)
    image, mask = picture(40), top_half(20)  # any sizes: the mask is resized to the image
    runs = [pipe.inpaint(image, mask, "a blue square", generator=torch.Generator().manual_seed(0), output_type="uint8",
                         resample=r, rerank=k, **FAST).images for r, k in ((1, 1), (3, 1), (1, 3))]
    assert runs[0].shape == (1, 32, 32, 3)
    assert not np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])
    assert all(np.array_equal(r[0, 16:], runs[0][0, 16:]) for r in runs)


def test_karlo_folders_inpaint_with_their_own_samplers(tmp_path):
    pipe = KarloPipeline.from_pretrained(write_folder(random_components(seed=0), tmp_path / "karlo"))
    image = picture(32)
    out = pipe.inpaint(image, top_half(32), "a red horse", generator=torch.Generator().manual_seed(0),
                       output_type="uint8", prior_num_inference_steps=2, decoder_num_inference_steps=3,
                       super_res_num_inference_steps=2, resample=2)
    assert out.images.shape == (1, 32, 32, 3)
    assert np.array_equal(out.images[0, 16:], image[16:])
    assert pipe.capabilities.inpainting


@pytest.mark.parametrize("mask, words", [
    (np.zeros((8, 8), np.uint8), "empty"),
    (np.full((8, 8), 255, np.uint8), "whole image"),
    (np.zeros((8, 8), np.float32), "mask_image"),
])
def test_bad_masks_are_clear_errors(mask, words):
    with pytest.raises(ValueError, match=words):
        Region(picture(), mask)


def test_the_cli_writes_images_a_strip_and_a_manifest(tiny_model, tmp_path, capsys):
    Image.fromarray(picture(64)).save(tmp_path / "in.png")
    Image.fromarray(top_half(16)).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    args = ["inpaint", str(tmp_path / "in.png"), "a red circle", "--mask", str(tmp_path / "mask.png"),
            "--model", str(tiny_model), "--steps", "decoder=3", "upsampler=2", "--num-images", "2", "--rerank", "1",
            "--out", str(out)]
    assert main(args) == 0
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in lines] == [0, 1] and (out / "strip.png").is_file()
    Image.new("L", (9, 9), 0).save(tmp_path / "black.png")
    assert main([*args[:4], str(tmp_path / "black.png"), *args[5:-1], str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "mask is empty" in err and "Traceback" not in err and not (tmp_path / "o2").exists()
    assert main([*args[:-1], str(tmp_path / "o3"), "--resample", "0"]) == 2
    assert "--resample" in capsys.readouterr().err


def test_a_dalle1_model_refuses_inpainting_with_the_reason(tmp_path, capsys):
    Image.fromarray(picture(32)).save(tmp_path / "in.png")
    Image.fromarray(top_half(32)).save(tmp_path / "mask.png")
    assert main(["inpaint", str(tmp_path / "in.png"), "a red circle", "--mask", str(tmp_path / "mask.png"),
                 "--model", "dalle1", "--out", str(tmp_path / "o")]) == 2
    assert "DALL-E 1 model does not have" in capsys.readouterr().err


@pytest.mark.shipped
def test_the_repainted_region_follows_the_caption():
    """The shipped model: one object of two masked out, the caption asks for another in its place."""
    from unclip.tasks.evaluate.inpaint_eval import make_case, score_case

    pipe = load_pipeline()
    cases = [make_case(item) for item in shapes.eval_split(40) if len(item.scene.objects) == 2][:3]
    right = 0
    for i, case in enumerate(cases):
        out = pipe.inpaint(case.image, case.mask, case.caption, generator=torch.Generator().manual_seed(i),
                           output_type="uint8", rerank=2)
        right += score_case(out.images[0], case)["right"]
    assert right >= 2


def test_probe_pca_decodes_each_k_from_one_noise(tiny_model, tmp_path, monkeypatch):
    from unclip.tasks import probe

    monkeypatch.setenv("UNCLIP_CACHE", str(tmp_path / "cache"))  # its own cache: the suite's dtype pin is not here
    pipe = load_pipeline(tiny_model, torch_dtype=torch.float32)  # so every machine computes the same
    images = [shapes.render(it.scene, 16) for it in shapes.eval_split(30)]
    pca = probe.cached_fit(pipe, images, "test")
    assert pca["components"].shape[1] == 16 and (pca["variance"][:-1] >= pca["variance"][1:]).all()
    z = pipe.embed_images([images[0]])
    assert torch.allclose(probe.project(z, pca, 16), z, atol=1e-4)  # every component: the embedding itself
    assert not torch.allclose(probe.project(z, pca, 1), z, atol=1e-2)
    assert list((tmp_path / "cache" / "pca").glob("*-test.safetensors"))  # cached for the next call
    frames = probe.probe_pca(pipe, images[0], [1, 4, 16], pca, steps=3)
    assert frames.shape == (3, 32, 32, 3) and not np.array_equal(frames[0], frames[2])
    with pytest.raises(ValueError, match="principal components"):
        probe.probe_pca(pipe, images[0], [99], pca, steps=3)
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    out = tmp_path / "probe"
    assert main(["probe", "pca", str(tmp_path / "a.png"), "--model", str(tiny_model), "--dims", "1", "4",
                 "--steps", "3", "--fit-images", str(tmp_path), "--dtype", "float32", "--out", str(out)]) == 2  # one image: too few
    for i, im in enumerate(images[:4]):
        Image.fromarray(im).save(tmp_path / f"fit{i}.png")
    assert main(["probe", "pca", str(tmp_path / "a.png"), "--model", str(tiny_model), "--dims", "1", "4",
                 "--steps", "3", "--fit-images", str(tmp_path), "--dtype", "float32", "--out", str(out)]) == 0
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["dims"] for r in lines] == [1, 4] and (out / "strip.png").is_file()
