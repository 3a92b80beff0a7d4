"""The ``onion`` transport: links between nodes as Tor v3 onion services.

A node gets its tor in one of two ways, chosen by :class:`TorSettings`:

* **attach** (``launch=False``): talk to a tor that is already running (a system tor set up
  as in ``torrc.example``) through its control port or control socket, with cookie or
  password authentication;
* **launch** (``launch=True``): start a private tor process for this node, with its own data
  directory under the node's, a control port on a free 127.0.0.1 port and cookie auth. The
  process is started here with :mod:`subprocess` (stem is used only as the controller) and
  stopped, by PID, when the transport closes or the interpreter exits.

::

    settings = TorSettings(control_port=9051)             # or TorSettings(launch=True)
    async with OnionTransport(settings, data_dir=node_dir) as transport:
        (address,) = await transport.listen(handler)      # onion://<56 chars>.onion:7000
        stream = await transport.connect(peer_address)    # through tor's SOCKS port

``listen`` serves a 127.0.0.1 listener and publishes it with ADD_ONION under a key kept in
``data_dir/`` :data:`ONION_KEY_FILE` (mode 0600), so the address survives restarts; it returns
once tor reports the descriptor uploaded (an HS_DESC event, no fixed sleep). ``connect`` goes
through tor's SOCKS5 port with the hostname unresolved, retrying the failures that heal
(descriptor not yet found, introduction failed…) and raising
:class:`~anonmail.errors.ConnectError` whose message and ``reason`` say what went wrong last.

A watchdog in the transport's task group checks on tor every ``health_interval`` seconds (at
once when stem reports the control connection closed). When tor went away (restarted,
crashed; in launch mode: our tor process exited) it reconnects with back-off (starting our tor
again in launch mode), waits for bootstrap and publishes the same address again with the same
key and listener; meanwhile ``connect`` fails at once with reason ``tor_unreachable``.

Errors: :class:`~anonmail.errors.TorAuthError` (control port refused authentication; names the
port and the method), :class:`~anonmail.errors.TorBootstrapError` (tor did not reach 100 %),
:class:`~anonmail.errors.TorError` (anything else tor or stem reports),
:class:`~anonmail.errors.ConnectError`, :class:`~anonmail.errors.ConfigError` (invalid
settings); streams raise :class:`~anonmail.errors.LinkError` (:mod:`anonmail.net.link`). stem
is synchronous: every call to it runs in a worker thread (``anyio.to_thread``) under a timeout.

The package, one job per module: :mod:`.socks` (what SOCKS replies mean), :mod:`.settings`
(:class:`TorSettings`), :mod:`.process` (a launched tor process), :mod:`.control` (stem:
authenticate, bootstrap), :mod:`.onion_key` (the service key and its address) and
:mod:`.transport` (:class:`OnionTransport`). The names below are its public API.
"""

from __future__ import annotations

from anonmail.errors import TorAuthError, TorBootstrapError
from anonmail.net.tor.control import ControlEndpoint, bootstrap_status, open_controller, wait_for_bootstrap
from anonmail.net.tor.onion_key import ONION_KEY_FILE, create_onion_key, load_onion_key, onion_host
from anonmail.net.tor.process import launch_torrc_lines, start_tor_process, stop_tor_process
from anonmail.net.tor.settings import DEFAULT_VIRTUAL_PORT, TorSettings
from anonmail.net.tor.socks import SocksReply, describe_socks_reply, socks_reply_code
from anonmail.net.tor.transport import OnionTransport

__all__ = [
    "DEFAULT_VIRTUAL_PORT",
    "ONION_KEY_FILE",
    "create_onion_key",
    "load_onion_key",
    "onion_host",
    "SocksReply",
    "describe_socks_reply",
    "socks_reply_code",
    "TorSettings",
    "TorAuthError",
    "TorBootstrapError",
    "OnionTransport",
    "ControlEndpoint",
    "open_controller",
    "wait_for_bootstrap",
    "bootstrap_status",
    "launch_torrc_lines",
    "start_tor_process",
    "stop_tor_process",
]
