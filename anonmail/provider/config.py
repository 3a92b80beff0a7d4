"""Provider configuration: a commented TOML file, validated once at start.

The provider is a mix node at layer 0 (it reuses :class:`mixnode.node.MixNode`), so its config
carries every field a :class:`mixnode.config.MixConfig` has (same tables, same checks: the
transports and the ``[directory]`` table are read by :func:`mixnode.config.parse_node_transports`
and :func:`mixnode.config.parse_directory`, as for a mix) plus the mailbox settings. Unknown keys are errors; every
error names the file and the key. ``test_mode = true`` is needed for ``tcp``/``mem`` peers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from anonmail.config import SCHEMA_VERSION, load_toml
from anonmail.core.address import validate_provider_name
from anonmail.errors import AddressError
from mixnode.config import DEFAULTS as MIX_DEFAULTS
from mixnode.config import (
    AuthorityPin,
    parse_directory,
    parse_node_transports,
    render_directory_section,
    render_transport_sections,
)

if TYPE_CHECKING:
    from anonmail.net.i2p import I2PSettings
    from anonmail.net.tor import TorSettings

__all__ = [
    "ProviderConfig",
    "load_provider_config",
    "render_provider_config",
    "DEFAULT_FETCH_BATCH",
    "DEFAULT_QUOTA_BYTES",
    "DEFAULT_QUOTA_ENTRIES",
    "DEFAULT_SEND_RATE",
    "DEFAULT_SEND_BURST",
    "DEFAULT_MAX_ACCOUNTS",
    "REGISTRATION_MODES",
]

#: Entries per fetch (always exactly this many go on the wire, padded with dummies).
DEFAULT_FETCH_BATCH = 32
#: Data bytes one mailbox may hold; beyond it deliveries are dropped unacknowledged.
DEFAULT_QUOTA_BYTES = 64 * 1024 * 1024
#: Entries one mailbox may hold.
DEFAULT_QUOTA_ENTRIES = 20000
#: Ingress packets per second per account (token bucket rate) and burst.
DEFAULT_SEND_RATE = 50.0
DEFAULT_SEND_BURST = 200
#: Accounts this provider accepts.
DEFAULT_MAX_ACCOUNTS = 10000
REGISTRATION_MODES = ("open", "closed")
#: Providers forward without delay; their loop cover is sparser than a mix's.
DEFAULT_PROVIDER_LAMBDA_LOOP = 0.1


@dataclass(frozen=True)
class ProviderConfig:
    """Everything a provider needs to run (a superset of MixConfig's fields, ``layer`` 0)."""

    path: Path
    name: str
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
    fetch_batch: int = DEFAULT_FETCH_BATCH
    quota_bytes: int = DEFAULT_QUOTA_BYTES
    quota_entries: int = DEFAULT_QUOTA_ENTRIES
    send_rate: float = DEFAULT_SEND_RATE
    send_burst: int = DEFAULT_SEND_BURST
    max_accounts: int = DEFAULT_MAX_ACCOUNTS
    registration: str = "open"

    @property
    def layer(self) -> int:
        """Providers sit at layer 0 of the topology."""
        return 0

    @property
    def production(self) -> bool:
        """Whether only onion/I2P peers are allowed."""
        return not self.test_mode

    def limits(self) -> dict:
        """The limits a client is told in ``auth_ok``."""
        return {
            "fetch_batch": self.fetch_batch,
            "send_rate": self.send_rate,
            "send_burst": self.send_burst,
            "quota_bytes": self.quota_bytes,
            "quota_entries": self.quota_entries,
        }


def _provider_name_check(value: str) -> str | None:
    try:
        validate_provider_name(value)
    except AddressError as exc:
        return str(exc)
    return None


def load_provider_config(path: str | Path) -> ProviderConfig:
    """Read and validate a provider config file (ConfigError names file and key)."""
    root = load_toml(path)
    base = Path(path).resolve().parent
    node = root.table("provider", required=True)
    name = node.str("name", check=_provider_name_check)
    data_dir = node.path_value("data_dir", base=base, default=".")
    test_mode = node.bool("test_mode", default=False)
    production = not test_mode

    tcp_listen, tor, i2p = parse_node_transports(root, production=production, mode_key="provider.test_mode")
    authorities, threshold, epoch_seconds = parse_directory(root, production=production)

    mailboxes = root.table("mailboxes")
    ingress = root.table("ingress")
    forwarding = root.table("forwarding")
    cover = root.table("cover")
    registration = mailboxes.str(
        "registration", default="open",
        check=lambda v: None if v in REGISTRATION_MODES else f"must be one of {', '.join(REGISTRATION_MODES)}",
    )
    config = ProviderConfig(
        path=Path(path),
        name=name,
        data_dir=data_dir,
        test_mode=test_mode,
        tcp_listen=tcp_listen,
        tor=tor,
        i2p=i2p,
        authorities=authorities,
        threshold=threshold,
        epoch_seconds=epoch_seconds,
        queue_limit=forwarding.int("queue_limit", default=MIX_DEFAULTS["queue_limit"], minimum=1),
        inbound_limit=forwarding.int("inbound_limit", default=MIX_DEFAULTS["inbound_limit"], minimum=1),
        link_queue_limit=forwarding.int("link_queue_limit", default=MIX_DEFAULTS["link_queue_limit"], minimum=1),
        workers=forwarding.int("workers", default=MIX_DEFAULTS["workers"], minimum=0, maximum=64),
        batch=forwarding.int("batch", default=MIX_DEFAULTS["batch"], minimum=1, maximum=4096),
        lambda_loop=cover.float("lambda_loop", default=DEFAULT_PROVIDER_LAMBDA_LOOP, minimum=0),
        loop_delay_mean=cover.float("loop_delay_mean", default=MIX_DEFAULTS["loop_delay_mean"], minimum=0),
        loop_timeout=cover.float("loop_timeout", default=MIX_DEFAULTS["loop_timeout"], minimum=1),
        fetch_batch=mailboxes.int("fetch_batch", default=DEFAULT_FETCH_BATCH, minimum=1, maximum=256),
        quota_bytes=mailboxes.int("quota_bytes", default=DEFAULT_QUOTA_BYTES, minimum=4096),
        quota_entries=mailboxes.int("quota_entries", default=DEFAULT_QUOTA_ENTRIES, minimum=1),
        max_accounts=mailboxes.int("max_accounts", default=DEFAULT_MAX_ACCOUNTS, minimum=0),
        registration=registration,
        send_rate=ingress.float("send_rate", default=DEFAULT_SEND_RATE, minimum=0.001),
        send_burst=ingress.int("send_burst", default=DEFAULT_SEND_BURST, minimum=1),
    )
    root.finish()
    return config


def render_provider_config(
    *,
    name: str,
    authorities: list[tuple[str, str]],
    threshold: int,
    epoch_seconds: int = MIX_DEFAULTS["epoch_seconds"],
    test_mode: bool = False,
    tcp_listen: str | None = None,
    tor: bool = False,
    i2p: bool = False,
    registration: str = "open",
) -> str:
    """The text of a new, commented config file (what ``anonmail provider init`` writes)."""
    lines = [
        "# anonmail provider configuration (TOML). Unknown keys are errors.",
        f"schema_version = {SCHEMA_VERSION}",
        "",
        "[provider]",
        f'name = "{name}"          # the @provider part of your users\' addresses; unique in the consensus',
        'data_dir = "."           # keys, mailboxes, replay store, status file (relative to this file)',
        f"test_mode = {'true' if test_mode else 'false'}        # true only on private test networks: allows tcp:// peers",
        "",
    ]
    lines += render_transport_sections(tcp_listen=tcp_listen, tor=tor, i2p=i2p)
    lines += render_directory_section(authorities, threshold, epoch_seconds)
    lines += [
        "",
        "[mailboxes]",
        f'registration = "{registration}"   # "open": anyone may register an account; "closed": existing accounts only',
        f"max_accounts = {DEFAULT_MAX_ACCOUNTS}      # accounts accepted in total",
        f"fetch_batch = {DEFAULT_FETCH_BATCH}         # entries per fetch, always exactly this many on the wire",
        f"quota_bytes = {DEFAULT_QUOTA_BYTES}  # per mailbox; over it deliveries are dropped without ACK",
        f"quota_entries = {DEFAULT_QUOTA_ENTRIES}     # per mailbox",
        "",
        "[ingress]",
        f"send_rate = {DEFAULT_SEND_RATE}        # packets per second per account (token bucket); excess is dropped",
        f"send_burst = {DEFAULT_SEND_BURST}        # bucket size",
        "",
        "[forwarding]",
        f"queue_limit = {MIX_DEFAULTS['queue_limit']}       # packets held for a (sender-chosen) delay",
        f"inbound_limit = {MIX_DEFAULTS['inbound_limit']}      # received, not yet unwrapped",
        f"link_queue_limit = {MIX_DEFAULTS['link_queue_limit']}   # waiting per next hop",
        f"workers = {MIX_DEFAULTS['workers']}              # unwrap threads",
        f"batch = {MIX_DEFAULTS['batch']}               # packets per unwrap batch and store commit",
        "",
        "[cover]",
        f"lambda_loop = {DEFAULT_PROVIDER_LAMBDA_LOOP}        # loop cover packets per second",
        f"loop_delay_mean = {MIX_DEFAULTS['loop_delay_mean']}    # mean per-hop delay of loops, seconds",
        f"loop_timeout = {MIX_DEFAULTS['loop_timeout']}     # seconds until a loop counts as lost",
        "",
    ]
    return "\n".join(lines)
