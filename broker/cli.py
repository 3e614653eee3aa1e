"""``sousveil broker``: enrol devices and readers on the map broker, revoke them, list them.

Each change rewrites the broker's password file and ACL (broker/accounts.py); mosquitto reads
them again on SIGHUP (``systemctl reload mosquitto``), which ``--reload-pid PID`` sends.
Passwords never appear on a command line or in output: each goes to ``<out>/<NAME>.pass`` (0600).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path

from broker.accounts import Account, AccountError, BrokerAccounts, Enrolment
from firmware.mqtt import DEFAULT_PREFIX

DEFAULT_DIR = Path("/etc/mosquitto/sousveil")
DEFAULT_PORT = 8883
DEVICE_PASSWORD_FILE = "/run/credentials/sousveil.service/mqtt-password"
"""What the device's config names: the systemd credential the unit loads from CREDENTIAL_SOURCE."""
CREDENTIAL_SOURCE = "/etc/sousveil/mqtt-password"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "broker",
        help="manage the map broker's accounts (enrol devices and readers, revoke)",
        description="Enrol devices and map readers on the mosquitto map broker, revoke them, list them"
        " (docs/broker.md).",
    )
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--dir", type=Path, default=DEFAULT_DIR, help=f"the broker's accounts folder (default {DEFAULT_DIR})"
        )

    def changes(q: argparse.ArgumentParser) -> None:
        common(q)
        q.add_argument(
            "--reload-pid", type=int, metavar="PID", help="send SIGHUP to this mosquitto so it applies the change"
        )

    def enrols(q: argparse.ArgumentParser) -> None:
        changes(q)
        q.add_argument("name", metavar="NAME", help="the account's name (letters, digits, . _ -)")
        q.add_argument(
            "--out", type=Path, default=Path("."), help="folder for the NAME.pass password file (default: here)"
        )
        q.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default {DEFAULT_PREFIX})")

    q = sub.add_parser("add-device", help="a device account bound to a new pseudonymous id; prints its config")
    enrols(q)
    q.add_argument(
        "--host", default=None, help="the broker's host name as devices reach it (default: this machine's FQDN)"
    )
    q.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the broker's TLS port (default {DEFAULT_PORT})")
    q.add_argument(
        "--ca-file", metavar="PATH", help="where the device keeps the broker's CA certificate (a private CA only)"
    )
    q = sub.add_parser("add-reader", help="a read-only account (the mapper, a map)")
    enrols(q)
    q = sub.add_parser("revoke", help="remove an account (by NAME or device id) from the password file and ACL")
    changes(q)
    q.add_argument("name", metavar="NAME|ID")
    q = sub.add_parser("list", help="list the accounts")
    common(q)
    q.add_argument("--all", action="store_true", help="revoked accounts too")
    q = sub.add_parser("regenerate", help="rewrite the ACL from the registry and acl.local (after editing acl.local)")
    changes(q)
    return p


def device_snippet(enrolment: Enrolment, host: str, port: int, ca_file: str | None) -> str:
    """The TOML the rider pastes into /etc/sousveil/sousveil.toml."""
    a = enrolment.account
    lines = [
        f"# sousveil broker add-device {a.name} ({a.created_utc}): paste into /etc/sousveil/sousveil.toml",
        f"# and copy {enrolment.password_file} to {CREDENTIAL_SOURCE} on the device (root, mode 0600);",
        "# the service reads it as a systemd credential (docs/service.md).",
        "[device]",
        f'id = "{a.username}"',
        "rotate_days = 0",
        "",
        "[mqtt]",
        f'host = "{host}"',
        f"port = {port}",
        f'username = "{a.username}"',
        f'password_file = "{DEVICE_PASSWORD_FILE}"',
        "tls = true",
    ]
    if ca_file:
        lines.append(f'ca_file = "{ca_file}"')
    if a.prefix != DEFAULT_PREFIX:
        lines.append(f'topic_prefix = "{a.prefix}"')
    return "\n".join(lines) + "\n"


def _reload(pid: int | None) -> None:
    if pid is None:
        print("reload mosquitto to apply: systemctl reload mosquitto (or kill -HUP <its pid>)", file=sys.stderr)
        return
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise AccountError(f"cannot send SIGHUP to pid {pid}: {exc.strerror}") from None
    print(f"sent SIGHUP to mosquitto (pid {pid})", file=sys.stderr)


def _line(a: Account) -> str:
    revoked = f"  revoked {a.revoked_utc}" if a.revoked_utc else ""
    return f"{a.name:<24} {a.role:<7} {a.username:<24} {a.prefix:<16} {a.created_utc}{revoked}"


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (AccountError, OSError) as exc:
        why = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"sousveil broker: {why}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    accounts = BrokerAccounts(args.dir)
    if args.action == "list":
        rows = accounts.accounts() if args.all else accounts.live()
        print(f"{'NAME':<24} {'ROLE':<7} {'USERNAME':<24} {'PREFIX':<16} CREATED")
        for a in rows:
            print(_line(a))
        return 0
    if args.action == "add-device":
        if not 0 < args.port < 65536:
            raise AccountError(f"--port: must be 1..65535, got {args.port}")
        enrolment = accounts.add_device(args.name, args.out, args.prefix)
        print(device_snippet(enrolment, args.host or socket.getfqdn(), args.port, args.ca_file), end="")
        print(f"device {args.name!r} enrolled as {enrolment.account.username}", file=sys.stderr)
    elif args.action == "add-reader":
        enrolment = accounts.add_reader(args.name, args.out, args.prefix)
        print(f"reader {args.name!r} enrolled; password in {enrolment.password_file}", file=sys.stderr)
    elif args.action == "revoke":
        gone = accounts.revoke(args.name)
        print(f"revoked {gone.role} {gone.name!r} ({gone.username})", file=sys.stderr)
    else:  # regenerate
        accounts.regenerate_acl()
        print(f"rewrote {accounts.acl}", file=sys.stderr)
    _reload(args.reload_pid)
    return 0
