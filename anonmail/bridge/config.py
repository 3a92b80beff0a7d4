"""The ``[bridge]`` table of ``agent.toml``: whether the agent runs the mail-client bridge, and where.

::

    [bridge]
    enabled = true          # `anonmail agent` also serves SMTP and IMAP for your mail client
    host = "127.0.0.1"      # loopback only: 127.0.0.1 or ::1 (anything else is a ConfigError)
    smtp_port = 2525        # SMTP submission (AUTH PLAIN/LOGIN, no TLS: it never leaves this machine)
    imap_port = 2143        # IMAP4rev1

The bridge never listens beyond loopback: a phone reaches it through a tunnel that ends on this
machine (docs/bridge.md), so the plain-text logins stay on loopback.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["BridgeSettings", "bridge_settings_from_table", "render_bridge_section", "DEFAULT_SMTP_PORT",
           "DEFAULT_IMAP_PORT"]

DEFAULT_SMTP_PORT = 2525
DEFAULT_IMAP_PORT = 2143
DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class BridgeSettings:
    """Where the bridge listens (always a loopback address) and whether the agent starts it."""

    enabled: bool = False
    host: str = DEFAULT_HOST
    smtp_port: int = DEFAULT_SMTP_PORT
    imap_port: int = DEFAULT_IMAP_PORT


def _loopback(value: str) -> str | None:
    try:
        if ipaddress.ip_address(value).is_loopback:
            return None
    except ValueError:
        pass
    return (f"{value!r} is not a loopback address; the bridge listens only on 127.0.0.1 or ::1 "
            "(reach it from another device through a tunnel, see docs/bridge.md)")


def bridge_settings_from_table(table) -> BridgeSettings:
    """Validate a ``[bridge]`` table (an :class:`anonmail.config.Table`)."""
    smtp = table.int("smtp_port", default=DEFAULT_SMTP_PORT, minimum=1, maximum=65535)
    imap = table.int("imap_port", default=DEFAULT_IMAP_PORT, minimum=1, maximum=65535)
    if smtp == imap:
        raise table.error("imap_port", f"must differ from smtp_port ({smtp})")
    return BridgeSettings(enabled=table.bool("enabled", default=False),
                          host=table.str("host", default=DEFAULT_HOST, check=_loopback),
                          smtp_port=smtp, imap_port=imap)


def render_bridge_section(enabled: bool = False) -> list[str]:
    """The commented ``[bridge]`` lines ``anonmail init`` writes."""
    return [
        "[bridge]                 # SMTP/IMAP for your mail client (docs/bridge.md)",
        f"enabled = {'true' if enabled else 'false'}          # true: `anonmail agent` also runs the bridge",
        f'host = "{DEFAULT_HOST}"       # loopback only',
        f"smtp_port = {DEFAULT_SMTP_PORT}",
        f"imap_port = {DEFAULT_IMAP_PORT}",
        "",
    ]
