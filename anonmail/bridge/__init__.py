"""The mail-client bridge: SMTP submission and IMAP4rev1 on loopback, over the user's agent store.

::

    mail client ──SMTP──▶ smtp.py ──▶ agent outbox (rfc822 envelope) ──▶ agent ──▶ mixnet
    mail client ◀─IMAP─── imap.py ◀── maildb.py (folders, UIDs, flags) ◀── agent inbox/outbox

``message.py`` is the sans-IO part (recipients, senders, what a client is shown), ``config.py``
the ``[bridge]`` table, ``credentials.py`` the login, ``server.py`` runs both servers and
``cli.py`` is ``anonmail bridge``. docs/bridge.md is the user's guide.
"""
