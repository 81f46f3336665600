"""DALL-E 1: the dVAE and the transformer on tiny models."""

import math

import numpy as np
import pytest
import torch

from unclip.models.dalle1.dvae import DVAE, DVAEConfig
from unclip.models.dalle1.transformer import DalleConfig, DalleTransformer


def tiny_dvae():
    torch.manual_seed(0)
    return DVAE(image_size=16, codebook_size=32, code_dim=8, block_out_channels=(8, 16), norm_num_groups=4)


def test_dvae_codes_and_images_have_the_right_shapes(tmp_path):
    vae = tiny_dvae().eval()
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    codes = vae.encode(images)
    assert vae.grid == 8 and codes.shape == (3, 64) and codes.dtype == torch.int64
    assert 0 <= codes.min() and codes.max() < 32
    out = vae.decode(codes)
    assert out.shape == (3, 3, 16, 16)
    one_hot = torch.nn.functional.one_hot(codes.view(3, 8, 8), 32).permute(0, 3, 1, 2).float()
    assert torch.allclose(vae.decode_probs(one_hot), out, atol=1e-5)  # hard codes = one-hot probabilities
    vae.save_pretrained(tmp_path / "dvae")
    again = DVAE.from_pretrained(tmp_path / "dvae")
    assert torch.equal(again.encode(images), codes) and torch.allclose(again.decode(codes), out)


def test_dvae_training_lowers_the_reconstruction_error():
    vae = tiny_dvae()
    cfg = DVAEConfig(temperature_steps=60, kl_warmup_steps=30)
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(8, 3, 16, 16)
    for i in range(8):  # flat colours with a square, as the shapes world
        images[i] = torch.rand(3, 1, 1, generator=g) * 2 - 1
        images[i, :, 4:10, 4:10] = torch.rand(3, 1, 1, generator=g) * 2 - 1
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    torch.manual_seed(0)
    first = None
    for step in range(60):
        loss, parts = vae.loss(images, cfg.temperature(step), cfg.kl(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else parts["mse"].item()
    assert parts["mse"].item() < 0.5 * first
    assert 0 <= parts["kl"].item() <= math.log(32) + 1e-4


def test_temperature_and_kl_weight_follow_their_schedules():
    cfg = DVAEConfig(temperature_start=1.0, temperature_end=1 / 16, temperature_steps=100, kl_weight=2.0,
                     kl_warmup_steps=50)
    assert cfg.temperature(0) == 1.0 and cfg.temperature(100) == pytest.approx(1 / 16)
    assert cfg.temperature(50) == pytest.approx((1 + 1 / 16) / 2) and cfg.temperature(500) == pytest.approx(1 / 16)
    temps = [cfg.temperature(s) for s in range(0, 101, 10)]
    assert all(a > b for a, b in zip(temps, temps[1:]))
    assert cfg.kl(0) == 0.0 and cfg.kl(25) == pytest.approx(1.0) and cfg.kl(50) == cfg.kl(80) == 2.0


def tiny_transformer(**kw):
    torch.manual_seed(0)
    return DalleTransformer(DalleConfig(width=32, num_layers=2, num_heads=4, **kw), text_vocab=20, text_len=6,
                            image_vocab=16, image_len=9).eval()


def captions(b=3):
    ids = torch.randint(4, 20, (b, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(b, 6, dtype=torch.bool)
    mask[0, 3:] = False
    ids[~mask] = 0
    return ids, mask


def test_loss_weighs_image_codes_seven_eighths_and_ignores_padding():
    model = tiny_transformer()
    ids, mask = captions()
    codes = torch.randint(0, 16, (3, 9), generator=torch.Generator().manual_seed(2))
    loss, parts = model.loss(ids, mask, codes)
    assert loss.item() == pytest.approx((parts["text"] / 8 + parts["image"] * 7 / 8).item(), rel=1e-5)
    other = ids.clone()
    other[0, 4:] = 7  # a padded position's id is not read: the learned padding token is
    assert torch.allclose(model.loss(other, mask, codes)[0], loss)
    assert not torch.allclose(model.loss(ids, torch.ones_like(mask), codes)[0], loss)
    assert not torch.equal(model.embed_text(ids, mask)[0, 3], model.embed_text(ids, mask)[0, 4])  # per position


def test_cached_and_uncached_sampling_agree_under_a_seed():
    model = tiny_transformer()
    ids, mask = captions()
    gens = lambda: [torch.Generator().manual_seed(s) for s in range(3)]
    a = model.sample(ids, mask, generator=gens())
    b = model.sample(ids, mask, generator=gens(), use_cache=False)
    assert a.shape == (3, 9) and torch.equal(a, b)
    assert not torch.equal(a, model.sample(ids, mask, generator=[torch.Generator().manual_seed(s) for s in (7, 8, 9)]))


@pytest.fixture(scope="module")
def tiny_dalle(tiny_clip, tmp_path_factory):
    """A tiny DALL-E 1 folder trained through the CLI: dVAE, then transformer."""
    from unclip.cli import main

    from .conftest import TINY

    root = tmp_path_factory.mktemp("dalle")
    assert main(["train", "dvae", "--config", str(TINY / "dvae.yaml"), f"--train.out_dir={root / 'dvae'}"]) == 0
    assert main(["train", "dalle", "--config", str(TINY / "dalle.yaml"), f"--dvae={root / 'dvae' / 'model'}",
                 f"--clip={tiny_clip}", f"--train.out_dir={root / 'dalle'}"]) == 0
    return root


def test_training_writes_previews_and_a_model_folder(tiny_dalle):
    import json

    log = [json.loads(ln) for ln in (tiny_dalle / "dvae" / "log.jsonl").read_text().splitlines()]
    preview = [r["preview"] for r in log if "preview" in r][-1]
    assert preview["psnr"] > 0 and 1 <= preview["codes_used"] <= 16
    settings = json.loads((tiny_dalle / "dalle" / "model" / "dalle1.json").read_text())
    assert settings["kind"] == "dalle1" and settings["components"] == ["clip", "dvae", "transformer"]
    assert settings["transformer"]["rerank"] == 2


def test_training_can_start_from_a_dalle1_folder(tiny_dalle, tiny_clip):
    from unclip.config import load
    from unclip.pipelines.dalle1 import DalleOnePipeline
    from unclip.train.dalle1 import DalleStage, DalleStageConfig

    from .conftest import TINY

    model = tiny_dalle / "dalle" / "model"
    overrides = [f"dvae={tiny_dalle / 'dvae' / 'model'}", f"clip={tiny_clip}"]
    fresh = DalleStage(load(DalleStageConfig, TINY / "dalle.yaml", overrides + ["train.seed=5"]))
    stage = DalleStage(load(DalleStageConfig, TINY / "dalle.yaml", overrides + [f"init={model}", "train.seed=5"]))
    trained = DalleOnePipeline.from_pretrained(model).transformer.state_dict()
    state = stage.module.transformer.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.items())
    assert not torch.equal(fresh.module.transformer.image_head.weight, state["image_head.weight"])


def test_decoder_fine_tuning_keeps_the_codes_and_sharpens_the_images(tiny_dalle):
    from unclip.config import load
    from unclip.pipelines.dalle1 import DalleOnePipeline
    from unclip.train.dalle1 import DVAEStage, DVAEStageConfig, eval_renders

    from .conftest import TINY

    model = tiny_dalle / "dalle" / "model"
    stage = DVAEStage(load(DVAEStageConfig, TINY / "dvae.yaml", [f"init={model}", "model.freeze_encoder=true"]))
    vae = stage.module.dvae
    images = eval_renders(16, num=8)
    codes = vae.encode(images)
    before = torch.nn.functional.mse_loss(vae.decode(codes), images).item()
    trained = [p for p in stage.module.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in vae.encoder.parameters()) and trained
    opt = torch.optim.Adam(trained, lr=2e-3)
    for _ in range(30):
        loss = stage.module({"pixels": images})
        opt.zero_grad()
        loss.backward()
        opt.step()
    shipped = DalleOnePipeline.from_pretrained(model).dvae
    assert torch.equal(vae.encode(images), codes) and torch.equal(shipped.encode(images), codes)
    assert torch.nn.functional.mse_loss(vae.decode(codes), images).item() < 0.8 * before


def test_generate_with_a_dalle1_folder(tiny_dalle, tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from unclip.cli import main

    model = str(tiny_dalle / "dalle" / "model")
    out = tmp_path / "out"
    assert main(["generate", "a red circle", "a blue square", "--model", model, "--out", str(out), "--rerank", "3",
                 "--upscale", "bicubic", "--seed", "4"]) == 0
    records = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in records] == [4, 5] and records[0]["rerank"] == 3
    first = np.asarray(Image.open(out / records[0]["file"]))
    assert first.shape == (64, 64, 3)  # the dVAE's 16 px, times the model's scale (4)
    again = tmp_path / "again"  # image i depends on its own seed, not its batch
    assert main(["generate", "a red circle", "--model", model, "--out", str(again), "--rerank", "3",
                 "--upscale", "bicubic", "--seed", "4"]) == 0
    assert np.array_equal(np.asarray(Image.open(again / "00000.png")), first)


def test_assemble_gives_a_dalle1_folder_the_unclip_upsamplers(tiny_dalle, tiny_model, tmp_path):
    import json

    from unclip.cli import main
    from unclip.pipelines.dalle1 import DalleOnePipeline

    out = tmp_path / "both"
    # the tiny unCLIP model's cascade (8 -> 16 -> 32 px) on the tiny dVAE's 16 px images
    assert main(["assemble", str(tiny_dalle / "dalle" / "model"), str(tiny_model), "--out", str(out), "--fp16"]) == 0
    settings = json.loads((out / "dalle1.json").read_text())
    assert settings["components"] == ["clip", "dvae", "transformer", "upsampler1", "upsampler2"]
    assert settings["scale"] == 4 and "prior" not in settings
    pipe = DalleOnePipeline.from_pretrained(out)
    assert pipe.transformer.text_in.weight.dtype == torch.float32  # stored fp16, loaded as fp32
    gens = [torch.Generator().manual_seed(0)]
    up = pipe("a red circle", generator=gens, rerank=2, output_type="np").images
    bicubic = pipe("a red circle", generator=[torch.Generator().manual_seed(0)], rerank=2, upscale="bicubic",
                   output_type="np").images
    assert up.shape == bicubic.shape == (1, 64, 64, 3) and not np.allclose(up, bicubic)
    with pytest.raises(ValueError, match="the upsamplers scale by 4, the model by 2"):
        DalleOnePipeline(pipe.clip, pipe.dvae, pipe.transformer, pipe.upsamplers, scale=2)

    # a 32 px judge sees the candidates after the first upsampler (16 -> 32 px); the images are
    # the same however many candidates it takes a call
    import unclip.pipelines.rerank
    from unclip.models.clip import ClipConfig, ClipEncoder

    torch.manual_seed(0)
    pipe.reranker = ClipEncoder.from_config(ClipConfig(
        image_size=32, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2, text_width=32,
        text_layers=1, text_heads=2, max_length=pipe.clip.max_length, embed_dim=16), pipe.clip.tokenizer).eval()
    assert unclip.pipelines.rerank.judged_after(16, pipe.upsamplers, pipe.judge) == 1

    def draw():
        return pipe(["a red circle", "a blue square"], generator=[torch.Generator().manual_seed(s) for s in (1, 2)],
                    rerank=2, output_type="np").images

    together = draw()
    unclip.pipelines.rerank.CPU_CANDIDATES, default = 2, unclip.pipelines.rerank.CPU_CANDIDATES
    try:
        assert np.abs(draw() - together).max() < 1e-4
    finally:
        unclip.pipelines.rerank.CPU_CANDIDATES = default


def test_rerank_keeps_the_candidate_clip_scores_highest(tiny_dalle):
    from unclip.pipelines.dalle1 import DalleOnePipeline

    pipe = DalleOnePipeline.from_pretrained(tiny_dalle / "dalle" / "model")
    candidates = torch.rand(6, 3, 16, 16) * 2 - 1
    best, scores = pipe.rerank(candidates, ["a red circle", "a green star"], 3)
    assert scores.shape == (2, 3)
    for i in range(2):
        assert torch.equal(best[i], candidates[3 * i + int(scores[i].argmax())])


def test_a_reranker_clip_scores_in_place_of_the_folders_own(tiny_dalle, tiny_clip, tmp_path):
    import json

    from unclip.cli import main
    from unclip.models.clip import ClipEncoder
    from unclip.pipelines.dalle1 import DalleOnePipeline
    from unclip.pipelines.rerank import best_of

    other = ClipEncoder.from_pretrained(tiny_clip)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1.0)  # a CLIP that disagrees with the folder's
    other.save_pretrained(tmp_path / "clip")
    out = tmp_path / "m"
    assert main(["assemble", str(tiny_dalle / "dalle" / "model"), "--out", str(out), "--reranker",
                 str(tmp_path / "clip"), "--rerank", "3"]) == 0
    settings = json.loads((out / "dalle1.json").read_text())
    assert settings["components"] == ["clip", "dvae", "transformer", "reranker"]
    assert settings["transformer"]["rerank"] == 3
    pipe = DalleOnePipeline.from_pretrained(out)
    candidates = torch.rand(6, 3, 16, 16) * 2 - 1
    prompts = ["a red circle", "a green star"]
    best, scores = pipe.rerank(candidates, prompts, 3)
    idx, by_reranker = best_of(pipe.reranker, candidates, prompts, 3)
    assert torch.equal(scores, by_reranker) and torch.equal(best, candidates[idx])
    assert not torch.equal(scores, best_of(pipe.clip, candidates, prompts, 3)[1])


def test_clip_latent_commands_refuse_a_dalle1_folder(tiny_dalle, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from unclip.cli import main

    model = str(tiny_dalle / "dalle" / "model")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    for command in (["vary", str(tmp_path / "a.png")], ["interpolate", str(tmp_path / "a.png"), str(tmp_path / "a.png")],
                    ["edit", str(tmp_path / "a.png"), "--to", "a blue square"]):
        assert main([*command, "--model", model, "--out", str(tmp_path / command[0])]) == 2
        assert "DALL-E 1 model does not have" in capsys.readouterr().err
    assert main(["generate", "a red circle", "--model", model, "--out", str(tmp_path / "g"), "--prior", "ar"]) == 2
    assert "--prior is not a setting of this DALL-E 1 model" in capsys.readouterr().err
    assert main(["serve", "--model", model]) == 2
    assert "is a DALL-E 1 model; the web app serves unCLIP and Karlo models" in capsys.readouterr().err


def test_eval_shapes_scores_a_dalle1_folder_with_its_settings(tiny_dalle, tmp_path):
    import json

    from unclip.cli import main

    out = tmp_path / "rep"
    assert main(["eval", "shapes", "--model", str(tiny_dalle / "dalle" / "model"), "--num", "2", "--rerank", "2",
                 "--upscale", "bicubic", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    ind = report["in_distribution"]
    assert ind["single"]["images"] + ind["two"]["images"] == 2 and (out / "grid.png").is_file()


def test_dalle1_settings_on_an_unclip_model_are_clear_errors(tiny_model, tmp_path, capsys):
    from unclip.cli import main

    assert main(["eval", "shapes", "--model", str(tiny_model), "--num", "2", "--upscale", "bicubic",
                 "--out", str(tmp_path / "e")]) == 2
    assert "--upscale is not a setting of this unclip model" in capsys.readouterr().err

    assert main(["generate", "a red circle", "--model", str(tiny_model), "--out", str(tmp_path / "h"),
                 "--rerank", "0"]) == 2
    assert "rerank (--rerank) must be at least 1" in capsys.readouterr().err


@pytest.mark.shipped
def test_the_shipped_dalle1_model_loads_by_name_and_draws():
    from unclip import load_pipeline

    pipe = load_pipeline("dalle1")
    assert pipe.kind == "dalle1" and pipe.scale == 4 and len(pipe.upsamplers) == 2
    gens = [torch.Generator().manual_seed(0)]
    images = pipe("a large red circle on the left on a white background", generator=gens, rerank=1,
                  upscale="bicubic", output_type="uint8").images
    assert images.shape == (1, 128, 128, 3)
    left, right = images[0, 40:88, 10:60].astype(int), images[0, 40:88, 70:120].astype(int)
    # a red object on the left half, the white background on the right
    assert (left[..., 0] - left[..., 1] > 100).mean() > 0.2 and (right.min(-1) > 200).mean() > 0.9
