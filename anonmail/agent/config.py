"""``agent.toml``: a user's provider, directory authorities, transports and traffic rates.

Written by ``anonmail init`` with comments; validated strictly at every start (unknown keys and
bad values are ConfigErrors naming the file and the key). The agent only *connects*: it needs
a transport that reaches its provider and the authorities (``[tor]``/``[i2p]``, or ``tcp`` on
private test networks), never a listener.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anonmail.agent.account import CONFIG_FILE, DEFAULT_KEY_LIFETIME
from anonmail.agent.outbox import DEFAULT_OUTBOX_QUOTA
from anonmail.agent.service import AgentSettings
from anonmail.bridge.config import BridgeSettings, bridge_settings_from_table, render_bridge_section
from anonmail.config import SCHEMA_VERSION, load_toml
from anonmail.core.address import validate_provider_name
from anonmail.daemon.node_config import AuthorityPin, parse_authorities, render_directory_section
from anonmail.errors import AddressError
from anonmail.net.settings import i2p_settings_from_table, tor_settings_from_table

__all__ = ["AgentConfig", "load_agent_config", "render_agent_config", "DEFAULTS"]

DEFAULTS = {
    "lambda_payload": 2.0,
    "lambda_loop": 0.5,
    "fetch_interval": 5.0,
    "delay_mean": 0.5,
    "ack_timeout": 0.0,
    "key_lifetime": DEFAULT_KEY_LIFETIME,
    "outbox_quota": DEFAULT_OUTBOX_QUOTA,
    "epoch_seconds": 3600,
}


@dataclass(frozen=True)
class AgentConfig:
    """Everything ``anonmail agent`` and the CLI need from ``agent.toml``."""

    path: Path
    home: Path
    settings: AgentSettings
    outbox_quota: int
    test_mode: bool
    tor: object | None
    i2p: object | None
    authorities: tuple[AuthorityPin, ...]
    threshold: int
    epoch_seconds: int
    #: The mail-client bridge (``[bridge]``; off unless ``enabled = true``).
    bridge: BridgeSettings = BridgeSettings()

    @property
    def production(self) -> bool:
        """Whether only onion/I2P peers are allowed."""
        return not self.test_mode


def _provider_check(value: str) -> str | None:
    try:
        validate_provider_name(value)
    except AddressError as exc:
        return str(exc)
    return None


def load_agent_config(home: Path) -> AgentConfig:
    """Read and validate ``HOME/agent.toml``."""
    path = home / CONFIG_FILE
    root = load_toml(path)
    agent = root.table("agent", required=True)
    test_mode = agent.bool("test_mode", default=False)
    settings = AgentSettings(
        provider=agent.str("provider", check=_provider_check),
        provider_key=agent.public_key("provider_key") if agent.has("provider_key") else None,
        lambda_payload=agent.float("lambda_payload", default=DEFAULTS["lambda_payload"], minimum=0.01, maximum=1000),
        lambda_loop=agent.float("lambda_loop", default=DEFAULTS["lambda_loop"], minimum=0, maximum=1000),
        fetch_interval=agent.float("fetch_interval", default=DEFAULTS["fetch_interval"], minimum=0.05),
        delay_mean=agent.float("delay_mean", default=DEFAULTS["delay_mean"], minimum=0),
        ack_timeout=agent.float("ack_timeout", default=DEFAULTS["ack_timeout"], minimum=0),
        key_lifetime=agent.int("key_lifetime", default=DEFAULTS["key_lifetime"], minimum=60),
    )
    outbox_quota = agent.int("outbox_quota", default=DEFAULTS["outbox_quota"], minimum=1)
    tor = tor_settings_from_table(root.table("tor")) if root.has("tor") else None
    i2p = i2p_settings_from_table(root.table("i2p")) if root.has("i2p") else None
    if tor is None and i2p is None and not test_mode:
        raise root.error("tor", "configure a transport to reach your provider: [tor] or [i2p]")
    directory = root.table("directory", required=True)
    authorities, threshold = parse_authorities(directory, production=not test_mode)
    epoch_seconds = directory.int("epoch_seconds", default=DEFAULTS["epoch_seconds"], minimum=10)
    bridge = bridge_settings_from_table(root.table("bridge")) if root.has("bridge") else BridgeSettings()
    root.finish()
    return AgentConfig(path, home, settings, outbox_quota, test_mode, tor, i2p, authorities, threshold, epoch_seconds,
                       bridge)


def render_agent_config(*, provider: str, authorities: list[tuple[str, str]], threshold: int, provider_key: str = "",
                        epoch_seconds: int = DEFAULTS["epoch_seconds"], test_mode: bool = False,
                        tor_lines: list[str] | None = None, i2p_lines: list[str] | None = None) -> str:
    """The text of a new, commented ``agent.toml`` (what ``anonmail init`` writes)."""
    d = DEFAULTS
    lines = [
        "# anonmail user agent configuration (TOML). Unknown keys are errors.",
        f"schema_version = {SCHEMA_VERSION}",
        "",
        "[agent]",
        f'provider = "{provider}"      # your provider (the part after @ in your address)',
        (f'provider_key = "{provider_key}"' if provider_key else '# provider_key = ""') +
        "   # your provider's identity key, pinned: a consensus binding its name to another key is refused",
        f"lambda_payload = {d['lambda_payload']}     # packets per second you always send (mail or cover)",
        f"lambda_loop = {d['lambda_loop']}        # loop cover packets per second",
        f"fetch_interval = {d['fetch_interval']}     # seconds between mailbox fetches (fixed size: keep "
        "fetch_batch / fetch_interval above lambda_payload + 2 * lambda_loop)",
        f"delay_mean = {d['delay_mean']}         # mean delay per mix hop, seconds (more = more anonymous, slower)",
        f"ack_timeout = {d['ack_timeout']}        # seconds before a fragment is resent; 0 = automatic",
        f"key_lifetime = {d['key_lifetime']}  # seconds an encryption key is valid; rotated at half",
        f"outbox_quota = {d['outbox_quota']}  # bytes waiting for acknowledgement before `send` refuses",
        f"test_mode = {'true' if test_mode else 'false'}        # true only on private test networks (tcp:// peers)",
        "",
    ]
    if tor_lines is not None:
        lines += ["[tor]                    # reach peers through tor (see torrc.example)", *tor_lines, ""]
    if i2p_lines is not None:
        lines += ["[i2p]                    # reach peers through i2pd's SAM bridge", *i2p_lines, ""]
    lines += render_bridge_section()
    lines += render_directory_section(authorities, threshold, epoch_seconds)
    lines.append("")
    return "\n".join(lines)
