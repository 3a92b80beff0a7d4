"""What the agent adds to a packet's time in the network: link latency and mailbox fetches.

* **Links** (``--link-model``): every link a packet crosses (sender to ingress provider, hop to
  hop, and the fetch's round trip to the provider) takes a latency drawn from a log-normal
  distribution fitted to round trips measured on the private Tor and I2P testnets
  (:data:`LINK_MODELS`), on top of the fixed ``--link-latency``. Draws come from a random stream
  of their own, so the traffic draws of a run do not depend on the link model.
* **Fetches** (``--fetch-interval``, ``--fetch-batch``): a recipient's agent fetches from its
  provider on a fixed schedule (``Agent._fetcher``: sleep ``fetch_interval``, fetch), each
  client at its own phase; a fetch brings at most ``fetch_batch`` stored entries, oldest first
  (real fragments and loops: what a mailbox holds). A message is received when the fetch that
  brings its last fragment has come back (one round trip on the client's link). With
  ``--fetch-interval 0`` a message counts as received when stored, as before.

Both are applied by the pure-Python loop (the compiled loop refuses configs that use them).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

__all__ = ["LinkModel", "LINK_MODELS", "link_sampler", "fetch_times", "fetch_phases", "next_fetch", "AckModel",
           "FragmentState", "TRANSPORT_SLACK_S"]

#: The agent's default allowance for transport round trips in its automatic ACK timeout.
TRANSPORT_SLACK_S = 20.0


@dataclass(frozen=True)
class LinkModel:
    """One-way link latency ~ LogNormal(ln(median), sigma), in seconds."""

    name: str
    median_s: float
    sigma: float
    source: str  # how the parameters were measured

    @property
    def mean_s(self) -> float:
        """Mean one-way latency (what the default drain time allows for)."""
        return self.median_s * math.exp(self.sigma**2 / 2)


#: Fitted from ``anonmail testnet tor-check --json`` / ``i2p-check --json`` (20 frame round
#: trips each, 4 kB frames over an onion service / a SAM stream, private networks on one
#: machine): one-way median = rtt_ms / 2; sigma such that the largest of the 20 round trips
#: is the 97.5 % quantile, sigma = ln(rtt_max / rtt) / 1.96 (I2P's first round trip, which
#: includes building the tunnels, left out).
LINK_MODELS: dict[str, LinkModel | None] = {
    "none": None,
    "tor": LinkModel("tor", 0.0553, math.log(143.6 / 110.6) / 1.96,
                     "tor-check: rtt 110.6 ms median, 143.6 ms max of 20"),
    "i2p": LinkModel("i2p", 0.0504, math.log(367.6 / 100.8) / 1.96,
                     "i2p-check: rtt 100.8 ms median, 367.6 ms max of 20 (first 319.6 ms left out)"),
}


def link_sampler(name: str, fixed: float, seed: int):
    """A function returning one link's latency: ``fixed`` plus the model's draw (None: fixed only)."""
    model = LINK_MODELS[name]
    if model is None:
        return None
    rng = random.Random(f"{seed}:links")
    mu, sigma = math.log(model.median_s), model.sigma
    lognormvariate = rng.lognormvariate

    def draw() -> float:
        return fixed + lognormvariate(mu, sigma)

    return draw


def fetch_phases(n_clients: int, interval: float, seed: int) -> list[float]:
    """Each client's first fetch time, uniform in [0, interval), from a stream of its own."""
    rng = random.Random(f"{seed}:fetch")
    return [rng.uniform(0.0, interval) for _ in range(n_clients)]


def next_fetch(phase: float, interval: float, t: float) -> float:
    """The first fetch tick at or after t."""
    return phase + max(0, math.ceil((t - phase) / interval)) * interval


def fetch_times(stored: list[tuple[float, int, int, int]], n_clients: int, interval: float, batch: int,
                seed: int, link=None) -> dict[int, float]:
    """When each message is complete in its recipient's agent.

    ``stored`` is (time, mailbox, message or -1, fragment) for every entry stored in a mailbox.
    A message is complete when the first copy of each of its fragments has been fetched.
    """
    phase = fetch_phases(n_clients, interval, seed)
    by_client: list[list[tuple[float, int, int]]] = [[] for _ in range(n_clients)]
    for t, client, mid, frag in stored:
        by_client[client].append((t, mid, frag))
    first: dict[tuple[int, int], float] = {}
    for client, entries in enumerate(by_client):
        if not entries:
            continue
        entries.sort(key=_time)
        i, n = 0, len(entries)
        tick = next_fetch(phase[client], interval, entries[0][0])
        while i < n:
            if entries[i][0] > tick:
                tick = next_fetch(phase[client], interval, entries[i][0])
            back = tick + (2 * link() if link is not None else 0.0)
            taken = 0
            while i < n and entries[i][0] <= tick and (batch <= 0 or taken < batch):
                _, mid, frag = entries[i]
                if mid >= 0:
                    first.setdefault((mid, frag), back)
                i += 1
                taken += 1
            tick += interval
    fetched_at: dict[int, float] = {}
    for (mid, _), back in first.items():
        if back > fetched_at.get(mid, -1.0):
            fetched_at[mid] = back
    return fetched_at


def _time(entry: tuple[float, int, int]) -> float:
    return entry[0]


class FragmentState:
    """Per fragment of a message: stored at the recipient's provider yet, sends, ACK fetched when."""

    __slots__ = ("stored", "attempts", "acked_at")

    def __init__(self, fragments: int) -> None:
        self.stored = [False] * fragments
        self.attempts = [0] * fragments
        self.acked_at = [math.inf] * fragments


class AckModel:
    """The agent's ACK timer (``Agent._refiller``): resend a fragment whose ACK is overdue.

    The ACK counts as seen when the sender's next fetch after it is stored has come back (batch
    limits aside); the timeout is ``--ack-timeout`` or the agent's automatic one, growing by 1.5x
    per attempt up to 2x, as the agent does.
    """

    def __init__(self, config: Any, link) -> None:
        holds = 7 if config.cover_acks else 6  # the answering provider holds the ACK too (issue 15)
        self.timeout = config.ack_timeout or (3 * holds * config.delay_mean + 2 * config.fetch_interval
                                              + TRANSPORT_SLACK_S)
        self.interval = config.fetch_interval
        self.phase = fetch_phases(config.clients, config.fetch_interval, config.seed) if self.interval > 0 else None
        model = LINK_MODELS[config.link_model]
        self.rtt = 2 * (config.link_latency + (model.mean_s if model is not None else 0.0))

    def sent(self, msg: Any, frag: int, t: float) -> float:
        """A fragment was put on the wire at t: when its ACK is due."""
        state = msg.frags
        state.attempts[frag] += 1
        return t + self.timeout * min(1.5 ** (state.attempts[frag] - 1), 2.0)

    def ack_stored(self, msg: Any, frag: int, t: float) -> None:
        """The fragment's ACK is in the sender's mailbox at t."""
        seen = t
        if self.phase is not None:
            seen = next_fetch(self.phase[msg.sender], self.interval, t) + self.rtt
        state = msg.frags
        if seen < state.acked_at[frag]:
            state.acked_at[frag] = seen
