"""Inbound connections of a node: authenticate, admit by class within budgets, read packets.

Every connection is in one class at a time, each with its own budget and its own timeout::

    accepted ──▶ unauthenticated (MAX_UNAUTHENTICATED; HELLO and handshake within HANDSHAKE_TIMEOUT;
       │          when full, the OLDEST unauthenticated connection is closed to make room)
       ├─ HELLO as a node ─▶ Noise XX handshake ─▶ topology.authorize_peer (previous layer only)
       │      └─▶ node link (MAX_NODE_LINKS in all, MAX_LINKS_PER_PEER per peer: a new one closes
       │          that peer's oldest; closed after LINK_IDLE_TIMEOUT without a frame; packets
       │          within the peer's token bucket, ``peer_rate`` per second, else dropped)
       └─ HELLO as a client (providers only) ─▶ the provider's client session; it calls
              ``promote()`` once the user authenticated: from then on it counts as a user
              (MAX_USERS) and can no longer be pushed out by newcomers.

A stranger can therefore hold at most MAX_UNAUTHENTICATED slots, and only for
HANDSHAKE_TIMEOUT each while newer connections push it out; it never reaches the packet queue.
Every refusal is counted under a :class:`~mixnode.decisions.Refusal`; no exception leaves
:meth:`Inbound.serve` except cancellation.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence

import anyio
import anyio.abc

from anonmail.core.pki import Consensus
from anonmail.core.wire import Close, Control, Packet, Role
from anonmail.errors import LinkAuthError, LinkError, WireError
from anonmail.net.framed import FramedStream
from mixnode.decisions import DropReason, Refusal
from mixnode.handshake import respond
from mixnode.topology import authorize_peer

__all__ = ["Inbound", "TokenBucket", "ClientSlot"]

log = logging.getLogger("mixnode.inbound")

#: Connections that have not yet authenticated (node handshake or user login pending).
MAX_UNAUTHENTICATED = 128
#: Seconds a connection has to say HELLO and finish the link handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Authenticated links from neighbour nodes, in all and per peer.
MAX_NODE_LINKS = 64
MAX_LINKS_PER_PEER = 4
#: Seconds an authenticated node link may stay silent (its sender pings every 60 s).
LINK_IDLE_TIMEOUT = 180.0
#: Logged-in user sessions (providers).
MAX_USERS = 10_000
#: Packets per second one neighbour node may send by default (``peer_rate``); its bucket holds twice that.
PEER_RATE = 5000.0


class TokenBucket:
    """Sans-IO token bucket: ``rate`` tokens per second up to ``burst``; the clock is passed in."""

    __slots__ = ("rate", "burst", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.updated = float(burst), now

    def take(self, now: float) -> bool:
        """Spend one token if there is one (refilling for the time since the last call)."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ClientSlot:
    """A client connection's place in the budgets; the session calls :meth:`promote` after login."""

    def __init__(self, inbound: Inbound, key: int) -> None:
        self._inbound = inbound
        self._key = key
        self.promoted = False

    def promote(self) -> bool:
        """Count this session as a logged-in user (False: the provider is full of users)."""
        if self.promoted:
            return True
        inbound = self._inbound
        if inbound.users >= MAX_USERS:
            inbound.refused[Refusal.TOO_MANY_CLIENTS] += 1
            return False
        inbound._pending.pop(self._key, None)
        inbound.users += 1
        self.promoted = True
        return True

    def release(self) -> None:
        """The session ended: free its user slot."""
        if self.promoted:
            self._inbound.users -= 1
            self.promoted = False


class Inbound:
    """The accept side of one node: hand :meth:`serve` to the transports' listen."""

    def __init__(
        self,
        *,
        link_secret: bytes,
        me: Callable[[], bytes],
        consensuses: Callable[[], Sequence[Consensus | None]],
        submit: Callable[[bytes, float], object],
        dropped: Counter,
        serve_client: Callable[[FramedStream, ClientSlot], object] | None = None,
        peer_rate: float = PEER_RATE,
    ) -> None:
        self.link_secret = link_secret
        self.me = me
        self.consensuses = consensuses
        self.submit = submit
        self.dropped = dropped
        self.serve_client = serve_client
        self.peer_rate = peer_rate
        #: Connections closed unserved (or cut short), by reason.
        self.refused: Counter = Counter()
        #: Connections accepted in all: each one ends refused (once), admitted or still pending.
        self.accepted = 0
        self.users = 0
        self._pending: OrderedDict[int, anyio.CancelScope] = OrderedDict()
        self._evicted: set[int] = set()
        self._links: dict[str, deque[anyio.CancelScope]] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._keys = itertools.count()

    @property
    def unauthenticated(self) -> int:
        """Connections not yet authenticated."""
        return len(self._pending)

    def node_links(self) -> dict[str, int]:
        """Authenticated inbound links per neighbour (node names are public)."""
        return {name: len(scopes) for name, scopes in sorted(self._links.items()) if scopes}

    def status(self) -> dict:
        """Budgets in use and refusals, for the status file."""
        return {
            "inbound_accepted": self.accepted,
            "inbound_unauthenticated": self.unauthenticated,
            "inbound_links": self.node_links(),
            "inbound_users": self.users,
            "refused": {str(k): v for k, v in sorted(self.refused.items())},
        }

    async def serve(self, stream: anyio.abc.ByteStream) -> None:
        """Serve one accepted connection until it ends, is refused or is pushed out."""
        key = next(self._keys)
        self.accepted += 1
        if len(self._pending) >= MAX_UNAUTHENTICATED:
            oldest, scope = self._pending.popitem(last=False)
            self._evicted.add(oldest)
            self.refused[Refusal.TOO_MANY_UNAUTHENTICATED] += 1
            scope.cancel()
        framed = FramedStream(stream)
        try:
            async with stream:
                await self._serve(key, framed)
        except WireError:
            self._refuse(key, Refusal.BAD_FRAME)
        except LinkAuthError as exc:
            self._refuse(key, Refusal(exc.reason))
            log.info("inbound link refused: %s", exc)
        except LinkError:
            pass  # the peer went away
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # our inbound queue is closed: the node is stopping
        finally:
            self._pending.pop(key, None)
            self._evicted.discard(key)

    def _refuse(self, key: int, reason: Refusal) -> None:
        """Count a refusal, unless a newcomer already pushed this connection out (counted then)."""
        # Cancellation reaches a task only at its next wait: one whose bytes had just arrived
        # still runs its step after being pushed out, and may fail on those bytes.
        if key not in self._evicted:
            self.refused[reason] += 1

    async def _serve(self, key: int, framed: FramedStream) -> None:
        scope = anyio.CancelScope(deadline=anyio.current_time() + HANDSHAKE_TIMEOUT)
        self._pending[key] = scope
        peer = None
        with scope:
            hello = await framed.expect_hello()
            if hello.role == Role.CLIENT:
                if self.serve_client is None:
                    self._refuse(key, Refusal.CLIENT_AT_MIX)
                    return
                scope.deadline = float("inf")  # the session keeps its own (login) deadline
                await self.serve_client(framed, ClientSlot(self, key))  # type: ignore[misc]
                return
            if hello.role not in (Role.MIX, Role.PROVIDER):
                self._refuse(key, Refusal.BAD_ROLE)
                return
            peer_key = await respond(framed, self.link_secret)
            peer = authorize_peer(self.consensuses(), self.me(), peer_key)
        if scope.cancelled_caught:
            self._refuse(key, Refusal.HANDSHAKE_TIMEOUT)
            return
        if key in self._evicted:
            return  # pushed out while its last handshake message was being read: refused already
        self._pending.pop(key, None)
        if peer is not None:
            await self._serve_link(peer.name, framed)

    async def _serve_link(self, name: str, framed: FramedStream) -> None:
        scopes = self._links.setdefault(name, deque())
        if sum(len(s) for s in self._links.values()) >= MAX_NODE_LINKS and not scopes:
            self.refused[Refusal.TOO_MANY_NODE_LINKS] += 1
            return
        if len(scopes) >= MAX_LINKS_PER_PEER:
            scopes.popleft().cancel()  # the peer reconnected: its oldest link is stale
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = TokenBucket(self.peer_rate, int(2 * self.peer_rate), anyio.current_time())
        scope = anyio.CancelScope()
        scopes.append(scope)
        try:
            with scope:
                while True:
                    try:
                        with anyio.fail_after(LINK_IDLE_TIMEOUT):
                            frames = await framed.receive_batch()
                    except TimeoutError:
                        self.refused[Refusal.IDLE_TIMEOUT] += 1
                        return
                    if frames is None:
                        return
                    now = anyio.current_time()
                    for frame in frames:
                        if isinstance(frame, Packet):
                            if bucket.take(now):
                                self.submit(frame.data, now)
                            else:
                                self.dropped[DropReason.PEER_RATE_LIMITED] += 1
                        elif isinstance(frame, Close):
                            return
                        elif not (isinstance(frame, Control) and frame.message.get("type") == "ping"):
                            self.dropped[DropReason.UNEXPECTED_FRAME] += 1
        finally:
            if scope in scopes:
                scopes.remove(scope)
