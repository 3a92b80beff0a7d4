"""Mix node configuration: a commented TOML file, validated once at start.

A mix node's config is the :class:`~anonmail.daemon.node_config.NodeConfig` every forwarding
node has (``[node]``, transports, ``[directory]``, ``[mixing]`` limits, ``[cover]``) with its
layer (1..MIX_LAYERS) in ``[node]``. Unknown keys are errors; every error names the file and
the key. ``test_mode = true`` is required for the ``tcp``/``mem`` test transports and test peers;
a production node serves and reaches only onion and I2P addresses (docs/design.md, "Transports").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anonmail.config import SCHEMA_VERSION, load_toml
from anonmail.core.pki import MIX_LAYERS
from anonmail.daemon.node_config import DEFAULTS as NODE_DEFAULTS
from anonmail.daemon.node_config import (
    NodeConfig,
    check_node_name,
    parse_node_config,
    render_directory_section,
    render_forwarding_sections,
    render_transport_sections,
)

__all__ = ["MixConfig", "load_mix_config", "render_mix_config", "DEFAULTS"]

#: Named defaults (documented in the generated config file): the shared node defaults plus the
#: mix's loop cover rate.
DEFAULTS = {**NODE_DEFAULTS, "lambda_loop": 0.2}


@dataclass(frozen=True, kw_only=True)
class MixConfig(NodeConfig):
    """Everything a mix node needs to run (its ``layer`` is 1..MIX_LAYERS)."""


def load_mix_config(path: str | Path) -> MixConfig:
    """Read and validate a mix node config file (ConfigError names file and key)."""
    root = load_toml(path)
    node, fields = parse_node_config(root, path, node_table="node", forwarding_table="mixing",
                                     name_check=check_node_name, lambda_loop=DEFAULTS["lambda_loop"])
    config = MixConfig(layer=node.int("layer", minimum=1, maximum=MIX_LAYERS), **fields)
    root.finish()
    return config


def render_mix_config(
    *,
    name: str,
    layer: int,
    authorities: list[tuple[str, str]],
    threshold: int,
    epoch_seconds: int = DEFAULTS["epoch_seconds"],
    test_mode: bool = False,
    tcp_listen: str | None = None,
    tor: bool = False,
    i2p: bool = False,
    lambda_loop: float = DEFAULTS["lambda_loop"],
    peer_rate: float = DEFAULTS["peer_rate"],
) -> str:
    """The text of a new, commented config file (what ``mixnode init`` writes)."""
    lines = [
        "# anonmail mix node configuration (TOML). Unknown keys are errors.",
        f"schema_version = {SCHEMA_VERSION}",
        "",
        "[node]",
        f'name = "{name}"          # unique in the consensus; a-z, 0-9, -',
        f"layer = {layer}                # mix layer 1..{MIX_LAYERS}",
        'data_dir = "."           # keys, replay store, status file (relative to this file)',
        f"test_mode = {'true' if test_mode else 'false'}        # true only on private test networks: allows tcp:// peers",
        "",
    ]
    lines += render_transport_sections(tcp_listen=tcp_listen, tor=tor, i2p=i2p)
    lines += render_directory_section(authorities, threshold, epoch_seconds)
    lines += [""] + render_forwarding_sections("mixing", lambda_loop=lambda_loop, peer_rate=peer_rate)
    return "\n".join(lines)
