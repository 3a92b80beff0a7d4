"""Targets for configuration files: every TOML a daemon or agent loads."""

from __future__ import annotations

import tempfile
from pathlib import Path

from anonmail.agent.config import load_agent_config
from anonmail.errors import ConfigError
from anonmail.provider.config import load_provider_config
from fuzz.registry import target
from mixnode.authority.config import load_authority_config
from mixnode.config import load_mix_config

_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
_DIRECTORY = f"""
[directory]
threshold = 1
epoch_seconds = 3600
[[directory.authority]]
address = "tcp://127.0.0.1:7000"
public_key = "{_KEY}"
"""
_SEEDS = {
    0: f'[node]\nname = "mix-1"\nlayer = 1\ntest_mode = true\n[tcp]\nlisten = ["tcp://127.0.0.1:0"]\n{_DIRECTORY}',
    1: f'[provider]\nname = "alpha"\ntest_mode = true\n[tcp]\nlisten = ["tcp://127.0.0.1:0"]\n{_DIRECTORY}'
       '[mailboxes]\nquota_entries = 5\nregistration = "open"\n',
    2: 'name = "auth-0"\ntest_mode = true\nlisten = ["tcp://127.0.0.1:7000"]\nthreshold = 1\n',
    3: f'[agent]\nprovider = "alpha"\ntest_mode = true\nlambda_payload = 2.0\n{_DIRECTORY}',
}
_folder: Path | None = None


def _seeds():
    return [bytes([kind]) + text.encode() for kind, text in _SEEDS.items()]


@target("toml_config", allowed=(ConfigError,), seeds=_seeds)
def toml_config(data: bytes) -> None:
    """Any file given to a loader: a validated config or a ConfigError naming file and key."""
    global _folder
    if not data:
        return
    if _folder is None:
        _folder = Path(tempfile.mkdtemp(prefix="anonmail-fuzz-config-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    kind, text = data[0] % 4, data[1:]
    if kind == 3:
        (_folder / "agent.toml").write_bytes(text)
        load_agent_config(_folder)
        return
    path = _folder / "node.toml"
    path.write_bytes(text)
    (load_mix_config, load_provider_config, load_authority_config)[kind](path)
