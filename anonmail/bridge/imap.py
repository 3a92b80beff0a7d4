"""The bridge's IMAP4rev1 server: pymap's protocol engine over our own backend (:mod:`.maildb`).

pymap (a maintained, asyncio IMAP server with IDLE, MOVE, UIDPLUS) parses and answers the
protocol; this module gives it a backend whose folders live in ``agent.sqlite``: a
:class:`MailboxSet` (folders), a :class:`MailboxData` per folder (messages, flags, IDLE wake-ups)
and a login that checks the bridge's credentials. Store calls run in worker threads. A poller
(:meth:`MailboxSet.watch`) notices commits by the agent or the CLI (``PRAGMA data_version``),
syncs the folders, and wakes IDLE clients, so new mail shows within about half a second.

Refusals are IMAP answers, never a silent close: wrong credentials get ``NO [AUTHENTICATIONFAILED]``
and a greeting while no agent runs is ``* BYE [UNAVAILABLE] ... start it with `anonmail agent```.
"""

from __future__ import annotations

import asyncio
from argparse import Namespace
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timezone

import anyio.to_thread
from pymap.backend.mailbox import MailboxDataInterface, MailboxSetInterface
from pymap.backend.session import BaseSession
from pymap.concurrent import Event
from pymap.config import BackendCapability, IMAPConfig
from pymap.exceptions import AuthorizationFailure, InvalidAuth, NotAllowedError
from pymap.flags import FlagOp
from pymap.imap import IMAPServer
from pymap.interfaces.login import IdentityInterface, LoginInterface
from pymap.listtree import ListTree
from pymap.mailbox import MailboxSnapshot
from pymap.message import BaseLoadedMessage, BaseMessage
from pymap.mime import MessageContent
from pymap.parsing.message import AppendMessage
from pymap.parsing.specials import FetchRequirement, ObjectId
from pymap.parsing.specials.flag import Flag, Seen
from pymap.selected import SelectedMailbox, SelectedSet
from pymap.token import AllTokens
from pymap.user import UserMetadata
from proxyprotocol.reader import ProxyProtocolReader
from pysasl.creds.server import ServerCredentials

from anonmail.bridge.credentials import BridgeLogin
from anonmail.bridge.maildb import INBOX, MailRow, MailStore

__all__ = ["start_imap_server", "MailboxSet"]

#: Seconds between checks for commits by the agent or the CLI.
WATCH_INTERVAL = 0.5
#: Seconds an IDLE session waits for a wake-up before it re-reads its folder anyway.
IDLE_RECHECK = 5.0
#: Largest message a client may APPEND (a Drafts copy with attachments).
MAX_APPEND = 8 * 1024 * 1024


def _to_flags(names: frozenset[str]) -> frozenset[Flag]:
    return frozenset(Flag(n.encode("utf-8")) for n in names)


def _from_flags(flags: Iterable[Flag]) -> frozenset[str]:
    return frozenset(bytes(f).decode("utf-8") for f in flags)


class Message(BaseMessage):
    """A message's metadata; its content is read from the store only when a FETCH needs it."""

    __slots__ = ["_store", "_folder"]

    def __init__(self, row: MailRow, store: MailStore, folder: int, *, expunged: bool = False) -> None:
        super().__init__(row.uid, datetime.fromtimestamp(row.internal_date, timezone.utc), _to_flags(row.flags),
                         expunged=expunged)
        self._store, self._folder = store, folder

    async def load_content(self, requirement: FetchRequirement) -> BaseLoadedMessage:
        """Read and parse the message when headers or body are asked for."""
        content = None
        if not requirement.has_none(FetchRequirement.CONTENT):
            raw = await anyio.to_thread.run_sync(self._store.content, self._folder, self.uid)
            if raw is not None:
                content = MessageContent.parse(raw)
        return BaseLoadedMessage(self, requirement, content)


class MailboxData(MailboxDataInterface[Message]):
    """One folder, as pymap sees it."""

    def __init__(self, store: MailStore, folder: int, uid_validity: int) -> None:
        self._store, self.folder, self._uid_validity = store, folder, uid_validity
        self._mailbox_id = ObjectId.new_mailbox_id(folder.to_bytes(8, "big") + uid_validity.to_bytes(8, "big"))
        self._selected_set = SelectedSet()
        self.updated = Event.for_asyncio()

    @property
    def mailbox_id(self) -> ObjectId:
        return self._mailbox_id

    @property
    def readonly(self) -> bool:
        return False

    @property
    def uid_validity(self) -> int:
        return self._uid_validity

    @property
    def selected_set(self) -> SelectedSet:
        return self._selected_set

    async def _call(self, fn: Callable, *args):
        return await anyio.to_thread.run_sync(fn, *args)

    def _changed(self) -> None:
        self.updated.set()
        self.updated.clear()

    async def _messages(self) -> list[Message]:
        rows = await self._call(self._store.rows, self.folder)
        return [Message(row, self._store, self.folder) for row in rows]

    async def update_selected(self, selected: SelectedMailbox, *, wait_on: Event | None = None) -> SelectedMailbox:
        if wait_on is not None:
            # Register first, then look: a DONE that came while we were elsewhere must not be missed.
            # The timeout re-reads the folder now and then, in case a change fell between two waits.
            either = wait_on.or_event(self.updated)
            if not wait_on.is_set():
                await either.wait(timeout=IDLE_RECHECK)
        selected.set_messages(await self._messages())
        return selected

    async def append(self, append_msg: AppendMessage, *, recent: bool = False) -> Message:
        when = (append_msg.when or datetime.now(timezone.utc)).timestamp()
        flags = _from_flags(append_msg.flag_set)
        uid = await self._call(self._store.append, self.folder, bytes(append_msg.literal), flags, when)
        self._changed()
        return Message(MailRow(uid, flags, when), self._store, self.folder)

    async def copy(self, uid: int, destination: MailboxData, *, recent: bool = False) -> int | None:
        new = await self._call(self._store.copy, self.folder, uid, destination.folder)
        destination._changed()
        return new

    async def move(self, uid: int, destination: MailboxData, *, recent: bool = False) -> int | None:
        new = await anyio.to_thread.run_sync(lambda: self._store.copy(self.folder, uid, destination.folder,
                                                                       move=True))
        self._changed()
        destination._changed()
        return new

    async def get(self, uid: int, cached_msg) -> Message:
        row = await self._call(self._store.row, self.folder, uid)
        if row is not None:
            return Message(row, self._store, self.folder)
        flags = _from_flags(cached_msg.permanent_flags)
        return Message(MailRow(uid, flags, cached_msg.internal_date.timestamp()), self._store, self.folder,
                       expunged=True)

    async def update(self, uid: int, cached_msg, flag_set: frozenset[Flag], mode: FlagOp) -> Message:
        msg = await self.get(uid, cached_msg)
        if msg.expunged:
            return msg
        flags = mode.apply(msg.permanent_flags, flag_set - {Flag(b"\\Recent")})
        await self._call(self._store.set_flags, self.folder, uid, _from_flags(flags))
        msg.permanent_flags = frozenset(flags)
        self._changed()
        return msg

    async def delete(self, uids: Iterable[int]) -> None:
        await self._call(self._store.expunge, self.folder, list(uids))
        self._changed()

    async def claim_recent(self, selected: SelectedMailbox) -> None:
        """``\\Recent`` is not kept (clients rely on ``\\Seen``)."""

    async def cleanup(self) -> None:
        """Nothing to clean: the store deletes as it goes."""

    async def snapshot(self) -> MailboxSnapshot:
        rows = await self._call(self._store.rows, self.folder)
        found = await self._call(self._store.folder_by_id, self.folder)
        unseen = [i for i, row in enumerate(rows, 1) if "\\Seen" not in row.flags]
        next_uid = found[2] if found else (rows[-1].uid + 1 if rows else 1)
        return MailboxSnapshot(self.mailbox_id, self.readonly, self.uid_validity, self.permanent_flags,
                               self.session_flags, len(rows), 0, len(unseen), unseen[0] if unseen else None,
                               next_uid)


class MailboxSet(MailboxSetInterface[MailboxData]):
    """The user's folders; one per bridge, shared by every IMAP session."""

    def __init__(self, store: MailStore) -> None:
        self.store = store
        self._boxes: dict[int, MailboxData] = {}

    @property
    def delimiter(self) -> str:
        return "/"

    async def set_subscribed(self, name: str, subscribed: bool) -> None:
        await anyio.to_thread.run_sync(self.store.set_subscribed, name, subscribed)

    async def list_subscribed(self) -> ListTree:
        names = await anyio.to_thread.run_sync(lambda: self.store.folder_names(subscribed_only=True))
        return ListTree(self.delimiter).update(INBOX, *names)

    async def list_mailboxes(self) -> ListTree:
        names = await anyio.to_thread.run_sync(self.store.folder_names)
        return ListTree(self.delimiter).update(INBOX, *names)

    async def get_mailbox(self, name: str) -> MailboxData:
        found = await anyio.to_thread.run_sync(self.store.folder, name)
        if found is None:
            raise KeyError(name)
        folder, uid_validity, _next = found
        box = self._boxes.get(folder)
        if box is None or box.uid_validity != uid_validity:
            box = self._boxes[folder] = MailboxData(self.store, folder, uid_validity)
        return box

    async def add_mailbox(self, name: str) -> ObjectId:
        await anyio.to_thread.run_sync(self.store.create_folder, name)
        return (await self.get_mailbox(name)).mailbox_id

    async def delete_mailbox(self, name: str) -> None:
        await anyio.to_thread.run_sync(self.store.delete_folder, name)

    async def rename_mailbox(self, before: str, after: str) -> None:
        await anyio.to_thread.run_sync(self.store.rename_folder, before, after)

    def wake_all(self) -> None:
        """Tell every selected or idling session to look for changes."""
        for box in self._boxes.values():
            box._changed()

    async def watch(self) -> None:
        """Sync the folders whenever another connection committed; wake IDLE clients (runs until cancelled)."""
        version = None
        while True:
            now = await anyio.to_thread.run_sync(self.store.data_version)
            if now != version:
                version = now
                if await anyio.to_thread.run_sync(self.store.sync):
                    self.wake_all()
            await anyio.sleep(WATCH_INTERVAL)


class _Config(IMAPConfig):
    def __init__(self, greeting: Callable[[], str | None]) -> None:
        args = Namespace(passlib_cfg=None, proxy_protocol=None, debug=False, inherited_sockets=None)
        super().__init__(args, host=None, port=0, tls_enabled=False, reject_dnsbl=False, invalid_user_sleep=1.0,
                         max_append_len=MAX_APPEND, admin_key=None, subsystem=None)
        self._refusal = greeting

    @property
    def backend_capability(self) -> BackendCapability:
        return BackendCapability(idle=True, object_id=False, multi_append=False)

    @property
    def greeting(self) -> bytes:
        return b"anonmail bridge ready"

    def refusal(self) -> str | None:
        """Why the bridge will not serve now (e.g. no agent runs), or None."""
        return self._refusal()


class _Session(BaseSession[Message]):
    def __init__(self, owner: str, config: _Config, mailbox_set: MailboxSet) -> None:
        super().__init__(owner)
        self._config, self._mailbox_set = config, mailbox_set

    @property
    def config(self) -> IMAPConfig:
        return self._config

    @property
    def mailbox_set(self) -> MailboxSet:
        return self._mailbox_set


class _Secret:
    """pysasl's server-side identity: the bridge login (the password is checked against its hash)."""

    def __init__(self, login: BridgeLogin, authcid: str) -> None:
        self._login, self._authcid = login, authcid

    @property
    def authcid(self) -> str:
        return self._login.username

    def compare_authcid(self, authcid: str) -> bool:
        return True  # checked together with the secret, in constant time

    def compare_secret(self, secret: str) -> bool:
        return self._login.verify(self._authcid, secret)

    def get_clear_secret(self) -> None:
        return None


class _Identity(IdentityInterface):
    def __init__(self, name: str, config: _Config, mailbox_set: MailboxSet) -> None:
        self._name, self._config, self._mailbox_set = name, config, mailbox_set

    @property
    def name(self) -> str:
        return self._name

    @property
    def roles(self) -> frozenset[str]:
        return frozenset()

    @asynccontextmanager
    async def new_session(self) -> AsyncIterator[_Session]:
        yield _Session(self._name, self._config, self._mailbox_set)

    async def new_token(self, *, expiration=None) -> str | None:
        return None

    async def get(self) -> UserMetadata:
        return UserMetadata(self._config, self._name)

    async def set(self, metadata: UserMetadata) -> int | None:
        raise NotAllowedError("the bridge login is changed with `anonmail bridge --setup`")

    async def delete(self) -> None:
        raise NotAllowedError("the bridge login is changed with `anonmail bridge --setup`")


class _Login(LoginInterface):
    def __init__(self, login: BridgeLogin, config: _Config, mailbox_set: MailboxSet) -> None:
        self._login, self._config, self._mailbox_set = login, config, mailbox_set
        self._tokens = AllTokens(config)

    @property
    def tokens(self) -> AllTokens:
        return self._tokens

    async def authenticate(self, credentials: ServerCredentials) -> _Identity:
        secret = _Secret(self._login, credentials.authcid)
        ok = await anyio.to_thread.run_sync(credentials.verify, secret)
        if not ok:
            await asyncio.sleep(self._config.invalid_user_sleep)
            raise InvalidAuth("wrong user name or password: use the login `anonmail bridge --setup` showed")
        return _Identity(self._login.username, self._config, self._mailbox_set)

    async def authorize(self, authenticated: IdentityInterface, authzid: str) -> _Identity:
        if authzid.casefold() != authenticated.name.casefold():
            raise AuthorizationFailure()
        return _Identity(authenticated.name, self._config, self._mailbox_set)


class _Server(IMAPServer):
    """pymap's connection handler, with a refusal greeting while the bridge cannot serve."""

    def __init__(self, login: LoginInterface, config: _Config) -> None:
        super().__init__(login, config)
        self.tasks: set[asyncio.Task] = set()

    async def __call__(self, reader, writer, sock_info) -> None:
        why = self._config.refusal()
        if why is not None:
            writer.write(b"* BYE [UNAVAILABLE] " + why.encode("utf-8", "replace") + b"\r\n")
            try:
                await writer.drain()
            finally:
                writer.close()
            return
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            await super().__call__(reader, writer, sock_info)
        finally:
            self.tasks.discard(task)

    async def close_connections(self) -> None:
        """End every open IMAP session (the bridge is stopping)."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)


async def start_imap_server(store: MailStore, login: BridgeLogin, host: str, port: int, *,
                            refusal: Callable[[], str | None]) -> tuple[asyncio.base_events.Server, MailboxSet, _Server]:
    """Listen for IMAP on ``host:port`` (asyncio); returns the server, the folders (run ``watch``) and the
    connection handler (``close_connections`` when stopping)."""
    config = _Config(refusal)
    mailbox_set = MailboxSet(store)
    server = _Server(_Login(login, config, mailbox_set), config)
    callback = ProxyProtocolReader(config.proxy_protocol).get_callback(server)
    return await asyncio.start_server(callback, host=host, port=port), mailbox_set, server
