"""`[params]` in an authority's TOML: the traffic parameters it votes (every key optional, checked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from anonmail.core.params import DEFAULT_PARAMS, NetworkParams
from anonmail.errors import ConfigError
from anonmail.testnet.plan import published_params
from anonmail.testnet.tomledit import set_toml_keys
from mixnode.authority import load_authority_config
from mixnode.cli import main

pytestmark = pytest.mark.unit


@pytest.fixture
def config(tmp_path, capsys) -> Path:
    """What `mixnode authority init` writes ([params] with every key commented out)."""
    directory = tmp_path / "auth"
    assert main(["authority", "init", "--dir", str(directory), "--listen", "tcp://127.0.0.1:0"]) == 0
    capsys.readouterr()
    path = directory / "authority.toml"
    text = path.read_text()
    assert "[params]" in text and "# max_delay = 30.0" in text
    return path


def test_defaults_are_todays_values(config):
    assert load_authority_config(config).params == DEFAULT_PARAMS


def test_keys_are_read(config):
    set_toml_keys(config, "params", {"lambda_payload": 4.0, "max_delay": 12.5, "fetch_batch": 16})
    params = load_authority_config(config).params
    assert params == NetworkParams(lambda_payload=4.0, max_delay=12.5, fetch_batch=16)


@pytest.mark.parametrize("key, value, needle", [
    ("lambda_payload", 0.0, "lambda_payload"),
    ("max_delay", -1.0, "max_delay"),
    ("fetch_batch", 1000, "fetch_batch"),
    ("delay_mean", 60.0, "delay_mean"),  # above max_delay
])
def test_bad_values_name_the_key(config, key, value, needle):
    set_toml_keys(config, "params", {key: value})
    with pytest.raises(ConfigError, match=needle):
        load_authority_config(config)


def test_unknown_key_is_an_error(config):
    set_toml_keys(config, "params", {"lambda_fast": 1.0})
    with pytest.raises(ConfigError, match="lambda_fast"):
        load_authority_config(config)


def test_the_process_testnet_publishes_its_users_rates(config):
    params = published_params(None, {"lambda_payload": 1.0, "delay_mean": 0.1, "ack_timeout": 9})
    assert params == NetworkParams(lambda_payload=1.0, delay_mean=0.1)
    set_toml_keys(config, "params", params.to_dict())
    assert load_authority_config(config).params == params
