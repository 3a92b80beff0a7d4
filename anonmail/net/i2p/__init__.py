"""The ``i2p`` transport: anonmail links as I2P streams through a SAM v3 bridge (i2pd's).

One :class:`I2PTransport` holds at most two SAM STREAM sessions on the bridge:

* the **listening session**, created by :meth:`I2PTransport.listen` with the node's own
  destination, whose private key persists in ``<data_dir>/i2p_destination.key`` (mode 0600) so
  the ``i2p://<52 chars>.b32.i2p`` address survives restarts; outgoing streams use it too;
* a **client session** with a transient destination, created on the first
  :meth:`~I2PTransport.connect` of a transport that does not listen.

A session lives as long as its control socket. Creating one makes the router build tunnels and
publish a lease set, which takes 6-12 s even on a running network (up to minutes on the real
network), so sessions are created once and reused. Incoming streams arrive on STREAM ACCEPT
sockets (one pending at a time, re-armed as soon as a peer arrives); outgoing streams resolve
the peer with NAMING LOOKUP on the session's control socket, then STREAM CONNECT on a new socket.

When the router restarts, its sessions are gone. The listening session is watched: a failed
STREAM ACCEPT (unknown session id, closed bridge) or a closed accept socket triggers a probe of
the control socket (``NAMING LOOKUP NAME=ME``), and the same probe runs every
``health_interval`` seconds. A session whose control socket is closed or silent is re-created
with the same saved destination (same address) as soon as the router answers again, with
back-off; meanwhile :meth:`I2PTransport.connect` fails at once with :class:`SessionLostError`.
A lost client session is re-created on the next connect.

``i2plib.aiosam`` does not run on Python >= 3.10, so only ``i2plib.sam`` is used (command
builders, destinations, base64/base32) with anyio sockets. Replies are parsed by the pure
:func:`parse_reply` (i2plib's parser does not handle quoted values such as ``MESSAGE="..."``).

Errors (all in :mod:`anonmail.errors`): a bridge that is not there, refuses HELLO or answers an
error raises :class:`SamBridgeError` / :class:`SamError` (both :class:`~anonmail.errors.I2PError`,
naming the bridge address and quoting SAM's message); a session whose tunnels are not built in
time raises :class:`RouterNotReadyError`; a peer that cannot be looked up or reached raises
:class:`~anonmail.errors.ConnectError` with ``reason`` ``lookup_failed``, ``unreachable``,
``timeout`` or ``refused``; a connect while our own session is lost (router restarting) raises
:class:`SessionLostError` (both a ConnectError, ``reason="session_lost"``, and an I2PError).
Streams raise :class:`~anonmail.errors.LinkError` (:mod:`anonmail.net.link`).

The package, one job per module: :mod:`.settings` (:class:`I2PSettings`), :mod:`.sam` (the
SAM protocol without I/O), :mod:`.destination` (the private destination file), :mod:`.session`
(SAM sockets and sessions) and :mod:`.transport` (:class:`I2PTransport`).
"""

from __future__ import annotations

from anonmail.errors import RouterNotReadyError, SamBridgeError, SamError, SessionLostError
from anonmail.net.i2p.destination import DESTINATION_FILE, load_destination, save_destination
from anonmail.net.i2p.sam import SamReply, b32_address, connect_error, parse_reply, session_options
from anonmail.net.i2p.settings import I2PSettings
from anonmail.net.i2p.transport import I2PTransport

__all__ = [
    "I2PSettings",
    "I2PTransport",
    "SamBridgeError",
    "SamError",
    "RouterNotReadyError",
    "SessionLostError",
    "SamReply",
    "parse_reply",
    "session_options",
    "connect_error",
    "load_destination",
    "save_destination",
    "b32_address",
    "DESTINATION_FILE",
]
