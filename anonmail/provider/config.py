"""Provider configuration: a commented TOML file, validated once at start.

The provider is a forwarding node at layer 0, so its config is the
:class:`~anonmail.daemon.node_config.NodeConfig` a mix has (``[provider]``, transports,
``[directory]``, ``[forwarding]`` limits, ``[cover]``; same checks) plus the mailbox and ingress
settings. Unknown keys are errors; every error names the file and the key. ``test_mode = true``
is needed for ``tcp``/``mem`` peers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from anonmail.config import SCHEMA_VERSION, load_toml
from anonmail.core.address import validate_provider_name
from anonmail.daemon.node_config import DEFAULTS as NODE_DEFAULTS
from anonmail.daemon.node_config import (
    NodeConfig,
    parse_node_config,
    render_directory_section,
    render_forwarding_sections,
    render_transport_sections,
)
from anonmail.errors import AddressError

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


@dataclass(frozen=True, kw_only=True)
class ProviderConfig(NodeConfig):
    """Everything a provider needs to run: a node at layer 0 with mailboxes."""

    layer: int = field(default=0, init=False)
    fetch_batch: int = DEFAULT_FETCH_BATCH
    quota_bytes: int = DEFAULT_QUOTA_BYTES
    quota_entries: int = DEFAULT_QUOTA_ENTRIES
    send_rate: float = DEFAULT_SEND_RATE
    send_burst: int = DEFAULT_SEND_BURST
    max_accounts: int = DEFAULT_MAX_ACCOUNTS
    registration: str = "open"

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
    _node, fields = parse_node_config(root, path, node_table="provider", forwarding_table="forwarding",
                                      name_check=_provider_name_check, lambda_loop=DEFAULT_PROVIDER_LAMBDA_LOOP)
    mailboxes = root.table("mailboxes")
    ingress = root.table("ingress")
    registration = mailboxes.str(
        "registration", default="open",
        check=lambda v: None if v in REGISTRATION_MODES else f"must be one of {', '.join(REGISTRATION_MODES)}",
    )
    config = ProviderConfig(
        **fields,
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
    epoch_seconds: int = NODE_DEFAULTS["epoch_seconds"],
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
        f"quota_bytes = {DEFAULT_QUOTA_BYTES}  # per mailbox; when full, the oldest entries make room (all mail is ACKed)",
        f"quota_entries = {DEFAULT_QUOTA_ENTRIES}     # per mailbox",
        "",
        "[ingress]",
        f"send_rate = {DEFAULT_SEND_RATE}        # packets per second per account (token bucket); excess is dropped",
        f"send_burst = {DEFAULT_SEND_BURST}        # bucket size",
        "",
    ]
    lines += render_forwarding_sections("forwarding", lambda_loop=DEFAULT_PROVIDER_LAMBDA_LOOP)
    return "\n".join(lines)
