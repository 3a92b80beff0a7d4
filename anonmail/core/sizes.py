"""Packet geometry: the fixed sizes every anonmail packet has on the wire (a contract once released).

A packet is a Sphinx header followed by a Sphinx body, always :data:`PACKET_BYTES` long,
whether it carries a message fragment, an acknowledgement or cover traffic.
"""

from __future__ import annotations

#: Most hops a header can route through: ingress provider, three mix layers, egress provider.
MAX_HOPS = 5
#: Security parameter of sphinxmix: MAC, key and tag size in bytes.
K = 16
#: Curve25519 group element (alpha) size.
ALPHA_BYTES = 32
#: Node identifiers carried in routing commands.
NODE_ID_BYTES = 16
#: Mailbox identifiers carried to the egress provider.
MAILBOX_ID_BYTES = 16
#: Encrypted routing information (beta) in the header.
BETA_BYTES = 208
#: sphinxmix's ``header_len`` parameter (alpha + beta).
SPHINX_MAX_LEN = ALPHA_BYTES + BETA_BYTES
#: Header on the wire: alpha | beta | gamma.
HEADER_BYTES = ALPHA_BYTES + BETA_BYTES + K
#: Body on the wire (LIONESS-encrypted, sphinxmix's ``body_len``).
BODY_BYTES = 3840
#: Every packet on the wire has exactly this size.
PACKET_BYTES = HEADER_BYTES + BODY_BYTES

__all__ = [
    "MAX_HOPS",
    "K",
    "ALPHA_BYTES",
    "NODE_ID_BYTES",
    "MAILBOX_ID_BYTES",
    "BETA_BYTES",
    "SPHINX_MAX_LEN",
    "HEADER_BYTES",
    "BODY_BYTES",
    "PACKET_BYTES",
]
