"""Training configs: the shipped YAML files load, unknown and renamed keys are named, overrides parse, and a config
saved by rasd 0.1 still reads."""
import json
import os

import pytest

from rasd_train.config import ConfigError, config_from_dict, load_config, parse_overrides

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(CONFIGS) if f.endswith(".yaml")))
def test_shipped_configs_load(name):
    cfg = load_config(os.path.join(CONFIGS, name))
    assert cfg.model.window_length > cfg.model.window_stride
    assert cfg.data.scheme == "military"


def test_renamed_keys_say_where_they_went():
    with pytest.raises(ConfigError, match="max_length is now model.window_length"):
        config_from_dict({"model": {"max_length": 128}})
    with pytest.raises(ConfigError, match="data_dir is now data.corpus"):
        config_from_dict({"train": {"data_dir": "x"}})


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  learning_rat: 1e-4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="learning_rat"):
        load_config(str(p))
    with pytest.raises(ConfigError, match="unknown section"):
        config_from_dict({"trian": {}})
    with pytest.raises(ConfigError, match="expected a number"):
        config_from_dict({"train": {"epochs": "many"}})


def test_rasd_train_names_a_bad_override_without_a_traceback(tiny_config_path):
    from rasd_train.train import main
    with pytest.raises(SystemExit, match="rasd train: --set expects section.key=value: 'nokey' is not key=value"):
        main([tiny_config_path, "--set", "nokey"])
    with pytest.raises(SystemExit, match="rasd train: .*unknown key.*bogus"):
        main([tiny_config_path, "--set", "train.bogus=1"])
    assert parse_overrides(["train.epochs=2", "model.crf=true", "x.y=a=b"], "--set") == \
        {"train.epochs": 2, "model.crf": True, "x.y": "a=b"}


def test_numbers_from_yaml_strings_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  learning_rate: 2e-4\n  epochs: 3\n", encoding="utf-8")
    cfg = load_config(str(p), {"train.batch_size": 2})
    assert cfg.train.learning_rate == pytest.approx(2e-4)
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 2


def test_config_of_rasd_0_1_still_loads(tmp_path):
    """A config.json saved before the scheme was data (label lists, no scheme) reads as the military scheme."""
    from rasd_train.modeling import RasdConfig
    old = RasdConfig(encoder_config={"model_type": "bert"}).to_dict()
    del old["scheme"]
    old.update(entity_labels=["BASE", "FORCE", "OPERATION", "LOCATION"], relation_labels=["WITHDREW_FROM", "HANDED_TO"],
               relation_types={"WITHDREW_FROM": [["FORCE"], ["BASE", "LOCATION"]],
                               "HANDED_TO": [["BASE", "LOCATION"], ["FORCE"]]})
    (tmp_path / "config.json").write_text(json.dumps(old), encoding="utf-8")
    spec = RasdConfig.from_pretrained(tmp_path).spec()
    assert spec.scheme.entities == ("BASE", "FORCE", "OPERATION", "LOCATION")
    assert spec.scheme.relation_allowed("HANDED_TO", "LOCATION", "FORCE")


def test_hub_copy_of_the_default_trains_the_default():
    """me5-small-hub.yaml is the default read from the Hub: only the encoder's source and the output folder differ."""
    default, hub = (load_config(os.path.join(CONFIGS, n)).to_dict() for n in ("me5-small.yaml", "me5-small-hub.yaml"))
    for cfg in (default, hub):
        cfg["train"].pop("output_dir")
    assert hub["model"] == default["model"] and hub["train"] == default["train"] and hub["data"] == default["data"]
    assert hub["encoder"]["keep_layers"] == default["encoder"]["keep_layers"]
