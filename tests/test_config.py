"""Configs: strict keys, types and values, YAML and TOML, dotted overrides."""

import pytest

from unclip.config import ConfigError, TrainConfig, from_dict, load
from unclip.train.clip import ClipStageConfig

from .conftest import ROOT


def test_every_preset_loads_with_its_stage_config():
    from unclip.config import read_file
    from unclip.train import stage_classes

    stages = ("prior_ar", "prior_eclipse", "clip", "prior", "decoder", "upsampler", "dvae", "dalle")  # by prefix
    paths = [p for p in sorted((ROOT / "configs").rglob("*.yaml")) if not p.stem.startswith("accelerate")]
    assert len(paths) > 10
    for path in paths:
        stage = next(s for s in stages if path.stem.startswith(s))
        kind = read_file(path).get("kind")  # a fine-tuning preset needs the folders it fine-tunes
        given = {"karlo": ["init=KARLO_DIR"], "kandinsky": ["init=DECODER_DIR", "prior_model=PRIOR_DIR"]}
        cfg = load(stage_classes(stage, kind)[0], path, given.get(kind, []))
        assert cfg.train.steps > 0, path


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError, match=r"train\.learning_rate.*valid keys.*lr"):
        from_dict(ClipStageConfig, {"train": {"learning_rate": 1e-3}})
    with pytest.raises(ConfigError, match=r"'modle'"):
        from_dict(ClipStageConfig, {"modle": {}})


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"train\.steps.*expected int"):
        from_dict(ClipStageConfig, {"train": {"steps": "many"}})
    with pytest.raises(ConfigError, match=r"train\.steps"):
        from_dict(ClipStageConfig, {"train": {"steps": 1.5}})
    with pytest.raises(ConfigError, match=r"train\.betas.*2 values"):
        from_dict(ClipStageConfig, {"train": {"betas": [0.9]}})
    with pytest.raises(ConfigError, match=r"data\.source.*one of"):
        from_dict(ClipStageConfig, {"data": {"source": "imagenet"}})
    with pytest.raises(ConfigError, match=r"model\.image_size.*expected int"):
        from_dict(ClipStageConfig, {"model": {"image_size": True}})


def test_impossible_values_name_the_key():
    with pytest.raises(ConfigError, match=r"train\.lr.*positive"):
        from_dict(ClipStageConfig, {"train": {"lr": -1.0}})
    with pytest.raises(ConfigError, match=r"train\.batch_size.*grad_accum"):
        from_dict(ClipStageConfig, {"train": {"batch_size": 10, "grad_accum": 3}})
    with pytest.raises(ConfigError, match=r"model\.image_size.*patch_size"):
        from_dict(ClipStageConfig, {"model": {"image_size": 30, "patch_size": 8}})
    with pytest.raises(ConfigError, match=r"data\.path.*required"):
        from_dict(ClipStageConfig, {"data": {"source": "folder"}})


def test_ints_are_accepted_for_floats_and_values_keep_their_type():
    cfg = from_dict(TrainConfig, {"lr": 1, "betas": [0.9, 0.95]})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.betas == (0.9, 0.95)


def test_yaml_toml_and_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  steps: 7\n  lr: 1.0e-3\n")
    (tmp_path / "a.toml").write_text("[train]\nsteps = 7\nlr = 1e-3\n")
    y = load(ClipStageConfig, tmp_path / "a.yaml", ["train.lr=5e-4", "model.embed_dim=32"])
    t = load(ClipStageConfig, tmp_path / "a.toml")
    assert (y.train.steps, y.train.lr, y.model.embed_dim) == (7, 5e-4, 32)
    assert (t.train.steps, t.train.lr) == (7, 1e-3)
    with pytest.raises(ConfigError, match="train.nope"):
        load(ClipStageConfig, tmp_path / "a.yaml", ["train.nope=1"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load(ClipStageConfig, None, ["train.lr"])


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load(ClipStageConfig, tmp_path / "missing.yaml")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ConfigError, match=".yaml, .yml or .toml"):
        load(ClipStageConfig, tmp_path / "c.json")
    (tmp_path / "l.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="table of keys"):
        load(ClipStageConfig, tmp_path / "l.yaml")


def test_yaml_booleans_do_not_swallow_words_in_overrides():
    cfg = load(ClipStageConfig, None, ["train.mixed_precision=fp32", "data.path=no", "data.hard_negatives=true"])
    assert cfg.train.mixed_precision == "fp32" and cfg.data.path == "no" and cfg.data.hard_negatives is True
    with pytest.raises(ConfigError, match=r"train\.mixed_precision.*one of"):
        load(ClipStageConfig, None, ["train.mixed_precision=no"])
