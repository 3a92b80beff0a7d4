"""What a run will cost before it starts: events, peak memory, and time at a measured speed.

``run`` prints this on stderr for big runs and refuses one whose memory estimate exceeds
``--max-memory-gb``, so a network too large for the machine is said up front, not found out
after an hour. The figures are the engine's own accounting (the compiled loop's structs), checked
against measured runs in docs/simulator.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from simulations.agent_model import LINK_MODELS
from simulations.model import SimConfig

__all__ = ["Estimate", "estimate", "BYTES_PER_CLIENT", "BYTES_PER_PACKET", "BYTES_PER_MESSAGE"]

#: A client's stream deadlines (4 doubles), its queue slot and, once it writes, a deque.
BYTES_PER_CLIENT = 4 * 8 + 8 + 632
#: An in-flight packet in the compiled loop: route and delays (12 bytes per hop of the longest
#: route, layers + 2), eight per-packet fields, mass pointers, free-list slot, its heap event;
#: arrays grow by doubling, hence the factor 2.
BYTES_PER_PACKET_BASE = 2 * (4 + 4 + 4 + 4 + 4 + 8 + 4 + 4 + 16 + 4 + 24)
BYTES_PER_HOP = 2 * 12
#: A real message: six fields in the loop, then its latency (a Python float in a list).
BYTES_PER_MESSAGE = 32 + 8 + 24
#: A traced message's mass per mailbox it reaches (a dict entry), bounded by the clients.
BYTES_PER_TRACED_MAILBOX = 100
#: The interpreter, numpy-free imports and the network's own tables.
BASE_BYTES = 40 * 2**20


def bytes_per_packet(layers: int) -> int:
    """Memory of one in-flight packet for ``layers`` mix layers."""
    return BYTES_PER_PACKET_BASE + BYTES_PER_HOP * (layers + 2)


BYTES_PER_PACKET = bytes_per_packet(3)


@dataclass(frozen=True)
class Estimate:
    """Expected size of one run."""

    events: float
    packets_in_flight: float
    messages: float
    peak_bytes: float

    def describe(self, events_per_cpu_s: float | None = None) -> str:
        """One line for stderr."""
        text = (f"about {self.events / 1e6:,.0f} M events, {self.packets_in_flight:,.0f} packets in flight, "
                f"{self.messages / 1e6:,.2f} M real messages, peak memory about {self.peak_bytes / 2**30:.2f} GB")
        if events_per_cpu_s:
            text += (f"; at {events_per_cpu_s / 1e3:,.0f} k events per CPU second (measured on a 2 s sample)"
                     f" about {self.events / events_per_cpu_s / 60:,.1f} CPU minutes")
        return text


def estimate(config: SimConfig) -> Estimate:
    """Events and peak memory expected for ``config`` (within ~10 % for the opaque model)."""
    cfg = config.checked()
    end = cfg.duration + cfg.drain_s
    model = LINK_MODELS[cfg.link_model]
    link = cfg.link_latency + (model.mean_s if model is not None else 0.0)
    links = cfg.layers + 2 if link > 0 else 0
    hops = cfg.layers + (1 if cfg.provider_delay > 0 else 0) + links
    streams = cfg.lambda_payload + cfg.lambda_loop + cfg.lambda_drop
    packets = streams + (cfg.real_rate * cfg.fragments if cfg.lambda_payload == 0 else 0.0)
    # cover scheme "acks": every client packet comes back as an ACK, held at the answering provider
    # and each mix, over layers + 1 links (it starts at that provider)
    ack_links = cfg.layers + 1 if link > 0 else 0
    ack_hops = cfg.layers + 1 + ack_links if cfg.cover_acks else 0
    per_client = end * (streams + packets * (hops + ack_hops)) + cfg.duration * cfg.real_rate
    n_mixes = cfg.layers * cfg.mixes_per_layer
    per_mix = end * cfg.lambda_mix * (1 + cfg.layers + links)
    events = cfg.clients * per_client + n_mixes * per_mix
    transit = cfg.layers * cfg.delay_mean + cfg.provider_delay + (cfg.layers + 2) * link
    ack_transit = (cfg.layers + 1) * (cfg.delay_mean + link) if cfg.cover_acks else 0.0
    in_flight = cfg.clients * packets * (transit + ack_transit) + n_mixes * cfg.lambda_mix * transit
    messages = cfg.clients * cfg.real_rate * cfg.duration + cfg.burst_messages
    traced = min(cfg.entropy_samples, messages) * min(cfg.clients, 100_000) * BYTES_PER_TRACED_MAILBOX
    peak = (BASE_BYTES + cfg.clients * BYTES_PER_CLIENT + in_flight * bytes_per_packet(cfg.layers)
            + messages * BYTES_PER_MESSAGE + traced)
    return Estimate(events, in_flight, messages, peak)


def measure_speed(config: SimConfig) -> float:
    """Events per CPU second of this network on this machine, from a 2 s (virtual) sample run."""
    from simulations.engine import Simulation

    sample = config.with_(duration=1.0, drain=1.0, warmup=0.5, entropy_samples=min(config.entropy_samples, 20))
    started = time.process_time()
    sim = Simulation(sample).run()
    cpu = time.process_time() - started
    return sim.events / cpu if cpu > 0 else 0.0
