"""How a node reaches tor: :class:`TorSettings`, validated on construction, and its defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from anonmail.errors import ConfigError

__all__ = ["TorSettings", "DEFAULT_VIRTUAL_PORT"]

#: The onion-service port peers connect to unless the settings say otherwise.
DEFAULT_VIRTUAL_PORT = 7000
#: Defaults, in seconds.
DEFAULT_BOOTSTRAP_TIMEOUT = 120.0
DEFAULT_PUBLISH_TIMEOUT = 90.0
DEFAULT_CONNECT_TIMEOUT = 60.0
DEFAULT_ATTEMPT_TIMEOUT = 30.0
DEFAULT_CONNECT_ATTEMPTS = 6
DEFAULT_RETRY_DELAY = 0.5
DEFAULT_CONTROL_TIMEOUT = 15.0
DEFAULT_HEALTH_INTERVAL = 30.0


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"tor.{name} must be a positive number of seconds, got {value!r}")


def _port_or_none(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"tor.{name} must be a port number 1..65535, got {value!r}")


@dataclass(frozen=True)
class TorSettings:
    """How a node reaches tor; embedded in a node config and validated at construction.

    Attach mode (``launch=False``) uses ``control_socket`` if set, else ``control_port`` on
    127.0.0.1; ``socks_port=None`` asks tor which SOCKS port it listens on. Launch mode starts
    ``tor_binary`` with ``torrc_lines`` added (a private test network's lines, say).
    """

    launch: bool = False
    #: Publish an onion service for the node's listener; False: connect only (reachable elsewhere).
    serve: bool = True
    control_port: int | None = 9051
    control_socket: str | None = None
    password: str | None = field(default=None, repr=False)
    socks_port: int | None = None
    tor_binary: str = "tor"
    torrc_lines: tuple[str, ...] = ()
    virtual_port: int = DEFAULT_VIRTUAL_PORT
    bootstrap_timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT
    publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT
    connect_attempts: int = DEFAULT_CONNECT_ATTEMPTS
    retry_delay: float = DEFAULT_RETRY_DELAY
    control_timeout: float = DEFAULT_CONTROL_TIMEOUT
    health_interval: float = DEFAULT_HEALTH_INTERVAL

    def __post_init__(self) -> None:
        _port_or_none("control_port", self.control_port)
        _port_or_none("socks_port", self.socks_port)
        _port_or_none("virtual_port", self.virtual_port)
        if self.virtual_port is None:
            raise ConfigError("tor.virtual_port must be a port number 1..65535, got None")
        if not self.launch and self.control_port is None and not self.control_socket:
            raise ConfigError("tor: set control_port or control_socket to attach to a running tor, or launch = true")
        if self.launch and self.password is not None:
            raise ConfigError("tor.password is for attaching to a running tor; a launched tor uses cookie auth")
        if not isinstance(self.torrc_lines, tuple) or not all(isinstance(x, str) for x in self.torrc_lines):
            raise ConfigError("tor.torrc_lines must be a tuple of strings")
        if any("\n" in line or "\r" in line for line in self.torrc_lines):
            raise ConfigError("tor.torrc_lines: one torrc line per entry, without newlines")
        if not self.tor_binary:
            raise ConfigError("tor.tor_binary must name the tor executable")
        for name in ("bootstrap_timeout", "publish_timeout", "connect_timeout", "attempt_timeout",
                     "control_timeout", "health_interval"):
            _positive(name, getattr(self, name))
        if isinstance(self.retry_delay, bool) or not isinstance(self.retry_delay, (int, float)) \
                or self.retry_delay < 0:
            raise ConfigError(f"tor.retry_delay must be >= 0 seconds, got {self.retry_delay!r}")
        if isinstance(self.connect_attempts, bool) or not isinstance(self.connect_attempts, int) \
                or not 1 <= self.connect_attempts <= 100:
            raise ConfigError(f"tor.connect_attempts must be 1..100, got {self.connect_attempts!r}")

