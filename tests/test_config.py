from __future__ import annotations

import pytest

from diffnas.config import Config, load_config, parse_override
from diffnas.errors import ConfigError, UnknownNameError
from diffnas.registry import RELAXATIONS, SPACES


def test_preset_loads_with_paper_hyperparameters() -> None:
    cfg = load_config(["darts"])
    assert isinstance(cfg, Config)
    assert cfg.search.epochs == 50
    assert cfg.search.arch_lr == pytest.approx(3e-4)
    assert cfg.search.arch_betas == [0.5, 0.999]
    assert cfg.search.relaxation.name == "softmax"


def test_unknown_key_names_key_and_accepted_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(["darts"], ["search.epoch=3"])
    msg = str(err.value)
    assert "search.epoch" in msg and "did you mean 'epochs'" in msg and "arch_lr" in msg


def test_wrong_type_is_rejected_with_path() -> None:
    with pytest.raises(ConfigError, match="search.epochs: expected an integer"):
        load_config(["darts"], ["search.epochs=many"])


def test_unknown_part_name_suggests_close_match() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'softmax'"):
        load_config(["darts"], ["search.relaxation=softmx"])
    with pytest.raises(UnknownNameError, match="unknown space 'nb210'.*nb201"):
        load_config(["darts"], ["space.name=nb210"])


def test_part_params_are_checked_against_the_part() -> None:
    with pytest.raises(ConfigError, match="xi"):
        load_config(["darts"], ["search.updater={name: second_order, xii: 0.1}"])
    cfg = load_config(["darts"], ["search.updater={name: second_order, xi: 0.01}"])
    assert cfg.search.updater.params == {"xi": 0.01}


def test_overrides_parse_yaml_values() -> None:
    assert parse_override("search.arch_betas=[0.9, 0.99]") == {
        "search": {"arch_betas": [0.9, 0.99]}
    }
    cfg = load_config(["darts"], ["search.arch_lr=6e-4", "space.exclude_ops=[skip_connect]"])
    assert cfg.search.arch_lr == pytest.approx(6e-4)
    assert cfg.space.exclude_ops == ["skip_connect"]
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("epochs")


def test_layered_configs_merge_in_order(tmp_path) -> None:
    a = tmp_path / "a.yaml"
    a.write_text("search:\n  epochs: 7\ndata:\n  batch_size: 16\n")
    cfg = load_config(["darts", str(a)], ["data.batch_size=8"])
    assert cfg.search.epochs == 7 and cfg.data.batch_size == 8
    assert cfg.search.arch_lr == pytest.approx(3e-4)  # kept from the preset


def test_malformed_yaml_and_missing_files(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [epochs: 3\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([str(bad)])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([str(tmp_path / "nope.yaml")])
    with pytest.raises(ConfigError, match="neither a config file nor a preset"):
        load_config(["dartz"])


def test_registries_list_builtin_parts() -> None:
    assert {"darts", "nb201"} <= set(SPACES.names())
    assert "softmax" in RELAXATIONS.names()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.regularizers=[{name: admm, rho: -1}]", "admm: rho must be >= 0"),
        ("search.regularizers=[{name: prox, rho: -1}]", "prox: rho must be >= 0"),
        ("search.schedule={name: informed, multiplier: 0.5}", "multiplier must be > 1"),
    ],
)
def test_part_checks_in_init_fire_when_the_config_loads(override: str, message: str) -> None:
    """A part's own checks (in its __init__, beyond its Params' types) run at load time."""
    with pytest.raises(ConfigError, match=message):
        load_config(["darts"], [override])
