"""The operator's admission list: which identity keys may be in the consensus, as what.

One file per authority, ``admission.list`` in its data directory, edited by ``mixnode authority
admit|revoke`` (or by hand) and read at start-up and whenever it changes. One node per line::

    # name      role      layer  identity key (base64 Ed25519)
    alpha       provider  0      3q2+7w...=
    mix-1-0     mix       1      yX8p...=

A name and a key each appear once: the admitted key *owns* the name, so no rule ever picks
between two keys claiming one name. A line that does not parse stops the authority at start-up
with a ConfigError naming the file and the line. A descriptor whose key is not listed, or that
claims another name, role or layer than its line, is refused at upload (``not_admitted``,
``wrong_name``, ``wrong_role``, ``wrong_layer``) and never stored. Authorities publish their
lists in their votes, and a node enters the consensus only if a majority of all authorities
admit it with the same name, role and layer (:mod:`mixnode.authority.voting`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from anonmail.core import pki
from anonmail.errors import ConfigError, DirectoryError

__all__ = ["ADMISSION_FILE", "Admission", "AdmissionList", "parse_admission", "load_admission", "admit", "revoke",
           "check_descriptor"]

ADMISSION_FILE = "admission.list"
_HEADER = "# name  role  layer  identity-key (base64); edit with `mixnode authority admit|revoke`\n"


@dataclass(frozen=True, order=True)
class Admission:
    """One admitted node: the name, role and layer its identity key may claim."""

    name: str
    role: str
    layer: int
    identity_key: bytes

    def to_dict(self) -> dict:
        """As published in a vote."""
        return {"name": self.name, "role": self.role, "layer": self.layer,
                "identity_key": base64.b64encode(self.identity_key).decode()}

    def line(self) -> str:
        """As written in the admission file."""
        return f"{self.name:<20} {self.role:<9} {self.layer}  {base64.b64encode(self.identity_key).decode()}"

    @classmethod
    def make(cls, name: str, role: str, layer: int, key_b64: str) -> Admission:
        """Check every field; ValueError saying which is wrong."""
        try:
            key = base64.b64decode(key_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"identity key {key_b64!r} is not base64") from None
        if len(key) != 32:
            raise ValueError(f"identity key must be 32 bytes, got {len(key)}")
        entry = cls(name, role, layer, key)
        pki.check_node_fields(name, role, layer)
        return entry

    @classmethod
    def from_words(cls, words: list[str]) -> Admission:
        """``NAME ROLE [LAYER] KEY`` as typed or as a file line (a provider's layer may be left out)."""
        parts = list(words)
        if len(parts) == 3 and parts[1] == "provider":
            parts.insert(2, "0")
        if len(parts) != 4:
            raise ValueError("expected NAME ROLE [LAYER] KEY (LAYER 1..3 for a mix, none for a provider)")
        try:
            layer = int(parts[2])
        except ValueError:
            raise ValueError(f"layer {parts[2]!r} is not a number") from None
        return cls.make(parts[0], parts[1], layer, parts[3])

    @classmethod
    def from_dict(cls, data: object) -> Admission:
        """From a vote; ValueError if malformed."""
        if not isinstance(data, dict) or set(data) != {"name", "role", "layer", "identity_key"}:
            raise ValueError("an admission must be an object with name, role, layer, identity_key")
        if not isinstance(data["layer"], int) or isinstance(data["layer"], bool) or not isinstance(data["identity_key"], str):
            raise ValueError("admission layer must be an integer and identity_key base64")
        return cls.make(data["name"], data["role"], data["layer"], data["identity_key"])


@dataclass(frozen=True)
class AdmissionList:
    """The admitted nodes, looked up by key or name."""

    entries: tuple[Admission, ...] = ()

    def by_key(self, key: bytes) -> Admission | None:
        """The admission of an identity key, if any."""
        return next((e for e in self.entries if e.identity_key == key), None)

    def by_name(self, name: str) -> Admission | None:
        """The admission that owns a name, if any."""
        return next((e for e in self.entries if e.name == name), None)

    def with_entry(self, entry: Admission) -> AdmissionList:
        """A list with ``entry`` added; ValueError if its name or key is admitted already."""
        for other in self.entries:
            if other.identity_key == entry.identity_key:
                raise ValueError(f"this key is already admitted as {other.name!r}; revoke it first")
            if other.name == entry.name:
                raise ValueError(f"the name {entry.name!r} is already owned by another key; revoke it first")
        return AdmissionList(tuple(sorted((*self.entries, entry))))

    def text(self) -> str:
        """The file's contents."""
        return _HEADER + "".join(e.line() + "\n" for e in self.entries)


def parse_admission(text: str, path: Path | str) -> AdmissionList:
    """Parse an admission file; ConfigError naming the file and line of the first problem."""
    result = AdmissionList()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            result = result.with_entry(Admission.from_words(line.split()))
        except (ValueError, DirectoryError) as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
    return result


def load_admission(data_dir: Path) -> AdmissionList:
    """The admission list in a data directory (empty if there is no file yet)."""
    path = data_dir / ADMISSION_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return AdmissionList()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_admission(text, path)


def _write(data_dir: Path, admissions: AdmissionList) -> None:
    path = data_dir / ADMISSION_FILE
    tmp = path.with_name(f".{ADMISSION_FILE}.tmp")
    with open(tmp, "w") as handle:
        handle.write(admissions.text())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """One editor at a time (operators, scripts admitting several nodes at once)."""
    with open(data_dir / f".{ADMISSION_FILE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def admit(data_dir: Path, entry: Admission) -> AdmissionList:
    """Add a node to the durable list; ValueError if its name or key is taken."""
    with _locked(data_dir):
        updated = load_admission(data_dir).with_entry(entry)
        _write(data_dir, updated)
    return updated


def revoke(data_dir: Path, name_or_key: str) -> Admission:
    """Remove a node by name or base64 key; ValueError if it is not admitted."""
    with _locked(data_dir):
        current = load_admission(data_dir)
        entry = current.by_name(name_or_key) or next(
            (e for e in current.entries if base64.b64encode(e.identity_key).decode() == name_or_key), None)
        if entry is None:
            raise ValueError(f"{name_or_key!r} is not admitted (see `mixnode authority list`)")
        _write(data_dir, AdmissionList(tuple(e for e in current.entries if e != entry)))
    return entry


def check_descriptor(admissions: AdmissionList, descriptor: pki.NodeDescriptor) -> None:
    """Refuse a descriptor its admission does not cover; DirectoryError says why and what to do."""
    entry = admissions.by_key(descriptor.identity_key)
    key = base64.b64encode(descriptor.identity_key).decode()
    if entry is None:
        raise DirectoryError(
            f"descriptor {descriptor.name!r} (key {key}): this key is not admitted; its operator must ask the "
            f"authority operators to run `mixnode authority admit {descriptor.name} {descriptor.role}"
            f"{' ' + str(descriptor.layer) if descriptor.role == 'mix' else ''} {key}`",
            reason="not_admitted",
        )
    for field, reason in (("name", "wrong_name"), ("role", "wrong_role"), ("layer", "wrong_layer")):
        if getattr(descriptor, field) != getattr(entry, field):
            raise DirectoryError(
                f"descriptor {descriptor.name!r} (key {key}): claims {field} {getattr(descriptor, field)!r} but "
                f"this key is admitted as {entry.name!r} ({entry.role}, layer {entry.layer}); fix the node's config",
                reason=reason,
            )
