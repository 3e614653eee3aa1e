"""Accounts of the map broker: mosquitto's password file, its ACL file and a registry, kept in one folder.

A device account's username IS the device's pseudonymous id (16 hex digits): the ACL lets it
write only its own sighting topics (``<prefix>/sightings/+/+/+/+/+/<id>``) and its own status
topic; a reader (the mapper, a map) may only read. Nobody gets a ``pattern`` line, so no reader
can write and no device can write under another id. Files in the folder (see docs/broker.md)::

    passwd         mosquitto password file (``user:$7$...``), 0640: mosquitto must read it
    acl            generated from the registry; ``acl.local`` (if any) is copied in first, 0640
    accounts.json  the registry: name -> username, role, prefix, created (and revoked ones), 0600

Every write is atomic (a temp file in the same folder, then rename); the owner and group of a
file that is replaced are kept (``chgrp mosquitto passwd acl`` once and it stays).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from firmware.files import write_atomic
from firmware.geohash import DEFAULT_TOPIC_PRECISION
from firmware.mqtt import DEFAULT_PREFIX
from firmware.privacy import new_device_id
from firmware.sighting import DEVICE_ID

Role = Literal["device", "reader"]
PASSWD, ACL, ACL_LOCAL, REGISTRY = "passwd", "acl", "acl.local", "accounts.json"
PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes; mosquitto reads the count from each line
SALT_BYTES = 12
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PREFIX = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


class AccountError(ValueError):
    """An enrolment or revocation cannot be done; the message names the problem in one line."""


@dataclass(frozen=True)
class Account:
    """One broker account. ``username`` is the device id for a device, the name for a reader."""

    name: str
    username: str
    role: Role
    prefix: str
    created_utc: str
    revoked_utc: str | None = None


@dataclass(frozen=True)
class Enrolment:
    """What ``add_device``/``add_reader`` made: the account and where its password was written."""

    account: Account
    password_file: Path


# ---- the password file -------------------------------------------------------------------------


def hash_password(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """mosquitto 2.x's ``$7$`` hash: ``$7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>``."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash. Test support: tests/test_broker_accounts.py
    holds ``hash_password`` to lines that mosquitto_passwd wrote with it."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    salt = base64.b64decode(parts[3])
    return secrets.compare_digest(hash_password(password, salt, int(parts[2])), hashed)


def read_passwd(path: Path) -> dict[str, str]:
    """username -> hash, in file order; an absent file is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AccountError(f"cannot read the password file {path}: {exc.strerror}") from None
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise AccountError(f"{path}:{number}: not a 'user:hash' line")
        entries[user] = hashed
    return entries


def format_passwd(entries: dict[str, str]) -> str:
    return "".join(f"{user}:{hashed}\n" for user, hashed in entries.items())


# ---- the ACL -----------------------------------------------------------------------------------


def acl_lines(account: Account, precision: int = DEFAULT_TOPIC_PRECISION) -> list[str]:
    """The ACL block of one account: a device writes its own topics, a reader reads."""
    p = account.prefix
    if account.role == "device":
        regions = "/".join(["+"] * precision)
        return [
            f"user {account.username}",
            f"topic write {p}/sightings/{regions}/{account.username}",
            f"topic write {p}/status/{account.username}",
        ]
    return [f"user {account.username}", f"topic read {p}/sightings/#", f"topic read {p}/status/#"]


def format_acl(accounts: list[Account], local: str = "") -> str:
    """The whole ACL file: the operator's ``acl.local`` first, then one block per live account."""
    out = [
        "# Generated by 'sousveil broker' from accounts.json: edits here are overwritten.",
        "# Put your own 'user' blocks (monitoring, bridges) in acl.local; it is copied in first.",
        "",
    ]
    if local.strip():
        out += ["# ---- acl.local ----", local.rstrip("\n"), "# ---- end of acl.local ----", ""]
    for account in accounts:
        if account.revoked_utc is None:
            out += [*acl_lines(account), ""]
    return "\n".join(out)


# ---- the registry ------------------------------------------------------------------------------


def read_registry(path: Path) -> list[Account]:
    """All accounts (live and revoked) in enrolment order; an absent file is empty."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise AccountError(f"cannot read the registry {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise AccountError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    try:
        return [Account(**row) for row in data["accounts"]]
    except (KeyError, TypeError) as exc:
        raise AccountError(f"{path}: not a sousveil account registry ({exc})") from None


def format_registry(accounts: list[Account]) -> str:
    return json.dumps({"version": 1, "accounts": [asdict(a) for a in accounts]}, indent=1) + "\n"


# ---- files ---------------------------------------------------------------------------------------


def write_new_secret(path: Path, text: str) -> None:
    """Create ``path`` (mode 0600) holding ``text``; refuse to overwrite an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AccountError(f"{path} already exists; move it away or choose another --out folder") from None
    except OSError as exc:
        raise AccountError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---- the folder ----------------------------------------------------------------------------------


class BrokerAccounts:
    """The accounts folder of one broker (``--dir``); every change rewrites passwd, acl and registry."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.passwd = directory / PASSWD
        self.acl = directory / ACL
        self.acl_local = directory / ACL_LOCAL
        self.registry = directory / REGISTRY

    def accounts(self) -> list[Account]:
        return read_registry(self.registry)

    def live(self) -> list[Account]:
        return [a for a in self.accounts() if a.revoked_utc is None]

    def add_device(
        self, name: str, out_dir: Path, prefix: str = DEFAULT_PREFIX, device_id: str | None = None
    ) -> Enrolment:
        """A new device account with a fresh id (or ``device_id``); its password goes to ``out_dir/NAME.pass``."""
        device = new_device_id() if device_id is None else device_id
        if not DEVICE_ID.fullmatch(device):
            raise AccountError(f"device id {device!r} is not 16 lowercase hex digits")
        return self._add(Account(name, device, "device", prefix, utc_now()), out_dir)

    def add_reader(self, name: str, out_dir: Path, prefix: str = DEFAULT_PREFIX) -> Enrolment:
        """A read-only account (the mapper, a map) with username ``name``."""
        if DEVICE_ID.fullmatch(name):
            raise AccountError(f"reader name {name!r} looks like a device id (16 hex digits); choose another")
        return self._add(Account(name, name, "reader", prefix, utc_now()), out_dir)

    def _add(self, account: Account, out_dir: Path) -> Enrolment:
        if not NAME.fullmatch(account.name):
            raise AccountError(
                f"name {account.name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if not PREFIX.fullmatch(account.prefix) or account.prefix.startswith("$"):
            raise AccountError(f"topic prefix {account.prefix!r}: use levels of letters, digits, '.', '_', '-'")
        self.dir.mkdir(parents=True, exist_ok=True)
        accounts = self.accounts()
        passwd = read_passwd(self.passwd)
        for other in accounts:
            if other.revoked_utc is None and other.name == account.name:
                raise AccountError(f"an account named {account.name!r} exists already ({other.role} {other.username})")
            if other.revoked_utc is None and other.username == account.username:
                raise AccountError(f"username {account.username!r} is taken by {other.name!r}")
        if account.username in passwd:
            raise AccountError(f"username {account.username!r} is already in {self.passwd} (not made by sousveil)")
        out_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        secret = out_dir / f"{account.name}.pass"
        write_new_secret(secret, password + "\n")
        passwd[account.username] = hash_password(password)
        self._save([*accounts, account], passwd)
        return Enrolment(account, secret)

    def revoke(self, who: str) -> Account:
        """Revoke the live account named ``who`` (or whose username is ``who``): out of passwd and ACL."""
        accounts = self.accounts()
        for i, account in enumerate(accounts):
            if account.revoked_utc is None and who in (account.name, account.username):
                revoked = Account(**{**asdict(account), "revoked_utc": utc_now()})
                accounts[i] = revoked
                passwd = read_passwd(self.passwd)
                passwd.pop(account.username, None)
                self._save(accounts, passwd)
                return revoked
        raise AccountError(f"no live account named {who!r} (see 'sousveil broker list')")

    def _save(self, accounts: list[Account], passwd: dict[str, str]) -> None:
        try:
            local = self.acl_local.read_text(encoding="utf-8")
        except FileNotFoundError:
            local = ""
        # passwd first: a crash in between leaves at worst a login with no ACL rights (it can publish nothing)
        write_atomic(self.passwd, format_passwd(passwd).encode(), 0o640, keep_owner=True)
        write_atomic(self.acl, format_acl(accounts, local).encode(), 0o640, keep_owner=True)
        write_atomic(self.registry, format_registry(accounts).encode(), 0o600, keep_owner=True)

    def regenerate_acl(self) -> None:
        """Rewrite the ACL from the registry and ``acl.local`` (after editing acl.local)."""
        self._save(self.accounts(), read_passwd(self.passwd))
