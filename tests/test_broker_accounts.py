"""broker/accounts.py and ``sousveil broker``: password hashes, ACL blocks, the registry, the CLI."""

from __future__ import annotations

import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from broker.accounts import (
    Account,
    AccountError,
    BrokerAccounts,
    acl_lines,
    check_password,
    format_acl,
    hash_password,
    read_passwd,
)
from firmware.cli import main
from firmware.config import parse_config

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_hash_is_mosquittos_pbkdf2_sha512_format() -> None:
    hashed = hash_password("s3cret", salt=bytes(range(12)))
    assert hashed.startswith("$7$101$AAECAwQFBgcICQoL$")
    assert check_password("s3cret", hashed) and not check_password("s3cret!", hashed)
    assert hash_password("s3cret") != hash_password("s3cret")  # a fresh salt each time


@pytest.mark.skipif(MOSQUITTO_PASSWD is None, reason="mosquitto_passwd is not installed")
def test_hash_verifies_a_line_written_by_mosquitto_passwd(tmp_path: Path) -> None:
    assert MOSQUITTO_PASSWD is not None
    pwfile = tmp_path / "passwd"
    subprocess.run(
        [MOSQUITTO_PASSWD, "-c", str(pwfile), "u1"], input="pw-from-stdin\npw-from-stdin\n", text=True, check=True
    )
    hashed = read_passwd(pwfile)["u1"]
    assert check_password("pw-from-stdin", hashed) and not check_password("other", hashed)


def test_acl_blocks_bind_a_device_to_its_id_and_readers_only_read() -> None:
    device = Account("alice", "3f9a1c0e5b7d2468", "device", "sousveil/v1", "t")
    reader = Account("mapper", "mapper", "reader", "sousveil/v1", "t")
    assert acl_lines(device) == [
        "user 3f9a1c0e5b7d2468",
        "topic write sousveil/v1/sightings/+/+/+/+/+/3f9a1c0e5b7d2468",
        "topic write sousveil/v1/status/3f9a1c0e5b7d2468",
    ]
    assert acl_lines(reader) == ["user mapper", "topic read sousveil/v1/sightings/#", "topic read sousveil/v1/status/#"]
    text = format_acl([device, reader], local="user monitor\ntopic read $SYS/#\n")
    assert "pattern" not in text.replace("'", "")
    assert text.index("user monitor") < text.index("user 3f9a")  # acl.local first: no topic line can join a block


def enrol(tmp_path: Path) -> tuple[BrokerAccounts, Path]:
    return BrokerAccounts(tmp_path / "broker"), tmp_path / "out"


def test_add_device_writes_passwd_acl_registry_and_a_private_password_file(tmp_path: Path) -> None:
    accounts, out = enrol(tmp_path)
    e = accounts.add_device("alice", out)
    device = e.account.username
    password = e.password_file.read_text().strip()
    assert e.password_file == out / "alice.pass" and mode(e.password_file) == 0o600
    assert check_password(password, read_passwd(accounts.passwd)[device])
    assert f"user {device}" in accounts.acl.read_text()
    assert mode(accounts.passwd) == 0o640 and mode(accounts.acl) == 0o640 and mode(accounts.registry) == 0o600
    assert password not in accounts.registry.read_text() + accounts.acl.read_text() + accounts.passwd.read_text()
    assert [a.name for a in accounts.live()] == ["alice"]


def test_duplicates_and_bad_names_are_refused(tmp_path: Path) -> None:
    accounts, out = enrol(tmp_path)
    accounts.add_device("alice", out)
    with pytest.raises(AccountError, match="named 'alice' exists"):
        accounts.add_reader("alice", out / "other")
    with pytest.raises(AccountError, match="looks like a device id"):
        accounts.add_reader("0123456789abcdef", out)
    for bad in ("", "a b", "x:y", "-lead", "a/b", "x" * 65):
        with pytest.raises(AccountError, match="name"):
            accounts.add_reader(bad, out)
    with pytest.raises(AccountError, match="topic prefix"):
        accounts.add_reader("map", out, prefix="sousveil/#")
    accounts.add_reader("map", out)
    accounts.revoke("map")
    with pytest.raises(AccountError, match="already exists"):  # an old password file is never overwritten
        accounts.add_reader("map", out)
    assert [a.name for a in accounts.live()] == ["alice"]


def test_revoke_by_name_or_id_removes_login_and_rights_and_keeps_a_record(tmp_path: Path) -> None:
    accounts, out = enrol(tmp_path)
    alice = accounts.add_device("alice", out).account
    bob = accounts.add_device("bob", out).account
    accounts.add_reader("mapper", out)
    assert accounts.revoke(alice.username).name == "alice"
    assert accounts.revoke("mapper").role == "reader"
    assert set(read_passwd(accounts.passwd)) == {bob.username}
    acl = accounts.acl.read_text()
    assert alice.username not in acl and "mapper" not in acl and bob.username in acl
    assert [(a.name, a.revoked_utc is not None) for a in accounts.accounts()] == [
        ("alice", True),
        ("bob", False),
        ("mapper", True),
    ]
    with pytest.raises(AccountError, match="no live account named 'alice'"):
        accounts.revoke("alice")
    again = accounts.add_device("alice", out / "new")  # re-enrolment: a new id and password
    assert again.account.username not in (alice.username, bob.username)


def test_hand_made_passwd_entries_survive_and_block_their_name(tmp_path: Path) -> None:
    accounts, out = enrol(tmp_path)
    accounts.dir.mkdir()
    accounts.passwd.write_text(f"bridge-u3:{hash_password('x')}\n")
    accounts.add_device("alice", out)
    assert "bridge-u3" in read_passwd(accounts.passwd)
    with pytest.raises(AccountError, match="not made by sousveil"):
        accounts.add_reader("bridge-u3", out)


def test_cli_add_device_prints_a_config_the_device_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d, out = tmp_path / "broker", tmp_path / "out"
    args = ["broker", "add-device", "alice", "--dir", str(d), "--out", str(out), "--host", "map.example.org"]
    assert main([*args, "--ca-file", "/etc/sousveil/ca.crt"]) == 0
    printed = capsys.readouterr()
    config = parse_config(tomllib.loads(printed.out), "sousveil.toml", state_dir=tmp_path)
    assert config.mqtt is not None and config.device.id is not None
    assert config.mqtt.username == config.device.id and config.mqtt.port == 8883 and config.mqtt.uses_tls
    assert config.mqtt.password_file == Path("/run/credentials/sousveil.service/mqtt-password")
    assert config.mqtt.ca_file == Path("/etc/sousveil/ca.crt")
    password = (out / "alice.pass").read_text().strip()
    assert password not in printed.out + printed.err
    assert "systemctl reload mosquitto" in printed.err


def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--dir", str(tmp_path / "broker"), "--out", str(tmp_path)]
    assert main(["broker", "add-reader", "mapper", *d]) == 0
    capsys.readouterr()
    assert main(["broker", "add-reader", "mapper", *d]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sousveil broker: ") and err.count("\n") == 1
    assert main(["broker", "revoke", "nobody", "--dir", str(tmp_path / "broker")]) == 2
    assert "no live account named 'nobody'" in capsys.readouterr().err
    assert main(["broker", "revoke", "mapper", "--dir", str(tmp_path / "broker"), "--reload-pid", "999999999"]) == 2
    assert "cannot send SIGHUP to pid 999999999" in capsys.readouterr().err


def test_cli_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--dir", str(tmp_path / "broker")]
    main(["broker", "add-reader", "mapper", *d, "--out", str(tmp_path)])
    main(["broker", "add-device", "alice", *d, "--out", str(tmp_path), "--host", "h"])
    main(["broker", "revoke", "mapper", *d])
    capsys.readouterr()
    assert main(["broker", "list", *d]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("alice") and "device" in lines[1]
    assert main(["broker", "list", "--all", *d]) == 0
    assert "revoked" in capsys.readouterr().out
