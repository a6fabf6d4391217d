import re
import warnings
from pathlib import Path

import pytest

from irnet_moana.config import (DEFAULTS, SETTINGS_DIR, ConfigError, load_config, parse_override,
                                reference_markdown, setting_names, setting_path, validate)

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_are_irnet_recipe():
    cfg = load_config(None)
    assert cfg["cam"]["scales"] == [1.0, 0.5, 1.5, 2.0]
    assert cfg["cam"]["bg_threshold"] == 0.15
    assert cfg["pseudo"]["beta"] == 10 and cfg["pseudo"]["exp_times"] == 8


@pytest.mark.parametrize("name", setting_names())
def test_shipped_configs_load(name):
    cfg = load_config(setting_path(name))
    assert cfg["name"]
    # a setting loads the same by name as by file, and its file is named after it
    assert load_config(name) == cfg and cfg["name"] == name


def test_defaults_pass_their_own_checks():
    validate(DEFAULTS)


def test_setting_by_name():
    assert setting_names() == sorted(["cub", "demo", "demo-wsol", "ilsvrc", "voc12", "voc12-moana"])
    assert setting_path("demo") == SETTINGS_DIR / "demo.yaml"
    cfg = load_config("demo", ["cam.lr=0.05"])
    assert cfg["cam"]["backbone"] == "resnet18" and cfg["cam"]["lr"] == 0.05


def test_unknown_setting_lists_the_settings():
    with pytest.raises(ConfigError, match="unknown setting 'vco12'; settings: cub, demo, demo-wsol, ilsvrc, voc12"):
        load_config("vco12")
    with pytest.raises(ConfigError, match="unknown setting"):
        setting_path("nope")


def test_file_paths_are_files_not_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("cam:\n  lr: 0.05\n")
    assert load_config("mine.yaml")["cam"]["lr"] == 0.05
    assert load_config(tmp_path / "mine.yaml")["cam"]["lr"] == 0.05
    with pytest.raises(ConfigError, match="does not exist.*demo-wsol.*irnet_moana.configs"):
        load_config("sub/demo.yaml")


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


@pytest.mark.parametrize("key", ["cam.weights", "deeplab.weights", "deeplab.labels", "maskrcnn.weights", "run_dir"])
def test_run_dir_paths_on_any_str_key(key):
    section, _, name = key.rpartition(".")
    cfg = load_config("demo", [f"{key}={{run_dir}}/cam/backbone.pth"])
    assert (cfg[section] if section else cfg)[name] == "{run_dir}/cam/backbone.pth"


def test_errors_name_the_key_and_the_source(tmp_path):
    with pytest.raises(ConfigError, match=r"override 'cam.backbone=resnet152': key 'cam.backbone' must be one of "
                                          r"\('resnet18', 'resnet34', 'resnet50', 'resnet101'\), got 'resnet152'"):
        load_config("demo", ["cam.backbone=resnet152"])
    path = write(tmp_path, "ir_label:\n  fg_threshold: 1.3\n")
    with pytest.raises(ConfigError,
                       match=rf"{re.escape(str(path))}: key 'ir_label.fg_threshold' must lie in \[0, 1\], got 1.3"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'maskrcnn.step_factor' must lie in \(0, 1\], got 0$"):
        load_config(None, ["maskrcnn.step_factor=0"])
    with pytest.raises(ConfigError, match="'irn.strides' must be four strides of 1 or 2"):
        load_config(None, ["irn.strides=[2, 2, 4, 1]"])
    with pytest.raises(ConfigError, match=r"'deeplab.scale_range' must be \[low, high\] with 0 < low <= high"):
        load_config(None, ["deeplab.scale_range=[1.5, 0.5]"])
    with pytest.raises(ConfigError, match="'deeplab.eval_scales' must be a non-empty list of positive scales"):
        load_config(None, ["deeplab.eval_scales=[]"])


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


def test_reference_doc_is_current():
    # docs/configuration.md is generated: after changing the schema, run python tools/config_reference.py
    assert (REPO / "docs" / "configuration.md").read_text() == reference_markdown()


def test_reference_lists_every_key():
    doc = reference_markdown()
    for section, value in DEFAULTS.items():
        for key in [f"{section}.{key}" for key in value] if isinstance(value, dict) else [section]:
            assert f"| `{key}` |" in doc, key
