"""The directory authority: collects node descriptors and publishes a signed consensus per epoch.

Modules: :mod:`~mixnode.authority.config` (``authority.toml``), :mod:`~mixnode.authority.schedule`
(build points, pure), :mod:`~mixnode.authority.store` (SQLite state),
:mod:`~mixnode.authority.answers` (request -> reply), :mod:`~mixnode.authority.server` (the
service and how authorities agree), :mod:`~mixnode.authority.cli` (``mixnode authority ...``).
"""

from mixnode.authority.answers import MAX_DESCRIPTORS_PER_EPOCH, MAX_DESCRIPTORS_PER_NODE
from mixnode.authority.config import (
    DEFAULT_EPOCH_SECONDS,
    DEFAULT_ROUND_SECONDS,
    DEFAULT_SYNC_DELAY,
    AuthorityConfig,
    PeerAuthority,
    load_authority_config,
)
from mixnode.authority.schedule import build_points, next_build_point
from mixnode.authority.server import STATUS_FILE, Authority
from mixnode.authority.store import AuthorityStore

__all__ = [
    "DEFAULT_EPOCH_SECONDS",
    "DEFAULT_ROUND_SECONDS",
    "DEFAULT_SYNC_DELAY",
    "MAX_DESCRIPTORS_PER_EPOCH",
    "MAX_DESCRIPTORS_PER_NODE",
    "STATUS_FILE",
    "PeerAuthority",
    "AuthorityConfig",
    "load_authority_config",
    "build_points",
    "next_build_point",
    "AuthorityStore",
    "Authority",
]
