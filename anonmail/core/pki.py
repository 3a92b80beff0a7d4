"""Node descriptors and the per-epoch consensus: formats, signatures and acceptance rules.

Sans-IO. Time is divided into epochs of ``epoch_seconds`` counted from the Unix epoch
(:func:`epoch_at`). For each epoch a node publishes a **descriptor**, signed by its Ed25519
identity key: its name, role (``mix`` with a layer, or ``provider``), the X25519 Sphinx public
key it uses in that epoch, and its transport addresses. Directory authorities collect
descriptors and each signs the same deterministic **consensus document** for the epoch
(:func:`build_consensus`). Clients and nodes accept a document only when at least ``threshold``
of the pinned authority keys signed it and its epoch is the current or the next one
(:func:`verify_consensus`); anything else raises :class:`~anonmail.errors.DirectoryError` with
a stable ``reason``: ``malformed``, ``bad_descriptor``, ``too_few_signatures``, ``stale``,
``future``.

Documents are JSON objects of strings, numbers and lists only, signed over their canonical
encoding (sorted keys, no spaces, UTF-8), so they survive a round trip through CONTROL frames.
Every document carries the network's traffic parameters (:mod:`anonmail.core.params`) under
``params``, covered by the same signatures.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from anonmail.core import strictjson
from anonmail.core.keys import IdentityKey, check_x25519_public, node_id, verify_signature
from anonmail.core.params import DEFAULT_PARAMS, NetworkParams, params_from_dict
from anonmail.core.policy import NodeRef, Topology
from anonmail.core.uri import parse_transport_address
from anonmail.errors import DirectoryError, SignatureError, TransportAddressError

__all__ = [
    "DEFAULT_EPOCH_SECONDS",
    "DESCRIPTOR_VERSION",
    "CONSENSUS_VERSION",
    "MIX_LAYERS",
    "ROLES",
    "majority",
    "epoch_at",
    "epoch_start",
    "NodeDescriptor",
    "check_node_fields",
    "sign_descriptor",
    "descriptor_from_dict",
    "Consensus",
    "build_consensus",
    "sign_consensus",
    "consensus_from_dict",
    "verify_consensus",
    "consensus_signature_valid",
    "authority_id",
    "canonical_json",
]

#: Epoch length when a configuration does not say (keys rotate and consensuses renew per epoch).
DEFAULT_EPOCH_SECONDS = 3600
DESCRIPTOR_VERSION = 1
CONSENSUS_VERSION = 2  # 2: the document carries ``params``
#: Number of mix layers in the stratified topology.
MIX_LAYERS = 3
ROLES = ("mix", "provider")
MAX_ADDRESSES = 8
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_DESCRIPTOR_CONTEXT = b"anonmail descriptor v1"
_CONSENSUS_CONTEXT = b"anonmail consensus v1"


def canonical_json(obj: object) -> bytes:
    """The one byte encoding that gets signed: sorted keys, no spaces, UTF-8 (strict JSON bounds)."""
    return strictjson.dumps(obj, what="directory document")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, str):
        raise DirectoryError(f"{what} must be base64 text", reason="malformed")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DirectoryError(f"{what} is not valid base64", reason="malformed") from None
    if len(data) != size:
        raise DirectoryError(f"{what} must be {size} bytes, got {len(data)}", reason="malformed")
    return data


def majority(count: int) -> int:
    """The fewest of ``count`` authorities that are more than half: the least any threshold may be."""
    return count // 2 + 1


def epoch_at(now: float, epoch_seconds: int) -> int:
    """The epoch number that contains Unix time ``now``."""
    return int(now // epoch_seconds)


def epoch_start(epoch: int, epoch_seconds: int) -> int:
    """Unix time at which ``epoch`` begins."""
    return epoch * epoch_seconds


def authority_id(public_key: bytes) -> str:
    """How signatures name an authority: hex of its 16-byte node id."""
    return node_id(public_key).hex()


@dataclass(frozen=True)
class NodeDescriptor:
    """A node's signed statement of who it is and where to reach it during one epoch."""

    name: str
    role: str
    layer: int  # 1..MIX_LAYERS for mixes, 0 for providers
    epoch: int
    identity_key: bytes
    sphinx_key: bytes
    addresses: tuple[str, ...]
    signature: bytes = b""
    #: X25519 public key that authenticates the node's links (absent: no authenticated links).
    link_key: bytes | None = None

    @property
    def node_id(self) -> bytes:
        """The 16-byte id routing commands name this node by."""
        return node_id(self.identity_key)

    @property
    def schemes(self) -> frozenset[str]:
        """The transport schemes it serves."""
        return frozenset(a.split("://", 1)[0] for a in self.addresses)

    def body(self) -> dict:
        """The signed part as a JSON object."""
        return {
            "version": DESCRIPTOR_VERSION,
            "name": self.name,
            "role": self.role,
            "layer": self.layer,
            "epoch": self.epoch,
            "identity_key": _b64(self.identity_key),
            "sphinx_key": _b64(self.sphinx_key),
            "addresses": list(self.addresses),
            **({"link_key": _b64(self.link_key)} if self.link_key is not None else {}),
        }

    def to_dict(self) -> dict:
        """The descriptor with its signature, as sent to authorities."""
        return {**self.body(), "signature": _b64(self.signature)}

    def node_ref(self) -> NodeRef:
        """This node as path selection sees it."""
        return NodeRef(self.node_id, self.name, self.layer, self.schemes, 1.0, self)

    def verify(self, *, production: bool = True) -> None:
        """Check fields and signature; DirectoryError(reason='bad_descriptor') names the problem."""
        _check_descriptor_fields(self.name, self.role, self.layer, self.epoch, self.addresses, production)
        _check_sphinx_key(self.name, self.sphinx_key)
        if self.link_key is not None:
            _check_sphinx_key(self.name, self.link_key, "link_key")
        try:
            verify_signature(
                self.identity_key, canonical_json(self.body()), self.signature, context=_DESCRIPTOR_CONTEXT
            )
        except SignatureError:
            raise DirectoryError(
                f"descriptor of {self.name!r} for epoch {self.epoch}: signature does not verify",
                reason="bad_descriptor",
            ) from None


def check_node_fields(name: object, role: object, layer: object) -> None:
    """A node's name, role and layer as descriptors and admissions allow; DirectoryError otherwise."""
    def bad(why: str) -> DirectoryError:
        return DirectoryError(f"descriptor of {name!r}: {why}", reason="bad_descriptor")

    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise bad("name must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit")
    if role not in ROLES:
        raise bad(f"role must be one of {', '.join(ROLES)}")
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise bad("layer must be an integer")
    if role == "mix" and not 1 <= layer <= MIX_LAYERS:
        raise bad(f"a mix's layer must be 1..{MIX_LAYERS}, got {layer}")
    if role == "provider" and layer != 0:
        raise bad("a provider's layer must be 0")


def _check_descriptor_fields(
    name: object, role: object, layer: object, epoch: object, addresses: Sequence[object], production: bool
) -> None:
    def bad(why: str) -> DirectoryError:
        return DirectoryError(f"descriptor of {name!r}: {why}", reason="bad_descriptor")

    check_node_fields(name, role, layer)
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise bad("epoch must be a non-negative integer")
    if not addresses or len(addresses) > MAX_ADDRESSES:
        raise bad(f"needs 1..{MAX_ADDRESSES} transport addresses")
    for address in addresses:
        try:
            parse_transport_address(address, production=production)
        except TransportAddressError as exc:
            raise bad(str(exc)) from None
    if len(set(addresses)) != len(addresses):
        raise bad("lists an address twice")


def _check_sphinx_key(name: str, key: bytes, field: str = "sphinx_key") -> None:
    """A descriptor's X25519 keys must be canonical points of large order (a weak one crashes builders)."""
    try:
        check_x25519_public(key, field, ValueError)
    except ValueError as exc:
        raise DirectoryError(f"descriptor of {name!r}: {exc}", reason="bad_descriptor") from None


def sign_descriptor(
    identity: IdentityKey,
    *,
    name: str,
    role: str,
    layer: int,
    epoch: int,
    sphinx_key: bytes,
    addresses: Iterable[str],
    production: bool = True,
    link_key: bytes | None = None,
) -> NodeDescriptor:
    """Make and sign a node's descriptor for one epoch."""
    unsigned = NodeDescriptor(name, role, layer, epoch, identity.public, bytes(sphinx_key), tuple(addresses),
                              link_key=bytes(link_key) if link_key is not None else None)
    _check_descriptor_fields(name, role, layer, epoch, unsigned.addresses, production)
    _check_sphinx_key(name, unsigned.sphinx_key)
    if unsigned.link_key is not None:
        _check_sphinx_key(name, unsigned.link_key, "link_key")
    signature = identity.sign(canonical_json(unsigned.body()), context=_DESCRIPTOR_CONTEXT)
    return NodeDescriptor(**{**unsigned.__dict__, "signature": signature})


def descriptor_from_dict(data: object, *, production: bool = True) -> NodeDescriptor:
    """Parse and verify a descriptor received as JSON; DirectoryError if anything is off."""
    if not isinstance(data, Mapping):
        raise DirectoryError("a descriptor must be a JSON object", reason="malformed")
    expected = {"version", "name", "role", "layer", "epoch", "identity_key", "sphinx_key", "addresses", "signature"}
    if set(data) - {"link_key"} != expected:
        missing, extra = sorted(expected - set(data)), sorted(set(data) - expected)
        raise DirectoryError(f"descriptor fields wrong: missing {missing}, unexpected {extra}", reason="malformed")
    if data["version"] != DESCRIPTOR_VERSION:
        raise DirectoryError(f"descriptor version {data['version']!r} is not supported", reason="malformed")
    addresses = data["addresses"]
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        raise DirectoryError("descriptor addresses must be a list of strings", reason="malformed")
    descriptor = NodeDescriptor(
        name=data["name"],
        role=data["role"],
        layer=data["layer"],
        epoch=data["epoch"],
        identity_key=_unb64(data["identity_key"], 32, "identity_key"),
        sphinx_key=_unb64(data["sphinx_key"], 32, "sphinx_key"),
        addresses=tuple(addresses),
        signature=_unb64(data["signature"], 64, "signature"),
        link_key=_unb64(data["link_key"], 32, "link_key") if "link_key" in data else None,
    )
    descriptor.verify(production=production)
    return descriptor


@dataclass(frozen=True)
class Consensus:
    """The agreed nodes and traffic parameters for one epoch (the signed document, without signatures)."""

    epoch: int
    epoch_seconds: int
    nodes: tuple[NodeDescriptor, ...]
    params: NetworkParams = DEFAULT_PARAMS

    @property
    def valid_after(self) -> int:
        """Unix time the epoch starts."""
        return epoch_start(self.epoch, self.epoch_seconds)

    @property
    def valid_until(self) -> int:
        """Unix time the epoch ends."""
        return epoch_start(self.epoch + 1, self.epoch_seconds)

    def to_dict(self) -> dict:
        """The document as JSON (what authorities sign)."""
        return {
            "version": CONSENSUS_VERSION,
            "epoch": self.epoch,
            "epoch_seconds": self.epoch_seconds,
            "nodes": [d.to_dict() for d in self.nodes],
            "params": self.params.to_dict(),
        }

    def digest(self) -> bytes:
        """SHA-256 of the canonical document: equal digests mean the same consensus."""
        return hashlib.sha256(canonical_json(self.to_dict())).digest()

    def mixes(self, layer: int) -> list[NodeDescriptor]:
        """The mixes of one layer."""
        return [d for d in self.nodes if d.role == "mix" and d.layer == layer]

    @property
    def providers(self) -> list[NodeDescriptor]:
        """The providers."""
        return [d for d in self.nodes if d.role == "provider"]

    def by_id(self, nid: bytes) -> NodeDescriptor | None:
        """The node with this routing id, or None."""
        for descriptor in self.nodes:
            if descriptor.node_id == nid:
                return descriptor
        return None

    def by_name(self, name: str) -> NodeDescriptor | None:
        """The node with this name, or None."""
        for descriptor in self.nodes:
            if descriptor.name == name:
                return descriptor
        return None

    def topology(self) -> Topology:
        """The stratified topology for path selection."""
        return Topology.from_nodes((d.node_ref() for d in self.nodes), MIX_LAYERS)


def build_consensus(epoch: int, epoch_seconds: int, descriptors: Iterable[NodeDescriptor],
                    params: NetworkParams = DEFAULT_PARAMS) -> Consensus:
    """The deterministic document for an epoch: one descriptor per identity and per name.

    Descriptors for other epochs are ignored. When a node uploaded twice, the descriptor with
    the smallest canonical encoding wins (any fixed rule works; all authorities must use the
    same one). A name claimed by two identities is left out entirely: admission binds each name
    to one key, and no rule picks between claimants (a key-order rule let a stranger with a
    smaller key take over a provider's name).
    """
    chosen: dict[bytes, NodeDescriptor] = {}
    for d in descriptors:
        if d.epoch != epoch:
            continue
        current = chosen.get(d.identity_key)
        if current is None or canonical_json(d.to_dict()) < canonical_json(current.to_dict()):
            chosen[d.identity_key] = d
    claims: dict[str, int] = {}
    for d in chosen.values():
        claims[d.name] = claims.get(d.name, 0) + 1
    nodes = sorted((d for d in chosen.values() if claims[d.name] == 1), key=lambda x: (x.role, x.layer, x.node_id))
    return Consensus(epoch, epoch_seconds, tuple(nodes), params)


def sign_consensus(consensus: Consensus, authority: IdentityKey) -> bytes:
    """An authority's signature over the document."""
    return authority.sign(canonical_json(consensus.to_dict()), context=_CONSENSUS_CONTEXT)


def consensus_from_dict(data: object, *, production: bool = True) -> Consensus:
    """Parse a consensus document (no signature check); DirectoryError if malformed."""
    if not isinstance(data, Mapping) or set(data) != {"version", "epoch", "epoch_seconds", "nodes", "params"}:
        raise DirectoryError("a consensus must be an object with version, epoch, epoch_seconds, nodes, params",
                             reason="malformed")
    if data["version"] != CONSENSUS_VERSION:
        raise DirectoryError(f"consensus version {data['version']!r} is not supported", reason="malformed")
    epoch, seconds, nodes = data["epoch"], data["epoch_seconds"], data["nodes"]
    if not _is_int(epoch) or not _is_int(seconds) or seconds <= 0 or epoch < 0:
        raise DirectoryError("consensus epoch and epoch_seconds must be positive integers", reason="malformed")
    if not isinstance(nodes, list):
        raise DirectoryError("consensus nodes must be a list", reason="malformed")
    descriptors = tuple(descriptor_from_dict(n, production=production) for n in nodes)
    for d in descriptors:
        if d.epoch != epoch:
            raise DirectoryError(f"consensus for epoch {epoch} lists {d.name!r} for epoch {d.epoch}", reason="malformed")
    params = params_from_dict(data["params"])
    consensus = Consensus(epoch, seconds, descriptors, params)
    if consensus.to_dict() != build_consensus(epoch, seconds, descriptors, params).to_dict():
        raise DirectoryError("consensus document is not in canonical form", reason="malformed")
    return consensus


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def consensus_signature_valid(consensus: Consensus, public_key: bytes, signature: str) -> bool:
    """Whether one authority's base64 signature over the document verifies (for gathering)."""
    try:
        raw = _unb64(signature, 64, "signature")
        verify_signature(public_key, canonical_json(consensus.to_dict()), raw, context=_CONSENSUS_CONTEXT)
    except (SignatureError, DirectoryError):
        return False
    return True


def verify_consensus(
    document: object,
    signatures: Mapping[str, str],
    *,
    authorities: Sequence[bytes],
    threshold: int,
    now: float,
    production: bool = True,
) -> Consensus:
    """Accept a consensus only if ``threshold`` pinned authorities signed it and it is current.

    ``signatures`` maps :func:`authority_id` to base64 signatures; entries of unknown
    authorities are ignored, forged ones are named in the error. The epoch must be the one
    containing ``now`` or the next one (fetched ahead of time); older is ``stale``, later is
    ``future``.
    """
    authorities = list(dict.fromkeys(bytes(k) for k in authorities))  # a key counts once
    if not 1 <= threshold <= len(authorities):
        raise ValueError(f"threshold must be 1..{len(authorities)}, got {threshold}")
    if not isinstance(signatures, Mapping):
        raise DirectoryError("consensus signatures must be an object of authority id to base64", reason="malformed")
    consensus = consensus_from_dict(document, production=production)
    message = canonical_json(consensus.to_dict())
    valid, forged = 0, []
    for key in authorities:
        aid = authority_id(key)
        encoded = signatures.get(aid)
        if encoded is None:
            continue
        try:
            verify_signature(key, message, _unb64(encoded, 64, "signature"), context=_CONSENSUS_CONTEXT)
        except (SignatureError, DirectoryError):
            forged.append(aid[:8])
            continue
        valid += 1
    if valid < threshold:
        detail = f"; signatures that do not verify: {', '.join(forged)}" if forged else ""
        raise DirectoryError(
            f"consensus for epoch {consensus.epoch} has {valid} valid authority signatures, "
            f"needs {threshold} of {len(authorities)}{detail}",
            reason="too_few_signatures",
        )
    current = epoch_at(now, consensus.epoch_seconds)
    if consensus.epoch < current:
        raise DirectoryError(
            f"consensus is for epoch {consensus.epoch}, which ended; the current epoch is {current}",
            reason="stale",
        )
    if consensus.epoch > current + 1:
        raise DirectoryError(
            f"consensus is for epoch {consensus.epoch}, too far ahead of the current epoch {current} "
            "(check the clock)",
            reason="future",
        )
    return consensus
