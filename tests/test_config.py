import warnings
from pathlib import Path

import pytest

from irnet_moana.config import ConfigError, load_config, parse_override

CONFIGS = Path(__file__).resolve().parents[1] / "pipelines" / "configs"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_are_irnet_recipe():
    cfg = load_config(None)
    assert cfg["cam"]["scales"] == [1.0, 0.5, 1.5, 2.0]
    assert cfg["cam"]["bg_threshold"] == 0.15
    assert cfg["pseudo"]["beta"] == 10 and cfg["pseudo"]["exp_times"] == 8


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg["name"]


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'cam.leraning_rate'"):
        load_config(write(tmp_path, "cam:\n  leraning_rate: 0.1\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match="'cam.batch_size' must be int"):
        load_config(write(tmp_path, "cam:\n  batch_size: sixteen\n"))


def test_impossible_values(tmp_path):
    with pytest.raises(ConfigError, match="'cam.lr' must be > 0"):
        load_config(None, ["cam.lr=-0.1"])
    with pytest.raises(ConfigError, match="'cam.crop_size' must be > 0"):
        load_config(None, ["cam.crop_size=0"])
    with pytest.raises(ConfigError, match="'cam.amp' must be one of"):
        load_config(None, ["cam.amp=fp8"])
    with pytest.raises(ConfigError, match="'cam.bg_threshold' must lie in"):
        load_config(None, ["cam.bg_threshold=1.5"])


def test_overrides_parse_yaml_values():
    cfg = load_config(None, ["cam.lr=0.05", "cam.moana=false", "cam.scales=[1.0, 0.5]", "seed=3"])
    assert cfg["cam"]["lr"] == 0.05 and cfg["cam"]["moana"] is False
    assert cfg["cam"]["scales"] == [1.0, 0.5] and cfg["seed"] == 3
    assert parse_override("a.b=") == ("a.b", "")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("cam.lr")


def test_string_keys_take_the_text_as_written():
    # '{run_dir}/...' is a YAML flow mapping and '2024' a YAML integer: both meant as strings here
    cfg = load_config(None, ["irn.weights={run_dir}/cam/backbone.pth", "data.root=2024", "cam.infer_list='a b'"])
    assert cfg["irn"]["weights"] == "{run_dir}/cam/backbone.pth"
    assert cfg["data"]["root"] == "2024" and cfg["cam"]["infer_list"] == "a b"


@pytest.mark.parametrize("section", ["cam", "deeplab"])
def test_random_weights_with_frozen_batchnorm_warn(section):
    with pytest.warns(UserWarning, match=f"{section}.weights=none with {section}.freeze_bn=true"):
        load_config(None, [f"{section}.weights=none"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(None, [f"{section}.weights=none", f"{section}.freeze_bn=false"])


def test_int_accepted_for_float_but_not_bool_for_int():
    assert load_config(None, ["cam.lr=1"])["cam"]["lr"] == 1.0
    with pytest.raises(ConfigError):
        load_config(None, ["cam.batch_size=true"])


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nope.yaml")
