"""benchmarks/published_sizes.py's workers on tiny folders of every family: each side loads the
folders and draws, unclip's image equals diffusers' at float32, and the figures it reports are there
(the script is ready to run at the published sizes, on a CPU or a GPU)."""

import importlib.util
import json

import numpy as np
import pytest

from .conftest import ROOT


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("published_sizes", ROOT / "benchmarks" / "published_sizes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from unclip.pipelines.kandinsky.synthetic import (
        random_decoder,
        random_prior,
        write_decoder,
        write_prior,
    )
    from unclip.pipelines.karlo.synthetic import random_components as karlo
    from unclip.pipelines.karlo.synthetic import write_folder as write_karlo
    from unclip.pipelines.stable_unclip.synthetic import random_components as stable
    from unclip.pipelines.stable_unclip.synthetic import write_folder as write_stable

    root = tmp_path_factory.mktemp("families")
    write_prior(random_prior(seed=0), root / "prior")
    write_decoder(random_decoder(seed=1), root / "decoder")
    write_karlo(karlo(seed=3), root / "karlo")
    write_stable(stable(seed=0), root / "vit_h")
    return {name: str(root / name) for name in ("prior", "decoder", "karlo", "vit_h")}


@pytest.mark.parametrize("family,steps", [("kandinsky", dict(prior=2, decoder=2)),
                                          ("karlo", dict(prior=2, decoder=2, super_res=2)),
                                          ("stable_unclip", dict(decoder=2))])
def test_both_sides_draw_the_same_image(bench, folders, tmp_path, family, steps):
    images = {}
    for side in ("unclip", "diffusers"):
        job = dict(side=side, mode="none", family=family, folders=folders, dtype="float32", device="cpu",
                   steps=steps, calls=1, image=str(tmp_path / f"{side}.npy"))
        res = bench.worker(job)
        json.dumps(res)  # one JSON line per run
        for key in ("load_s", "load_peak_rss_gb", "weights_gb", "s_per_image", "peak_rss_gb"):
            assert res[key] > 0, key
        images[side] = np.load(job["image"])
    assert images["unclip"].shape == images["diffusers"].shape
    assert np.abs(images["unclip"] - images["diffusers"]).mean() * 255 < 1.0
