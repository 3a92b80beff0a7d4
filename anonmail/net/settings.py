"""Transports from a node's config file: the ``[tor]``, ``[i2p]`` and (tests) ``tcp`` settings.

Mix nodes, authorities and (later) providers share these readers, so every service accepts the
same keys with the same checks; an invalid value is a ConfigError naming the file and the key.

``[tor]`` keys: ``serve`` (false: connect only, publish no onion service), ``launch`` (start a tor for this node instead of attaching), ``control_port``,
``control_socket``, ``password``, ``socks_port``, ``tor_binary``, ``torrc_lines``,
``virtual_port``, ``bootstrap_timeout``, ``connect_timeout``, ``health_interval``.
``[i2p]`` keys: ``serve`` (false: connect only), ``sam_host``, ``sam_port``, ``inbound_length``, ``outbound_length``,
``inbound_quantity``, ``outbound_quantity``, ``session_timeout``, ``lookup_timeout``,
``connect_timeout``, ``health_interval``, ``private_network`` (true only on a private test
network of routers: allows tunnels of fewer than :data:`MIN_TUNNEL_HOPS` hops). ``sam_host``
must be this machine (SAM is plaintext and carries the destination's private key).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from anonmail.config import Table
from anonmail.errors import ConfigError

if TYPE_CHECKING:
    from anonmail.net.base import Transport
    from anonmail.net.i2p import I2PSettings
    from anonmail.net.tor import TorSettings

__all__ = ["tor_settings_from_table", "i2p_settings_from_table", "build_transports", "MIN_TUNNEL_HOPS"]

#: Fewest hops per I2P tunnel outside a private test network: 0 or 1 hop gives a node no anonymity.
MIN_TUNNEL_HOPS = 2
#: SAM bridge hosts accepted: this machine only.
_LOOPBACK_NAMES = ("localhost", "::1")

_TOR_INTS = ("control_port", "socks_port", "virtual_port")
_TOR_FLOATS = ("bootstrap_timeout", "connect_timeout", "health_interval")
_I2P_INTS = ("sam_port", "inbound_length", "outbound_length", "inbound_quantity", "outbound_quantity")
_I2P_FLOATS = ("session_timeout", "lookup_timeout", "connect_timeout", "health_interval")


def _collect(table: Table, ints: tuple[str, ...], floats: tuple[str, ...], strs: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in ints:
        if table.has(key):
            port = key.endswith("port")
            values[key] = table.int(key, minimum=1 if port else 0, maximum=65535 if port else None)
    for key in floats:
        if table.has(key):
            values[key] = table.float(key, minimum=0)
    for key in strs:
        if table.has(key):
            values[key] = table.str(key)
    return values


def tor_settings_from_table(table: Table) -> TorSettings:
    """TorSettings from a ``[tor]`` table (attach to 127.0.0.1:9051 by default)."""
    from anonmail.net.tor import TorSettings

    values = _collect(table, _TOR_INTS, _TOR_FLOATS, ("control_socket", "password", "tor_binary"))
    for key in ("launch", "serve"):
        if table.has(key):
            values[key] = table.bool(key)
    if table.has("torrc_lines"):
        values["torrc_lines"] = tuple(table.str_list("torrc_lines"))
    table.finish()
    try:
        return TorSettings(**values)
    except ConfigError as exc:
        raise ConfigError(f"{table.path}: {exc}") from None


def i2p_settings_from_table(table: Table) -> I2PSettings:
    """I2PSettings from an ``[i2p]`` table (SAM at 127.0.0.1:7656, 3-hop tunnels by default)."""
    from anonmail.net.i2p import I2PSettings

    values = _collect(table, _I2P_INTS, _I2P_FLOATS, ("sam_host",))
    if table.has("serve"):
        values["serve"] = table.bool("serve")
    private_network = table.bool("private_network", default=False)
    host = values.get("sam_host")
    if host is not None and not _is_loopback(host):
        raise table.error("sam_host", f"{host!r} is not this machine: SAM is plaintext and carries the "
                                      "destination's private key, so run i2pd here (127.0.0.1, ::1 or localhost)")
    for key in ("inbound_length", "outbound_length"):
        hops = values.get(key)
        if hops is not None and hops < MIN_TUNNEL_HOPS and not private_network:
            raise table.error(key, f"{hops} hop{'' if hops == 1 else 's'} per tunnel gives no anonymity on the "
                                   f"I2P network; use {MIN_TUNNEL_HOPS} or more (3 is I2P's default), or set "
                                   "private_network = true on a private test network of routers")
    table.finish()
    try:
        return I2PSettings(**values)
    except ConfigError as exc:
        raise ConfigError(f"{table.path}: {exc}") from None


def _is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: 127.0.0.0/8, ::1 or localhost."""
    import ipaddress

    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_transports(
    data_dir: Path,
    *,
    tcp_listen: str | None = None,
    tor: TorSettings | None = None,
    i2p: I2PSettings | None = None,
    test_mode: bool = False,
) -> list[Transport]:
    """The transports a node serves and connects with; onion and I2P keys live in ``data_dir``."""
    transports: list[Transport] = []
    if tcp_listen is not None or test_mode:
        from anonmail.net.tcp import TcpTransport

        if not test_mode:
            raise ConfigError("the tcp transport is for private test networks only (test_mode = true)")
        transports.append(TcpTransport(tcp_listen))  # None: connect only (to tcp:// authorities)
    if tor is not None:
        from anonmail.net.tor import OnionTransport

        transports.append(OnionTransport(tor, data_dir=data_dir / "tor"))
    if i2p is not None:
        from anonmail.net.i2p import I2PTransport

        transports.append(I2PTransport(data_dir / "i2p", i2p))
    return transports

