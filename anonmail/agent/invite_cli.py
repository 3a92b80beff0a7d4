"""``anonmail invite``, ``anonmail accept`` and ``anonmail contact verify``: meeting contacts safely.

``invite`` and ``accept`` ask the running agent to do the exchange (through the ``invitations``
table of the store, :mod:`anonmail.agent.invite`) and wait, printing the code and then the
outcome. ``contact verify NAME FINGERPRINT`` marks a contact added by address as verified once
the fingerprint they read out (``anonmail whoami --fingerprint``) matches its address.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from anonmail.agent.invite import FINAL_STATES
from anonmail.agent.store import AgentStore
from anonmail.core.address import parse_address
from anonmail.core.invite import parse_code
from anonmail.errors import InviteError, MailError

__all__ = ["add_invite_parsers", "cmd_invite", "cmd_accept", "verify_contact", "format_fingerprint",
           "PICKUP_TIMEOUT_S"]

#: How long the CLI waits for a running agent to take up an invitation.
PICKUP_TIMEOUT_S = 20.0
_POLL_S = 0.2


def add_invite_parsers(sub: argparse._SubParsersAction, home: Callable) -> None:
    """Register ``invite`` and ``accept`` (``home`` adds the ``--home`` option)."""
    invite = home(sub.add_parser("invite", help="show a one-time code that makes someone your verified contact "
                                                "(your agent must run; waits for them)"))
    invite.add_argument("--name", default=None, help="the petname to give them (default: contact-<start of address>)")
    accept = home(sub.add_parser("accept", help="use the code someone read to you: you become each other's "
                                                "verified contacts (your agent must run)"))
    accept.add_argument("code", help="the code, e.g. 4127-orbit-velvet@alpha")
    accept.add_argument("--name", default=None, help="the petname to give them (default: contact-<start of address>)")


def _check_name(name: str | None) -> None:
    if name is not None and (not name or len(name) > 64 or "@" in name
                             or not all(c.isalnum() or c in "-_." for c in name)):
        raise MailError(f"contact name {name!r}: use 1-64 letters, digits, '-', '_' or '.'", reason="bad_name")


def _wait(store: AgentStore, ident: int, *, until: Callable[[dict], bool], pickup: float) -> dict:
    """Poll the row until ``until`` holds; cancel it on ^C or when no agent takes it up in time."""
    started = time.monotonic()
    try:
        while True:
            row = store.invitation(ident)
            assert row is not None
            if until(row) or row["state"] in FINAL_STATES:
                return row
            if row["state"] == "requested" and time.monotonic() - started > pickup:
                store.update_invitation(ident, state="cancelled", only_from=("requested",))
                raise MailError("your agent did not take up the invitation: is `anonmail agent` running for this "
                                "home?", reason="agent_not_running")
            time.sleep(_POLL_S)
    except KeyboardInterrupt:
        store.update_invitation(ident, state="cancelled", only_from=("requested", "starting", "waiting", "joined"))
        raise


def _outcome(store: AgentStore, row: dict) -> int:
    if row["state"] != "done":
        raise InviteError(row["detail"] or f"the invitation ended ({row['state']})", reason=row["state"])
    address = store.contact_address(row["contact"])
    print(f"{row['contact']} is now your contact (verified): {address}")
    print(f"write to them: anonmail send --to {row['contact']}")
    return 0


def cmd_invite(store: AgentStore, args: argparse.Namespace) -> int:
    """Ask the agent for a code, print it, wait for the other side; exit 0 once they are a contact."""
    _check_name(args.name)
    ident = store.request_invitation("invite", args.name, "", now=time.time())
    row = _wait(store, ident, until=lambda r: r["state"] == "waiting", pickup=PICKUP_TIMEOUT_S)
    if row["state"] == "waiting":
        expires = time.strftime("%H:%M", time.localtime(row["expires_at"]))
        print(f"your invitation code: {row['code']}")
        print(f"read it to them (in person or by phone); they run: anonmail accept {row['code']}")
        print(f"waiting for them (the code works once, until {expires}; ^C to cancel)...", flush=True)
        row = _wait(store, ident, until=lambda r: False, pickup=PICKUP_TIMEOUT_S)
    return _outcome(store, row)


def cmd_accept(store: AgentStore, args: argparse.Namespace) -> int:
    """Hand the code to the agent and wait until the exchange is done; exit 0 once they are a contact."""
    _check_name(args.name)
    code = parse_code(args.code, store.meta("provider"))  # a typo is reported before anything is sent
    ident = store.request_invitation("accept", args.name, str(code), now=time.time())
    print(f"meeting them at provider {code.provider}...", file=sys.stderr, flush=True)
    return _outcome(store, _wait(store, ident, until=lambda r: False, pickup=PICKUP_TIMEOUT_S))


def format_fingerprint(address: str) -> str:
    """The user part of an address in groups of four, to read aloud and compare."""
    user = address.partition("@")[0]
    return " ".join(user[i:i + 4] for i in range(0, len(user), 4))


def verify_contact(store: AgentStore, name: str, fingerprint: str) -> str:
    """Mark ``name`` verified if ``fingerprint`` (spaces, dashes and case ignored) is its address's."""
    address = store.contact_address(name)
    if address is None:
        raise MailError(f"unknown contact {name!r}; see `anonmail contact list`", reason="unknown_contact")
    given = "".join(fingerprint.lower().replace("-", " ").split()).partition("@")[0]
    expected = parse_address(address).__str__().partition("@")[0]
    if given != expected:
        raise MailError(f"that fingerprint is not {name}'s: the address you added may not be theirs. Do not "
                        "verify; ask them to read `anonmail whoami --fingerprint` again, or use `anonmail invite`",
                        reason="fingerprint_mismatch")
    store.set_verified(name)
    return address
