"""`--compile auto` compiles only what the job repays: decided by the device, the job's size and
whether inductor's cache already holds kernels; nothing here compiles."""

import pytest
import torch

from unclip.runtime.compiled import LONG_JOB, LONG_JOB_WARM, backend, decide

CPU, GPU = torch.device("cpu"), torch.device("cuda")


def test_short_jobs_run_eager_on_a_gpu_long_ones_compile():
    assert decide("auto", GPU, images=2, warm=False).backend is None  # the first `unclip generate`
    assert decide("auto", GPU, images=LONG_JOB - 1, warm=False).backend is None
    assert decide("auto", GPU, images=LONG_JOB, warm=False).backend == "inductor"
    assert decide("auto", GPU, images=500, warm=False).backend == "inductor"  # eval shapes
    assert decide("auto", GPU, images=None, warm=False).backend == "inductor"  # serve


def test_a_warm_cache_lowers_the_bar():
    assert decide("auto", GPU, images=LONG_JOB_WARM, warm=False).backend is None
    assert decide("auto", GPU, images=LONG_JOB_WARM, warm=True).backend == "inductor"
    assert "cached" in decide("auto", GPU, images=LONG_JOB_WARM, warm=True).reason
    assert "1-2 min" in decide("auto", GPU, images=500, warm=False).reason


def test_the_cpu_stays_eager_unless_asked():
    for images in (1, 500, None):
        assert decide("auto", CPU, torch.bfloat16, images=images, warm=True).backend is None
    assert decide("on", CPU, images=1, warm=False).backend == "inductor"
    assert decide("off", GPU, images=None, warm=True).backend is None
    assert backend(True, CPU) == "inductor" and backend(False, GPU) is None


def test_each_decision_says_why():
    d = decide("auto", GPU, images=2, warm=False)
    assert "2 images" in d.reason and "eager" in d.reason
    assert "serve" in decide("auto", GPU, images=None, warm=True).reason


def test_a_bad_setting_is_refused():
    with pytest.raises(ValueError, match="compile .* must be one of auto, on, off, onnx"):
        decide("yes", CPU)


def test_the_cache_is_warm_once_it_holds_kernels(tmp_path, monkeypatch):
    from unclip.runtime.compiled import cache_is_warm

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    assert not cache_is_warm()
    (tmp_path / "inductor" / "ab").mkdir(parents=True)
    (tmp_path / "inductor" / "ab" / "kernel.py").write_text("# a kernel")
    assert cache_is_warm()
