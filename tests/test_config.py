import pytest

from genforge.config import RunConfig, apply_overrides, parse_value
from genforge.errors import ConfigError


def test_yaml_round_trip():
    cfg = RunConfig.from_dict({"family": "vae", "train": {"steps": 7, "betas": [0.5, 0.9]}, "model": {"latent_dim": 4}})
    again = RunConfig.from_dict(__import__("yaml").safe_load(cfg.to_yaml()))
    assert again == cfg
    assert again.train.betas == (0.5, 0.9)


def test_overrides_parse_yaml_scalars():
    d = apply_overrides({"family": "gan"}, ["train.lr=3e-4", "model.channels=[1, 2]", "data.source=digits", "train.compile=true"])
    assert d["train"] == {"lr": 3e-4, "compile": True}
    assert d["model"] == {"channels": [1, 2]}
    assert parse_value("abc") == "abc" and parse_value("null") is None


@pytest.mark.parametrize("bad", ["train.lr", "lr=1", "optim.lr=1"])
def test_bad_overrides_are_named(bad):
    with pytest.raises(ConfigError):
        apply_overrides({}, [bad])


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match="unknown train option.*stepz"):
        RunConfig.from_dict({"family": "vae", "train": {"stepz": 1}})
