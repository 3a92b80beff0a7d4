"""`bootstrap_nodes` in an authority's TOML: the first consensus waits for this many nodes (test networks)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from anonmail.errors import ConfigError
from mixnode.authority import load_authority_config
from mixnode.cli import main

pytestmark = pytest.mark.unit

COMMENTED = re.compile(r"^# bootstrap_nodes = 0 .*$", re.MULTILINE)


@pytest.fixture
def config(tmp_path, capsys) -> Path:
    """What `mixnode authority init` writes (the key is commented out there)."""
    directory = tmp_path / "auth"
    assert main(["authority", "init", "--dir", str(directory), "--listen", "tcp://127.0.0.1:0"]) == 0
    capsys.readouterr()
    path = directory / "authority.toml"
    assert len(COMMENTED.findall(path.read_text())) == 1
    return path


def set_bootstrap(path: Path, value: str) -> None:
    """Uncomment the line and give it a value, as an operator would."""
    text, count = COMMENTED.subn(f"bootstrap_nodes = {value}", path.read_text())
    assert count == 1
    path.write_text(text)


def test_default_is_zero(config):
    assert load_authority_config(config).bootstrap_nodes == 0


@pytest.mark.parametrize("value", [5, 0, 40])
def test_bootstrap_nodes_loads(config, value):
    set_bootstrap(config, str(value))
    loaded = load_authority_config(config)
    assert loaded.bootstrap_nodes == value
    assert loaded.listen == ("tcp://127.0.0.1:0",) and loaded.test_mode  # the rest still loads as before


@pytest.mark.parametrize(
    "value, problem",
    [("-1", "must be >= 0"), ('"five"', "five"), ("true", "bootstrap_nodes"), ("2.5", "bootstrap_nodes")],
)
def test_bad_bootstrap_nodes_is_a_config_error_naming_the_key(config, value, problem):
    set_bootstrap(config, value)
    with pytest.raises(ConfigError, match=r"bootstrap_nodes") as exc:
        load_authority_config(config)
    assert str(config) in str(exc.value)
    assert problem in str(exc.value)


def test_authority_commands_refuse_a_negative_value(config, capsys):
    # `status` loads the config like `run` does, without starting a server if the check regressed.
    assert main(["authority", "status", "--config", str(config)]) == 3  # valid, not running
    capsys.readouterr()
    set_bootstrap(config, "-3")
    assert main(["authority", "status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "bootstrap_nodes" in err and "-3" in err


def test_a_node_whose_every_transport_is_connect_only_is_refused(tmp_path, capsys):
    import base64

    from anonmail.net.tor import create_onion_key
    from anonmail.testnet.tomledit import set_toml_keys
    from mixnode.config import load_mix_config

    pin = f"{create_onion_key(tmp_path / 'authority-key')}={base64.b64encode(bytes(32)).decode()}"
    auth = tmp_path / "auth"
    assert main(["authority", "init", "--dir", str(auth), "--tor"]) == 0
    mix = tmp_path / "mix"
    assert main(["init", "--dir", str(mix), "--name", "m1", "--layer", "1", "--tor", "--authority", pin,
                 "--threshold", "1"]) == 0
    load_mix_config(mix / "mixnode.toml")  # serves over tor: fine
    load_authority_config(auth / "authority.toml")
    set_toml_keys(mix / "mixnode.toml", "tor", {"serve": False})
    set_toml_keys(auth / "authority.toml", "tor", {"serve": False})
    with pytest.raises(ConfigError, match="no transport serves"):
        load_mix_config(mix / "mixnode.toml")
    with pytest.raises(ConfigError, match="no transport serves"):
        load_authority_config(auth / "authority.toml")
