"""Sphinx processing of a batch of packets: :func:`sphinx.process`'s results, the GIL released per batch.

A mix unwraps packets on two worker threads. Hop by hop through PyNaCl each of the two X25519
multiplications releases the GIL, but everything around them holds it, as does the rest of the
node (reading, the replay filter, writing): the GIL, not the cores, then bounds a mix. With the
compiled helper (``anonmail/core/_sphinxfast.pyx``) a batch goes through two calls that each
release the GIL once for the whole batch::

    open_headers(secret, packets)      X25519, key derivation, header MAC      (no GIL)
    is_replay(i, tag) per packet        the caller's replay filter, before the costly part
    unwrap_hops(packets, keys)          beta and body decryption, blinding      (no GIL)
    sphinx.hop_result                   the routing command, as sphinx.process reads it

Without the helper the same results come from :func:`sphinx.process`, packet by packet
(``tests/unit/core/test_sphinx_batch.py`` holds both to the same outcomes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias

from anonmail.core import sphinx
from anonmail.core.sizes import PACKET_BYTES
from anonmail.errors import BadGroupElementError, HeaderMacError, PacketError, PacketSizeError, ReplayError

__all__ = ["Outcome", "process_batch", "COMPILED"]

_fast = sphinx._fast if sphinx._fast is not None and hasattr(sphinx._fast, "open_headers") else None
#: Whether batches run in the compiled helper (else packet by packet through sphinx.process).
COMPILED = _fast is not None

#: What one packet came to: sphinx's result, the PacketError it is dropped for, or an unexpected error.
Outcome: TypeAlias = sphinx.Forward | sphinx.Deliver | sphinx.SurbDelivery | Exception


def process_batch(
    packets: Sequence[bytes],
    secrets: Sequence[bytes],
    is_replay: Callable[[int, bytes], bool],
    *,
    compiled: bool = COMPILED,
) -> list[tuple[int | None, Outcome]]:
    """Each packet unwrapped with the first of ``secrets`` whose header MAC fits: ``(index of that secret, outcome)``.

    ``is_replay(index, tag)`` answers (and remembers) whether a tag was seen under that secret;
    it is asked right after the MAC verifies, before the costly part. The index is None unless
    the packet unwrapped; a packet no secret opens gets HeaderMacError. Errors are returned, not
    raised: a PacketError is the packet's drop reason, anything else is a bug one packet hit.
    """
    packets = [p if type(p) is bytes else bytes(p) for p in packets]
    if not compiled or _fast is None:
        return [_one(packet, secrets, is_replay) for packet in packets]
    outcomes: list[tuple[int | None, Outcome]] = [(None, HeaderMacError("header MAC mismatch (tampered, or not "
                                                                         "addressed to this node)"))] * len(packets)
    pending = [i for i, p in enumerate(packets) if _valid_size(p, outcomes, i)]
    for index, secret in enumerate(secrets):
        if not pending:
            break
        batch = [packets[i] for i in pending]
        opened: list[int] = []
        keys: list[bytes] = []
        still: list[int] = []
        for i, result in zip(pending, _fast.open_headers(secret, batch), strict=True):
            if result == _fast.BAD_MAC:
                still.append(i)
            elif isinstance(result, int):
                outcomes[i] = (None, BadGroupElementError("alpha is not a canonical Curve25519 point"
                                                          if result == _fast.NOT_CANONICAL else
                                                          "alpha is a low-order point"))
            else:
                try:
                    replay = is_replay(index, result[32:48])
                except Exception as exc:  # containment: the caller counts it as this packet's fault
                    outcomes[i] = (None, exc)
                    continue
                if replay:
                    outcomes[i] = (None, ReplayError("packet tag already seen in this epoch"))
                else:
                    opened.append(i)
                    keys.append(result)
        if opened:
            hops = _fast.unwrap_hops([packets[i] for i in opened], keys)
            for i, key, hop in zip(opened, keys, hops, strict=True):
                outcomes[i] = _result(index, key, hop)
        pending = still
    return outcomes


def _valid_size(packet: bytes, outcomes: list[tuple[int | None, Outcome]], i: int) -> bool:
    if len(packet) == PACKET_BYTES:
        return True
    outcomes[i] = (None, PacketSizeError(f"packet must be {PACKET_BYTES} bytes, got {len(packet)}"))
    return False


def _result(index: int, keys: bytes, hop: tuple[bytes, bytes] | int) -> tuple[int | None, Outcome]:
    if isinstance(hop, int):
        return None, BadGroupElementError("alpha is a low-order point")
    routing, forwarded = hop
    try:
        return index, sphinx.hop_result(keys[32:48], routing, forwarded, keys[48:64])
    except Exception as exc:  # a PacketError is the drop reason; anything else is counted as a fault
        return None, exc


def _one(packet: bytes, secrets: Sequence[bytes],
         is_replay: Callable[[int, bytes], bool]) -> tuple[int | None, Outcome]:
    for index, secret in enumerate(secrets):
        try:
            return index, sphinx.process(packet, secret, is_replay=lambda tag, i=index: is_replay(i, tag))
        except HeaderMacError:
            continue
        except Exception as exc:  # a PacketError is the drop reason; anything else is counted as a fault
            return None, exc
    return None, HeaderMacError("header MAC mismatch (tampered, or not addressed to this node)")
