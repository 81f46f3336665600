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


@pytest.fixture(autouse=True)
def toolchain_present(monkeypatch):
    """Decisions above do not depend on this machine's compilers (tests below set them)."""
    monkeypatch.setattr("unclip.runtime.compiled.missing_toolchain", lambda device: None)


def test_without_a_compiler_auto_runs_eager_and_on_is_refused(monkeypatch):
    monkeypatch.setattr("unclip.runtime.compiled.missing_toolchain", lambda device: "no C compiler (install gcc)")
    for images in (LONG_JOB, 500, None):
        d = decide("auto", GPU, images=images, warm=True)
        assert d.backend is None and "no C compiler" in d.reason and "eager" in d.reason
    with pytest.raises(ValueError, match="--compile on cannot compile on cpu here: no C compiler.*--compile off"):
        decide("on", CPU, images=1, warm=True)
    assert decide("off", GPU, images=None).backend is None  # nothing to build: no question asked


def test_the_toolchain_is_read_from_the_machine(monkeypatch):
    import importlib.util

    import torch._inductor.cpp_builder as builder
    from torch._inductor.exc import InvalidCxxCompiler

    from unclip.runtime import compiled

    monkeypatch.undo()  # the real missing_toolchain, with the machine's parts replaced below
    monkeypatch.setattr(builder, "get_cpp_compiler", lambda: "g++")
    assert compiled.missing_toolchain(CPU) is None

    def no_compiler():
        raise InvalidCxxCompiler()
    monkeypatch.setattr(builder, "get_cpp_compiler", no_compiler)
    assert "no C++ compiler" in compiled.missing_toolchain(CPU)

    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert "Triton" in compiled.missing_toolchain(GPU)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    assert "no C compiler" in compiled.missing_toolchain(GPU)
    monkeypatch.setenv("CC", "/opt/cc")
    assert compiled.missing_toolchain(GPU) is None


def test_compile_on_without_a_compiler_is_a_clear_error(tmp_path):
    """The command line, end to end: inductor's own compiler setting ($CXX) names one that is not there."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CXX": str(tmp_path / "no-such-g++")}
    out = subprocess.run([sys.executable, "-m", "unclip", "generate", "a red circle on a white background",
                          "--compile", "on", "--device", "cpu", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "no C++ compiler" in out.stderr and "--compile off" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "out").exists()
