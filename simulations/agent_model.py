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

__all__ = ["LinkModel", "LINK_MODELS", "link_sampler", "fetch_times"]


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


def fetch_times(stored: list[tuple[float, int, int]], n_clients: int, interval: float, batch: int,
                seed: int, link=None) -> dict[int, float]:
    """When each message's last fragment is fetched: ``stored`` is (time, mailbox, message or -1)."""
    rng = random.Random(f"{seed}:fetch")
    phase = [rng.uniform(0.0, interval) for _ in range(n_clients)]
    by_client: list[list[tuple[float, int]]] = [[] for _ in range(n_clients)]
    for t, client, mid in stored:
        by_client[client].append((t, mid))
    fetched_at: dict[int, float] = {}
    for client, entries in enumerate(by_client):
        if not entries:
            continue
        entries.sort()
        i, n = 0, len(entries)
        # first fetch tick at or after the first entry
        k = max(0, math.ceil((entries[0][0] - phase[client]) / interval))
        while i < n:
            tick = phase[client] + k * interval
            k += 1
            if entries[i][0] > tick:
                k = max(k, math.ceil((entries[i][0] - phase[client]) / interval))
                continue
            back = tick + (2 * link() if link is not None else 0.0)
            taken = 0
            while i < n and entries[i][0] <= tick and (batch <= 0 or taken < batch):
                mid = entries[i][1]
                if mid >= 0:
                    fetched_at[mid] = back  # the last fragment's fetch wins (entries are in time order)
                i += 1
                taken += 1
    return fetched_at
