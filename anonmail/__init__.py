"""anonmail: metadata-private, email-like messaging over a Loopix-class mix network.

Clients reach every peer only through Tor onion services and I2P destinations; mix nodes
route fixed-size Sphinx packets in layers; providers keep mailboxes for offline users.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
