"""Provider config files: defaults, strictness, errors naming the file and key."""

from __future__ import annotations

import base64

import pytest

from anonmail.core.uri import onion_address_from_key
from anonmail.errors import ConfigError
from anonmail.provider.config import (
    DEFAULT_FETCH_BATCH,
    DEFAULT_QUOTA_BYTES,
    DEFAULT_SEND_BURST,
    DEFAULT_SEND_RATE,
    load_provider_config,
    render_provider_config,
)

KEY = base64.b64encode(bytes(range(32))).decode()


def write(tmp_path, text):
    path = tmp_path / "provider.toml"
    path.write_text(text)
    return path


def rendered(**kw):
    args = dict(name="alpha", authorities=[("tcp://127.0.0.1:7001", KEY)], threshold=1, test_mode=True,
                tcp_listen="tcp://127.0.0.1:0")
    args.update(kw)
    return render_provider_config(**args)


def test_rendered_config_loads_with_defaults(tmp_path):
    config = load_provider_config(write(tmp_path, rendered()))
    assert config.name == "alpha" and config.layer == 0 and config.test_mode
    assert config.data_dir == tmp_path
    assert config.fetch_batch == DEFAULT_FETCH_BATCH == 32
    assert config.quota_bytes == DEFAULT_QUOTA_BYTES == 64 * 1024 * 1024
    assert (config.send_rate, config.send_burst) == (DEFAULT_SEND_RATE, DEFAULT_SEND_BURST) == (50.0, 200)
    assert config.registration == "open"
    assert config.tcp_listen == "tcp://127.0.0.1:0"
    assert config.authorities[0].public_key == bytes(range(32))
    assert config.limits()["fetch_batch"] == 32


def test_production_config_with_tor(tmp_path):
    text = rendered(test_mode=False, tcp_listen=None, tor=True, authorities=[(f"onion://{onion_address_from_key(bytes(32))}:7000", KEY)])
    config = load_provider_config(write(tmp_path, text))
    assert config.production and config.tor is not None


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, rendered() + "\n[mailboxes.extra]\n")
    with pytest.raises(ConfigError) as info:
        load_provider_config(path)
    assert "mailboxes.extra" in str(info.value) and str(path) in str(info.value)
    path = write(tmp_path, rendered().replace("[ingress]", "[ingress]\nsend_rte = 3"))
    with pytest.raises(ConfigError, match="ingress.send_rte"):
        load_provider_config(path)


@pytest.mark.parametrize(
    "old, new, key",
    [
        ('name = "alpha"', 'name = "Alpha.example"', "provider.name"),
        ('registration = "open"', 'registration = "invite"', "mailboxes.registration"),
        (f"fetch_batch = {DEFAULT_FETCH_BATCH}", "fetch_batch = 0", "mailboxes.fetch_batch"),
        (f"send_rate = {DEFAULT_SEND_RATE}", 'send_rate = "fast"', "ingress.send_rate"),
        (f"send_burst = {DEFAULT_SEND_BURST}", "send_burst = -1", "ingress.send_burst"),
        (f"quota_bytes = {DEFAULT_QUOTA_BYTES}", "quota_bytes = 1.5", "mailboxes.quota_bytes"),
        ("test_mode = true", "test_mode = false", "tcp.listen"),
    ],
)
def test_bad_values_name_the_key_and_file(tmp_path, old, new, key):
    text = rendered()
    assert old in text
    path = write(tmp_path, text.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_provider_config(path)
    assert key in str(info.value) and str(path) in str(info.value)
