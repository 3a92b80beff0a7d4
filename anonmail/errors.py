"""The anonmail exception tree.

Every error the project raises on purpose derives from :class:`AnonmailError`. Errors carry
context (what, where) and never secrets: no key material, no passphrases, no plaintext.
Errors of libraries (PyNaCl, cryptography, stem, sockets, SQLite) are translated at the
boundary with ``raise ...Error(...) from exc``.

::

    AnonmailError
    ├── ConfigError                 a configuration file or value is invalid
    ├── AddressError                a user address does not parse or its checksum fails
    ├── KeyError_                   (base for key problems; not the builtin KeyError)
    │   ├── KeyFileError            a key file is missing, unreadable, corrupt or too open
    │   ├── PassphraseError         a sealed key does not open with this passphrase
    │   ├── SignatureError          a signature or certificate does not verify
    │   └── KeyExpiredError         a certificate is outside its validity window
    ├── PacketError                 a Sphinx packet is rejected (has ``reason``)
    │   ├── PacketSizeError         wrong length
    │   ├── HeaderMacError          header MAC mismatch (tampered, or not for this node)
    │   ├── BadGroupElementError    alpha is not a canonical curve point
    │   ├── RoutingError            routing command malformed or unknown
    │   ├── BodyTamperedError       body MAC mismatch at the hop that can check it
    │   ├── ReplayError             the packet's tag was seen before in this epoch
    │   └── PayloadTooLargeError    a payload does not fit into one packet
    ├── FragmentError               a fragment does not decrypt, verify or parse
    │   ├── MessageTooLargeError    a message exceeds the documented limit
    │   ├── ReassemblyError         fragments of one message contradict each other
    │   └── SessionError            a ratchet message, prekey bundle or session does not open or parse (``reason``)
    ├── JSONError                   a JSON document from outside breaks the strict rules (has ``reason``)
    ├── WireError                   a frame on a byte stream is malformed
    │   └── FrameTooLargeError      a frame exceeds its maximum size
    ├── TransportError              a peer cannot be reached or a stream broke (has ``address``)
    │   ├── TransportAddressError   a transport URI is malformed or not allowed here
    │   ├── ConnectError            a connection attempt failed (has ``reason``)
    │   ├── LinkError               an open byte stream to a peer ended or failed
    │   │   ├── LinkEndedError      the peer finished sending (a clean end of the stream)
    │   │   ├── LinkBrokenError     the link broke: reset, peer gone, kernel error
    │   │   └── LinkClosedError     this side already closed the stream
    │   ├── TorError                the tor daemon or its control port misbehaves
    │   │   ├── TorAuthError        the control port refused to authenticate us
    │   │   └── TorBootstrapError   tor did not finish bootstrapping in time
    │   └── I2PError                the I2P router or its SAM bridge misbehaves
    │       ├── SamBridgeError      no SAM bridge answers, or it refused HELLO (has ``bridge``)
    │       ├── SamError            the bridge answered a command with an error (has ``result``)
    │       ├── RouterNotReadyError the router did not build a session's tunnels in time
    │       └── SessionLostError    our SAM session is gone (also a ConnectError, ``session_lost``)
    ├── LinkAuthError               a link handshake between nodes fails or is refused (has ``reason``)
    ├── DirectoryError              a descriptor or consensus is rejected (has ``reason``)
    ├── PathError                   no usable path through the topology
    │   └── NodeKeyError            a node's published key cannot build a packet (has ``node_id``)
    ├── StoreError                  a local SQLite store cannot be opened or written (has ``reason``)
    ├── ProtocolError               a provider/agent request or answer is refused (has ``reason``)
    ├── MailError                   a user's request cannot be done (has ``reason``; CLI-facing)
    ├── InviteError                 an invitation code or exchange failed (has ``reason``; says what to do)
    └── TestnetError                a private Tor/I2P/anonmail test network failed
"""

from __future__ import annotations

__all__ = [
    "AnonmailError",
    "ConfigError",
    "AddressError",
    "KeyError_",
    "KeyFileError",
    "PassphraseError",
    "SignatureError",
    "KeyExpiredError",
    "PacketError",
    "PacketSizeError",
    "HeaderMacError",
    "BadGroupElementError",
    "RoutingError",
    "BodyTamperedError",
    "PayloadTooLargeError",
    "ReplayError",
    "FragmentError",
    "MessageTooLargeError",
    "ReassemblyError",
    "SessionError",
    "JSONError",
    "WireError",
    "FrameTooLargeError",
    "TransportError",
    "TransportAddressError",
    "ConnectError",
    "LinkError",
    "LinkEndedError",
    "LinkBrokenError",
    "LinkClosedError",
    "TorError",
    "TorAuthError",
    "TorBootstrapError",
    "I2PError",
    "SamBridgeError",
    "SamError",
    "RouterNotReadyError",
    "SessionLostError",
    "LinkAuthError",
    "DirectoryError",
    "PathError",
    "NodeKeyError",
    "StoreError",
    "ProtocolError",
    "MailError",
    "InviteError",
    "TestnetError",
]


class AnonmailError(Exception):
    """Base of every error anonmail raises on purpose."""


class ConfigError(AnonmailError):
    """A configuration file or value is invalid; the message names the file and the key."""


class AddressError(AnonmailError, ValueError):
    """A user address is malformed; the message says what is wrong and at which position."""

    def __init__(self, message: str, *, text: str = "", position: int | None = None) -> None:
        super().__init__(message)
        self.text = text
        self.position = position


class KeyError_(AnonmailError):
    """Base for problems with keys, certificates and key files."""


class KeyFileError(KeyError_):
    """A key file is missing, unreadable, corrupt or has unsafe permissions."""


class PassphraseError(KeyError_):
    """A sealed secret key does not open: wrong passphrase or damaged file."""


class SignatureError(KeyError_):
    """A signature or key certificate does not verify."""


class KeyExpiredError(KeyError_):
    """A key certificate is expired or not yet valid."""


class PacketError(AnonmailError):
    """A Sphinx packet is rejected; ``reason`` is a short stable code for counters."""

    reason = "malformed"


class PacketSizeError(PacketError):
    """A packet does not have the one fixed size."""

    reason = "bad_size"


class HeaderMacError(PacketError):
    """The header MAC does not match: the packet was tampered with or is not for this node."""

    reason = "bad_mac"


class BadGroupElementError(PacketError):
    """The packet's group element is not a canonical Curve25519 point."""

    reason = "bad_alpha"


class RoutingError(PacketError):
    """The routing command revealed at this hop is malformed or unknown."""

    reason = "bad_routing"


class BodyTamperedError(PacketError):
    """The body MAC fails where it can be checked (final hop or SURB owner)."""

    reason = "bad_body"


class ReplayError(PacketError):
    """The packet's replay tag was already seen in this epoch."""

    reason = "replay"


class PayloadTooLargeError(PacketError, ValueError):
    """A payload does not fit into one packet."""

    reason = "too_large"


class FragmentError(AnonmailError):
    """An end-to-end fragment does not decrypt, verify or parse."""


class MessageTooLargeError(FragmentError, ValueError):
    """A message is larger than :data:`anonmail.core.fragments.MAX_MESSAGE_BYTES`."""


class ReassemblyError(FragmentError):
    """Fragments claiming the same message disagree (count, length or content)."""


class SessionError(FragmentError):
    """An end-to-end session message, prekey bundle or stored session is refused; ``reason`` is a stable code.

    Reasons: ``malformed`` (does not parse), ``auth`` (does not decrypt: forged, or not for this
    session), ``duplicate`` (its message key was used or has expired), ``too_many_skipped`` (it
    would skip more message keys than allowed), ``no_session`` (no session it belongs to),
    ``unknown_prekey`` (it names a prekey we no longer hold), ``signature`` (a prekey signature
    does not verify), ``expired`` (a signed prekey is past its lifetime).
    """

    def __init__(self, message: str, *, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class JSONError(AnonmailError, ValueError):
    """JSON read from outside is malformed or breaks a bound (depth, integer range, size...).

    ``reason`` is a stable code for counters: ``malformed``, ``too_deep``, ``int_range``,
    ``too_many``. The message names the rule broken, never the input text.
    """

    def __init__(self, message: str, *, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class WireError(AnonmailError):
    """A frame read from a byte stream is malformed; the stream must be closed.

    ``offset`` is the stream offset of the frame at fault when decoding, ``None`` when encoding.
    """

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class FrameTooLargeError(WireError):
    """A frame announces more bytes than its type allows."""


class TransportError(AnonmailError):
    """A peer cannot be reached, or a stream to it broke; ``address`` names the peer if known."""

    def __init__(self, message: str, *, address: str | None = None) -> None:
        super().__init__(message)
        self.address = address


class TransportAddressError(TransportError, ValueError):
    """A transport URI (``onion://``, ``i2p://``, ``tcp://``, ``mem://``) is malformed or refused."""


class ConnectError(TransportError):
    """A connection attempt failed; ``reason`` is a short stable code (e.g. ``refused``)."""

    def __init__(self, message: str, *, address: str | None = None, reason: str = "unreachable") -> None:
        super().__init__(message, address=address)
        self.reason = reason


class LinkError(TransportError):
    """An open byte stream to a peer ended or failed; the streams of every transport raise only these.

    Transports translate anyio's stream exceptions and ``OSError`` into this family once, where
    a stream leaves the transport (:func:`anonmail.net.link.as_link`), so callers catch one type.
    """


class LinkEndedError(LinkError):
    """The peer finished sending: a clean end of the stream (what anyio calls EndOfStream)."""


class LinkBrokenError(LinkError):
    """The link broke: the peer went away, the connection was reset, the kernel gave up on it."""


class LinkClosedError(LinkError):
    """This side already closed the stream (another task closed it while this one used it)."""


class TorError(TransportError):
    """The tor daemon cannot be started, authenticated to, or did not bootstrap."""


class TorAuthError(TorError):
    """The control port (or socket) refused to authenticate us."""


class TorBootstrapError(TorError):
    """tor did not finish bootstrapping (PROGRESS=100) in time, or exited while trying."""


class I2PError(TransportError):
    """The I2P router or its SAM bridge is missing, not ready, or answered an error."""


class SamBridgeError(I2PError):
    """No SAM bridge answers at the configured address, or it refused the HELLO."""

    def __init__(self, message: str, *, bridge: str) -> None:
        super().__init__(message)
        self.bridge = bridge


class SamError(I2PError):
    """The SAM bridge answered a command with an error; ``result`` is SAM's RESULT code."""

    def __init__(self, message: str, *, bridge: str, result: str = "", sam_message: str = "") -> None:
        super().__init__(message)
        self.bridge = bridge
        self.result = result
        self.sam_message = sam_message


class RouterNotReadyError(I2PError):
    """The router did not build the session's tunnels in time (still bootstrapping, no peers)."""


class SessionLostError(ConnectError, I2PError):
    """Our SAM session is gone (router restarted or stopped); it is being re-created."""

    def __init__(self, message: str, *, address: str | None = None) -> None:
        super().__init__(message, address=address, reason="session_lost")


class LinkAuthError(AnonmailError):
    """A link handshake between nodes failed or the peer is refused; ``reason`` is a stable code.

    The link is closed; the message names what failed, never key material.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class DirectoryError(AnonmailError):
    """A node descriptor or consensus document is rejected; ``reason`` is a stable code."""

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class PathError(AnonmailError):
    """No path can be built: a layer is empty or two hops share no transport."""


class NodeKeyError(PathError):
    """A node's published key fails while a packet is built; leave the node out of paths."""

    def __init__(self, message: str, *, node_id: bytes = b"") -> None:
        super().__init__(message)
        self.node_id = node_id


class StoreError(AnonmailError):
    """A local SQLite store cannot be opened, migrated or written; ``reason`` is a stable code, ``path`` the file."""

    def __init__(self, message: str, *, reason: str = "failed", path: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.path = path


class ProtocolError(AnonmailError):
    """A client<->provider message is malformed or refused; ``reason`` is a stable code."""

    def __init__(self, message: str, *, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class MailError(AnonmailError):
    """A user's mail request cannot be done (unknown contact, full outbox...); says what to do."""

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class InviteError(AnonmailError):
    """An invitation failed: a code that does not parse (``bad_code``), a code that did not match
    (``mismatch``), an expired or unknown invitation (``expired``, ``no_invitation``), or a
    peer's message that breaks the rules (``bad_message``). The message says what to do next."""

    def __init__(self, message: str, *, reason: str = "bad_message") -> None:
        super().__init__(message)
        self.reason = reason


class TestnetError(AnonmailError):
    """A private test network (Tor, I2P or anonmail) could not be brought up or torn down."""

    __test__ = False  # not a pytest test class
