"""One contract for every pipeline (unclip.pipelines.base): loading by folder, devices and dtypes as torch
takes them, capabilities instead of kinds, and every tensor a pipeline makes on its device.

No GPU here: the device plumbing is checked on PyTorch's "meta" device, where a tensor made on
the CPU and mixed with the pipeline's is an error, as it would be on a GPU."""

import numpy as np
import pytest
import torch

from unclip import Capabilities, DalleTwoPipeline, KarloPipeline, load_pipeline, resolve_device
from unclip.cli import main
from unclip.pipelines.karlo.synthetic import random_components, write_folder

PROMPT = "a red circle"


@pytest.fixture(scope="module")
def karlo_folder(tmp_path_factory):
    return write_folder(random_components(seed=0), tmp_path_factory.mktemp("karlo"))


def test_the_registry_loads_each_kind_of_folder_with_one_call(tiny_model, karlo_folder):
    for path, cls in ((tiny_model, DalleTwoPipeline), (karlo_folder, KarloPipeline)):
        pipe = load_pipeline(path, device="cpu")
        assert type(pipe) is cls and pipe.device == torch.device("cpu") and pipe.dtype == torch.float32
        assert isinstance(pipe.capabilities, Capabilities) and pipe.capabilities.text_to_image
    dalle = load_pipeline("dalle1")
    caps = dalle.capabilities
    assert caps.text_to_image and caps.reranking and not caps.inversion and caps.priors == ()
    assert dalle("a red circle", rerank=1, output_type="np", generator=torch.Generator().manual_seed(0)).image_embeds \
        is None


@pytest.mark.parametrize("args, kwargs, dtype", [
    ((torch.bfloat16,), {}, torch.bfloat16),
    (("cpu", torch.float16), {}, torch.float16),
    (("cpu",), {}, torch.float32),
    ((), {"dtype": torch.bfloat16}, torch.bfloat16),
    ((), {"device": "cpu", "dtype": torch.float16}, torch.float16),
])
def test_to_takes_what_torch_takes(tiny_model, args, kwargs, dtype):
    pipe = load_pipeline(tiny_model)
    assert pipe.to(*args, **kwargs) is pipe
    assert pipe.device == torch.device("cpu") and pipe.dtype == dtype
    assert {p.dtype for _, net in pipe.networks() for p in net.parameters()} == {dtype}


def test_from_pretrained_takes_dtype_and_device(tiny_model, karlo_folder):
    pipe = DalleTwoPipeline.from_pretrained(tiny_model, torch_dtype=torch.bfloat16, device="cpu")
    assert pipe.dtype == torch.bfloat16 and pipe.device.type == "cpu"
    karlo = KarloPipeline.from_pretrained(karlo_folder, torch_dtype=torch.bfloat16)
    assert karlo.dtype == torch.bfloat16
    assert load_pipeline(tiny_model, torch_dtype="float32").dtype == torch.float32


def test_every_tensor_follows_the_device(tiny_model, karlo_folder):
    """On the meta device a CPU-made tensor among the pipeline's is an error. What runs there:
    conditioning, embedding images and captions, the decoder's input and a decoder call
    (diffusers' schedulers look timesteps up by value, which meta tensors cannot do: the whole
    sampling loops are checked on a GPU by benchmarks/gpu_check.py)."""
    pipe = load_pipeline(tiny_model).to("meta")
    assert pipe.device.type == "meta"
    picture = np.zeros((20, 30, 3), np.uint8)
    assert pipe.decoder_input(picture).device.type == "meta"
    z = pipe.embed_images([picture])
    assert z.device.type == "meta" and pipe.embed_captions([PROMPT]).device.type == "meta"
    for prior in ("text", "none"):
        assert pipe.image_embeds([PROMPT, "a blue square"], prior=prior).device.type == "meta"
    x = torch.zeros(1, 3, 8, 8, device="meta")
    t = torch.zeros(1, dtype=torch.long, device="meta")
    assert pipe.decoder.denoise(x, t, pipe._decoder_cond(z, [PROMPT])).device.type == "meta"
    karlo = KarloPipeline.from_pretrained(karlo_folder).to("meta")
    assert karlo.decoder_input(picture).device.type == "meta"
    assert karlo.embed_captions([PROMPT]).device.type == "meta"


def test_a_device_this_machine_lacks_is_a_clear_error(tiny_model, tmp_path, capsys):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    for bad, words in (("cuda:99", "cuda"), ("tpu", "expected auto, cpu, cuda")):
        if bad.startswith("cuda") and torch.cuda.device_count() > 99:
            continue
        with pytest.raises(ValueError, match=words):
            resolve_device(bad)
    if torch.cuda.is_available():
        return
    out = tmp_path / "o"
    assert main(["generate", PROMPT, "--model", str(tiny_model), "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "Traceback" not in err and not out.exists()
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["vary", str(tmp_path / "a.png"), "--model", str(tiny_model), "--device", "cuda:1",
                 "--out", str(out)]) == 2
    assert "--device cuda:1" in capsys.readouterr().err


def test_settings_a_pipeline_does_not_take_are_refused_by_capability(tiny_model, karlo_folder):
    ours, karlo = load_pipeline(tiny_model), load_pipeline(karlo_folder)
    assert ours.check_settings(rerank=2, prior="ar", upscale=None) == {"rerank": 2, "prior": "ar"}
    with pytest.raises(ValueError, match="--rerank is not a setting of this Karlo model"):
        karlo.check_settings(rerank=2)
    with pytest.raises(ValueError, match="prior 'ar': this Karlo model has diffusion"):
        karlo.check_settings(prior="ar")
    assert karlo.capabilities.priors == ("diffusion",) and not karlo.capabilities.reads_images


def test_karlo_save_pretrained_round_trips(karlo_folder, tmp_path):
    pipe = KarloPipeline.from_pretrained(karlo_folder)
    pipe.save_pretrained(tmp_path / "again")
    again = KarloPipeline.from_pretrained(tmp_path / "again")
    kw = dict(prior_num_inference_steps=2, decoder_num_inference_steps=2, super_res_num_inference_steps=2,
              output_type="np")
    a = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **kw).images
    b = again(PROMPT, generator=torch.Generator().manual_seed(0), **kw).images
    assert np.array_equal(a, b)


def test_the_package_exports_the_api():
    import unclip

    assert callable(unclip.load_pipeline) and unclip.DalleTwoPipeline.__name__ != "UnCLIPPipeline"
    with pytest.raises(AttributeError):
        unclip.nothing_here  # noqa: B018
