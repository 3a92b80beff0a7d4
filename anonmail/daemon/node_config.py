"""Config sections every serving node shares: who it is, how it is reached, whom it trusts, how it forwards.

A mix node (``mixnode.toml``) and a provider (``provider.toml``) are both forwarding nodes of
the topology, so their configs share one :class:`NodeConfig`: the ``[tcp]``/``[tor]``/``[i2p]``
transports, the ``[directory]`` table (pinned authorities, signature threshold, epoch length),
the forwarding limits and the loop cover. :class:`mixnode.config.MixConfig` and
:class:`anonmail.provider.config.ProviderConfig` extend it with what only they have (the mix
layer; the mailboxes). The agent reads the ``[directory]`` table with :func:`parse_authorities`
too. Unknown keys are errors and every error names the file and the key (:mod:`anonmail.config`).
``test_mode = true`` is required for the ``tcp``/``mem`` test transports and test peers; a
production node serves and reaches only onion and I2P addresses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anonmail.config import Table
from anonmail.core.pki import majority
from anonmail.net.base import Transport
from anonmail.net.settings import build_transports, i2p_settings_from_table, tor_settings_from_table

if TYPE_CHECKING:
    from anonmail.net.i2p import I2PSettings
    from anonmail.net.tor import TorSettings

__all__ = [
    "DEFAULTS",
    "AuthorityPin",
    "NodeConfig",
    "check_node_name",
    "parse_authorities",
    "parse_directory",
    "parse_node_transports",
    "parse_node_config",
    "build_node_transports",
    "render_transport_sections",
    "render_directory_section",
    "render_forwarding_sections",
]

#: Named defaults of the shared sections (written, with comments, into every generated config).
DEFAULTS: dict[str, Any] = {
    "queue_limit": 20000,  # packets held for their delay
    "inbound_limit": 4096,  # packets received but not yet unwrapped
    "link_queue_limit": 4096,  # packets waiting per outbound link
    "workers": 2,  # threads unwrapping packets (libsodium releases the GIL); 0 = inline
    "batch": 256,  # most packets per unwrap batch and store commit (only what is already queued)
    "loop_delay_mean": 0.2,  # mean per-hop delay of our own loops, seconds
    "loop_timeout": 120.0,  # a loop not back after this is counted lost, seconds
    "replay_capacity": 2_000_000,  # replay tags per epoch the filter is sized for (1e-6 false positives)
    "peer_rate": 5000.0,  # packets per second one neighbour node may send (burst: twice that)
    "epoch_seconds": 3600,  # must match the authorities
}

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass(frozen=True)
class AuthorityPin:
    """A directory authority we trust: where to reach it and its pinned public key."""

    address: str
    public_key: bytes


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Everything a forwarding node (mix or provider) needs to run, whatever its role."""

    path: Path
    name: str
    #: Its layer in the topology: 1..MIX_LAYERS for a mix, 0 for a provider.
    layer: int
    data_dir: Path
    test_mode: bool
    tcp_listen: str | None
    tor: TorSettings | None
    i2p: I2PSettings | None
    authorities: tuple[AuthorityPin, ...]
    threshold: int
    epoch_seconds: int
    queue_limit: int
    inbound_limit: int
    link_queue_limit: int
    workers: int
    batch: int
    lambda_loop: float
    loop_delay_mean: float
    loop_timeout: float
    #: Replay tags per epoch the node's filter is sized for.
    replay_capacity: int = DEFAULTS["replay_capacity"]
    #: Packets per second one neighbour node may send (its token bucket holds twice that).
    peer_rate: float = DEFAULTS["peer_rate"]

    @property
    def production(self) -> bool:
        """Whether only onion/I2P peers are allowed."""
        return not self.test_mode


def check_node_name(value: str) -> str | None:
    """Why ``value`` is not a node name (``Table.str`` check), or None if it is one."""
    if not _NAME.fullmatch(value):
        return "must be 1-63 characters of a-z, 0-9 and '-'"
    return None


def parse_authorities(table: Table, *, production: bool) -> tuple[tuple[AuthorityPin, ...], int]:
    """The [directory] table: pinned authorities and the signature threshold."""
    pins = []
    for entry in table.tables("authority"):
        address = entry.address("address", production=production)
        key = entry.public_key("public_key")
        pins.append(AuthorityPin(address, key))
    if not pins:
        raise table.error("authority", "list at least one [[directory.authority]]")
    # Fewer than a majority would let a minority of authorities mint a document on their own.
    threshold = table.int("threshold", default=majority(len(pins)), minimum=majority(len(pins)), maximum=len(pins))
    return tuple(pins), threshold


def parse_node_transports(root: Table, *, production: bool, mode_key: str):
    """A serving node's transports: ([tcp] listen address or None, TorSettings, I2PSettings).

    ``mode_key`` names the test-mode switch in errors.
    """
    tcp_listen = None
    if root.has("tcp"):
        tcp = root.table("tcp")
        if production:
            raise tcp.error("listen", f"the tcp transport is for tests only; set {mode_key} = true")
        listen = tcp.addresses("listen", production=False, listen=True, default=["tcp://127.0.0.1:0"])
        if len(listen) != 1 or not listen[0].startswith("tcp://"):
            raise tcp.error("listen", "give exactly one tcp://127.0.0.1:PORT address")
        tcp_listen = listen[0]
    tor = tor_settings_from_table(root.table("tor")) if root.has("tor") else None
    i2p = i2p_settings_from_table(root.table("i2p")) if root.has("i2p") else None
    if tcp_listen is None and tor is None and i2p is None:
        raise root.error("tor", "configure at least one transport: [tor] or [i2p] (or [tcp] in test mode)")
    if tcp_listen is None and not any(t is not None and t.serve for t in (tor, i2p)):
        raise root.error("tor", "no transport serves: set serve = true in [tor] or [i2p] (others connect to this node)")
    return tcp_listen, tor, i2p


def parse_directory(root: Table, *, production: bool) -> tuple[tuple[AuthorityPin, ...], int, int]:
    """The required [directory] table: pinned authorities, threshold, epoch length."""
    directory = root.table("directory", required=True)
    authorities, threshold = parse_authorities(directory, production=production)
    epoch_seconds = directory.int("epoch_seconds", default=DEFAULTS["epoch_seconds"], minimum=10)
    return authorities, threshold, epoch_seconds


def parse_node_config(
    root: Table,
    path: str | Path,
    *,
    node_table: str,
    forwarding_table: str,
    name_check: Callable[[str], str | None],
    lambda_loop: float,
) -> tuple[Table, dict[str, Any]]:
    """The shared sections of a node config: (its ``[node_table]``, NodeConfig fields but ``layer``).

    The caller reads its own keys from the returned table (a mix its ``layer``), builds its
    config from the fields and calls ``root.finish()``. ``lambda_loop`` is the role's default rate.
    """
    node = root.table(node_table, required=True)
    name = node.str("name", check=name_check)
    data_dir = node.path_value("data_dir", base=Path(path).resolve().parent, default=".")
    test_mode = node.bool("test_mode", default=False)
    production = not test_mode
    tcp_listen, tor, i2p = parse_node_transports(root, production=production, mode_key=f"{node_table}.test_mode")
    authorities, threshold, epoch_seconds = parse_directory(root, production=production)
    forwarding = root.table(forwarding_table)
    cover = root.table("cover")
    fields = dict(
        path=Path(path), name=name, data_dir=data_dir, test_mode=test_mode, tcp_listen=tcp_listen, tor=tor, i2p=i2p,
        authorities=authorities, threshold=threshold, epoch_seconds=epoch_seconds,
        queue_limit=forwarding.int("queue_limit", default=DEFAULTS["queue_limit"], minimum=1),
        inbound_limit=forwarding.int("inbound_limit", default=DEFAULTS["inbound_limit"], minimum=1),
        link_queue_limit=forwarding.int("link_queue_limit", default=DEFAULTS["link_queue_limit"], minimum=1),
        workers=forwarding.int("workers", default=DEFAULTS["workers"], minimum=0, maximum=64),
        batch=forwarding.int("batch", default=DEFAULTS["batch"], minimum=1, maximum=4096),
        replay_capacity=forwarding.int("replay_capacity", default=DEFAULTS["replay_capacity"], minimum=1000),
        peer_rate=forwarding.float("peer_rate", default=DEFAULTS["peer_rate"], minimum=1),
        lambda_loop=cover.float("lambda_loop", default=lambda_loop, minimum=0),
        loop_delay_mean=cover.float("loop_delay_mean", default=DEFAULTS["loop_delay_mean"], minimum=0),
        loop_timeout=cover.float("loop_timeout", default=DEFAULTS["loop_timeout"], minimum=1),
    )
    return node, fields


def build_node_transports(config: NodeConfig) -> list[Transport]:
    """The transports a node serves and connects with, as its config asks."""
    return build_transports(config.data_dir, tcp_listen=config.tcp_listen, tor=config.tor, i2p=config.i2p,
                            test_mode=config.test_mode)


def render_transport_sections(*, tcp_listen: str | None, tor: bool, i2p: bool) -> list[str]:
    """Commented [tcp]/[tor]/[i2p] tables of a serving node's config (mix or provider)."""
    lines: list[str] = []
    if tcp_listen is not None:
        lines += ["[tcp]                    # TEST ONLY transport, loopback", f'listen = ["{tcp_listen}"]', ""]
    if tor:
        lines += [
            "[tor]                    # serve as an onion service through a running tor (see torrc.example)",
            "control_port = 9051      # or control_socket = \"/run/tor/control\"; or launch = true for a private tor",
            "# socks_port = 9050      # default: ask tor",
            "",
        ]
    if i2p:
        lines += [
            "[i2p]                    # serve as an I2P destination through i2pd's SAM bridge",
            'sam_host = "127.0.0.1"',
            "sam_port = 7656",
            "# inbound_length = 3     # tunnel hops; 3 is the I2P default",
            "",
        ]
    return lines


def render_directory_section(authorities: list[tuple[str, str]], threshold: int, epoch_seconds: int) -> list[str]:
    """The commented [directory] table with its pinned authorities (every config has one)."""
    lines = [
        "[directory]",
        f"threshold = {threshold}            # consensus needs this many authority signatures",
        f"epoch_seconds = {epoch_seconds}     # must match the authorities",
    ]
    for address, key in authorities:
        lines += ["", "[[directory.authority]]", f'address = "{address}"', f'public_key = "{key}"']
    return lines


def render_forwarding_sections(forwarding_table: str, *, lambda_loop: float,
                               peer_rate: float = DEFAULTS["peer_rate"]) -> list[str]:
    """The commented forwarding-limits table (``[mixing]``/``[forwarding]``) and ``[cover]``."""
    d = DEFAULTS
    return [
        f"[{forwarding_table}]",
        f"queue_limit = {d['queue_limit']}       # packets held for their delay; more are dropped and counted",
        f"inbound_limit = {d['inbound_limit']}      # received, not yet unwrapped",
        f"link_queue_limit = {d['link_queue_limit']}   # waiting per next hop",
        f"workers = {d['workers']}              # unwrap threads",
        f"batch = {d['batch']}               # packets per unwrap batch and store commit",
        f"replay_capacity = {d['replay_capacity']}  # replay tags per epoch (fixed memory: 29 bits each)",
        f"peer_rate = {peer_rate}        # packets/s one neighbour node may send; beyond: peer_rate_limited",
        "",
        "[cover]",
        f"lambda_loop = {lambda_loop}        # loop cover packets per second (lambda_M)",
        f"loop_delay_mean = {d['loop_delay_mean']}    # mean per-hop delay of loops, seconds",
        f"loop_timeout = {d['loop_timeout']}     # seconds until a loop counts as lost",
        "",
    ]
