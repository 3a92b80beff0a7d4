"""`mixnode init` and the mix node's config: what it writes, what it refuses, and the messages."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from anonmail.core.keys import IdentityKey
from anonmail.errors import ConfigError
from mixnode.cli import main
from mixnode.config import load_mix_config

KEY = base64.b64encode(IdentityKey.generate().public).decode()


def init(tmp_path, *extra: str) -> int:
    return main(["init", "--dir", str(tmp_path / "mix"), "--name", "mix-a", "--layer", "2", *extra])


def test_init_writes_a_loadable_config_and_a_private_key(tmp_path, capsys):
    assert init(tmp_path, "--tcp-listen", "tcp://127.0.0.1:0", "--authority", f"tcp://127.0.0.1:7000={KEY}") == 0
    config = load_mix_config(tmp_path / "mix" / "mixnode.toml")
    assert (config.name, config.layer, config.test_mode, config.threshold) == ("mix-a", 2, True, 1)
    assert config.authorities[0].public_key == base64.b64decode(KEY)
    mode = stat.S_IMODE(os.stat(tmp_path / "mix" / "identity.key").st_mode)
    assert mode == 0o600
    assert "public key" in capsys.readouterr().out


def test_init_production_with_tor_and_i2p(tmp_path):
    with pytest.raises(SystemExit):
        main(["init", "--dir", str(tmp_path), "--name", "m", "--layer", "4"])
    # a production node refuses a tcp:// authority
    assert init(tmp_path, "--tor", "--i2p", "--authority", f"tcp://127.0.0.1:7000={KEY}") == 1
    from anonmail.core.uri import onion_address_from_key

    onion = f"onion://{onion_address_from_key(bytes(32))}:7000"
    assert init(tmp_path, "--tor", "--i2p", "--authority", f"{onion}={KEY}", "--force") == 0
    config = load_mix_config(tmp_path / "mix" / "mixnode.toml")
    assert config.production and config.tor.control_port == 9051 and config.i2p.sam_port == 7656


def test_init_refuses_to_overwrite(tmp_path, capsys):
    args = ("--tcp-listen", "tcp://127.0.0.1:0", "--authority", f"tcp://127.0.0.1:7000={KEY}")
    assert init(tmp_path, *args) == 0
    assert init(tmp_path, *args) == 1
    assert "--force" in capsys.readouterr().err


def write(tmp_path, text: str):
    path = tmp_path / "mixnode.toml"
    path.write_text(text)
    return path


BASE = f'''
[node]
name = "m1"
layer = 1
test_mode = true
[tcp]
listen = ["tcp://127.0.0.1:0"]
[directory]
[[directory.authority]]
address = "tcp://127.0.0.1:7000"
public_key = "{KEY}"
'''


@pytest.mark.parametrize(
    "change, message",
    [
        (("[node]", "[node]\ncolour = 1"), r"unknown key node\.colour"),
        (("layer = 1", "layer = 4"), r"node\.layer: must be <= 3"),
        (("test_mode = true", "test_mode = false"), r"tcp\.listen: the tcp transport is for tests only"),
        (('address = "tcp://127.0.0.1:7000"', 'address = "tcp://10.0.0.1:7000"'), r"directory\.authority\[0\]\.address: .*loopback"),
        ((f'public_key = "{KEY}"', 'public_key = "abc"'), r"public_key: is not valid base64"),
        (("[directory]", "[directory]\nthreshold = 2"), r"directory\.threshold: must be <= 1"),
        (("[tcp]", "[mixing]\nworkers = -1\n[tcp]"), r"mixing\.workers: must be >= 0"),
        (("[tcp]", "[tor]\ncontrol_port = 70000\n[tcp]"), r"tor\.control_port: must be <= 65535"),
        (("[tcp]", "[i2p]\nsam_prot = 1\n[tcp]"), r"unknown key i2p\.sam_prot"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, change, message):
    path = write(tmp_path, BASE.replace(*change))
    with pytest.raises(ConfigError, match=message) as info:
        load_mix_config(path)
    assert str(path) in str(info.value)


def test_config_needs_a_transport_and_authorities(tmp_path):
    with pytest.raises(ConfigError, match="at least one transport"):
        load_mix_config(write(tmp_path, BASE.replace('[tcp]\nlisten = ["tcp://127.0.0.1:0"]', "")))
    with pytest.raises(ConfigError, match=r"directory\.authority"):
        load_mix_config(write(tmp_path, BASE.split("[[directory.authority]]")[0]))
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_mix_config(write(tmp_path, "[node"))
    with pytest.raises(ConfigError, match="not found"):
        load_mix_config(tmp_path / "missing.toml")
