"""deploy/sousveil.service: the directives the service relies on, and `systemd-analyze verify`.

What verify checks on systemd 252 (Debian 12), found by trying: that every line parses
(unknown keys and bad values are printed as warnings, but the exit status stays 0, hence the
stderr check below) and that ExecStart's binary exists and is executable. It does not look up
User=/Group=/SupplementaryGroups= or LoadCredential= sources, so the test needs no sousveil user.
ExecStart is the only line changed for the check: /opt/sousveil/venv does not exist here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

UNIT = ROOT / "deploy" / "sousveil.service"
EXEC_START = "/opt/sousveil/venv/bin/sousveil run --config /etc/sousveil/sousveil.toml"


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as ordered (key, value) pairs; keys may repeat (DeviceAllow=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"directive outside a section: {line!r}"
        assert not line.endswith("\\"), "no continuation lines, please"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    sections = parse_unit(UNIT.read_text(encoding="utf-8"))
    assert set(sections) == {"Unit", "Service", "Install"}
    out: dict[str, list[str]] = {}
    for key, value in sections["Service"]:
        out.setdefault(key, []).append(value)
    return out


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values is not None, f"{key}= missing"
    assert len(values) == 1, f"{key}= set {len(values)} times"
    return values[0]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecStart", EXEC_START),
        ("WatchdogSec", "30"),
        ("Restart", "on-failure"),
        ("RestartSec", "5"),
        ("User", "sousveil"),
        ("Group", "sousveil"),
        ("StateDirectory", "sousveil"),
        ("ConfigurationDirectory", "sousveil"),
        ("RuntimeDirectory", "sousveil"),
        ("WorkingDirectory", "%t/sousveil"),
        ("LoadCredential", "mqtt-password:/etc/sousveil/mqtt-password"),
        ("SetCredential", "mqtt-password:\\n"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictNamespaces", "yes"),
        ("SystemCallArchitectures", "native"),
        ("PrivateDevices", "no"),
        ("TimeoutStopSec", "20"),
        ("KillSignal", "SIGTERM"),
    ],
)
def test_directive(service: dict[str, list[str]], key: str, value: str) -> None:
    assert one(service, key) == value


def environment(service: dict[str, list[str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in service.get("Environment", []):
        for assignment in line.split():
            key, _, value = assignment.partition("=")
            assert key not in env, f"{key} set twice"
            env[key] = value
    return env


def test_environment(service: dict[str, list[str]]) -> None:
    assert environment(service) == {"SOUSVEIL_STATE_DIR": "%S/sousveil", "LG_WD": "%t/sousveil"}


def test_lgpio_can_make_its_fifos(service: dict[str, list[str]]) -> None:
    """lgpio makes .lgd-nfy* FIFOs in $LG_WD, else the working directory (default /, read-only under
    ProtectSystem=strict): both must name a folder systemd creates writable for the service."""
    assert one(service, "ProtectSystem") == "strict"
    writable = {f"%t/{one(service, 'RuntimeDirectory')}", f"%S/{one(service, 'StateDirectory')}"}
    assert one(service, "WorkingDirectory") in writable
    assert environment(service)["LG_WD"] == one(service, "WorkingDirectory")
    # %t/... is tmpfs: the FIFOs never touch the SD card and go with the service
    assert one(service, "WorkingDirectory") == "%t/" + one(service, "RuntimeDirectory")


def test_missing_password_file_is_not_fatal(service: dict[str, list[str]]) -> None:
    """LoadCredential= of a missing file fails the start (243/CREDENTIALS) unless a SetCredential= of
    the same id stands in for it (systemd.exec(5)); its value must be non-empty (an empty one is
    "Invalid syntax, ignoring" on systemd 252, so no fallback) and read as no password."""
    loaded = {v.partition(":")[0] for v in service["LoadCredential"]}
    fallback = {v.partition(":")[0]: v.partition(":")[2] for v in service["SetCredential"]}
    assert loaded == set(fallback) == {"mqtt-password"}
    assert fallback["mqtt-password"] == "\\n"  # one newline: sousveil reads it as an empty password


def test_groups_for_camera_gpio_and_serial(service: dict[str, list[str]]) -> None:
    assert set(one(service, "SupplementaryGroups").split()) == {"video", "gpio", "dialout"}


def test_memory_deny_write_execute_is_left_off(service: dict[str, list[str]]) -> None:
    # XNNPACK (LiteRT's CPU delegate) may JIT code into W+X pages
    assert "MemoryDenyWriteExecute" not in service


def test_camera_gpio_and_uart_devices_are_allowed(service: dict[str, list[str]]) -> None:
    allowed = {spec for spec, _, _ in (v.partition(" ") for v in service["DeviceAllow"])}
    wanted = {"char-video4linux", "char-media", "char-dma_heap", "char-vchiq", "char-gpiochip", "char-ttyAMA"}
    assert wanted <= allowed
    for value in service["DeviceAllow"]:
        spec, _, access = value.partition(" ")
        assert access == "rw", value
        # globs work only on device groups, never on /dev paths (systemd.resource-control(5))
        assert not (spec.startswith("/dev/") and any(c in spec for c in "*?[")), value


def test_installed_for_multi_user(service: dict[str, list[str]]) -> None:
    sections = parse_unit(UNIT.read_text(encoding="utf-8"))
    assert ("WantedBy", "multi-user.target") in sections["Install"]


def verify(unit: Path, tmp_path: Path, exec_path: str, tail: str = "") -> None:
    """`systemd-analyze verify` on a copy of ``unit`` whose ``exec_path`` (absent here) is this venv's
    own entry point; verify exits 0 on typos, so no line of its output may name our unit either."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian/Ubuntu: apt install systemd)")
    executable = Path(sys.executable).parent / "sousveil"
    if not os.access(executable, os.X_OK):
        executable = Path(sys.executable)
    text = unit.read_text(encoding="utf-8")
    assert text.count(exec_path) == 1
    copy = tmp_path / unit.name  # verify wants the real unit name
    copy.write_text(text.replace(exec_path, f"ExecStart={executable}{tail}"), encoding="utf-8")
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "cat", "LC_ALL": "C"}
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    # verify may also grumble about the host's own units; only lines about ours count
    ours = [line for line in output.splitlines() if "sousveil" in line]
    assert result.returncode == 0, output
    assert ours == [], output


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    verify(UNIT, tmp_path, f"ExecStart={EXEC_START}\n", " run --config /etc/sousveil/sousveil.toml\n")


def test_verify_catches_a_bad_directive(tmp_path: Path) -> None:
    """The stderr check above is what catches typos: verify exits 0 on them."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian/Ubuntu: apt install systemd)")
    text = UNIT.read_text(encoding="utf-8").replace(f"ExecStart={EXEC_START}", f"ExecStart={sys.executable}")
    copy = tmp_path / "sousveil.service"
    copy.write_text(text.replace("Type=notify", "Type=notifyy"), encoding="utf-8")
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    assert "sousveil.service" in result.stdout + result.stderr


MAPPER_UNIT = ROOT / "deploy" / "sousveil-mapper.service"


def test_mapper_unit_runs_map_run_with_its_store_and_credential() -> None:
    sections = parse_unit(MAPPER_UNIT.read_text(encoding="utf-8"))
    service = dict(sections["Service"])
    exec_start = service["ExecStart"].split()
    assert exec_start[1:3] == ["map", "run"]
    assert exec_start[exec_start.index("--store") + 1] == "%S/sousveil-mapper/map.db"
    assert exec_start[exec_start.index("--password-file") + 1] == "%d/mapper-password"
    assert service["LoadCredential"] == "mapper-password:/etc/sousveil/mapper-password"
    assert service["StateDirectory"] == "sousveil-mapper" and service["DynamicUser"] == "yes"
    assert service["ProtectSystem"] == "strict" and service["KillSignal"] == "SIGTERM"
    # every option the unit passes is one `sousveil map run` knows
    from firmware.cli import build_parser

    args = build_parser().parse_args(exec_start[1:-1])  # the last word is $SOUSVEIL_MAPPER_ARGS
    assert args.map_command == "run" and args.stats_every == 300


def test_mapper_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    exec_start = dict(parse_unit(MAPPER_UNIT.read_text(encoding="utf-8"))["Service"])["ExecStart"]
    verify(
        MAPPER_UNIT,
        tmp_path,
        "ExecStart=/opt/sousveil/venv/bin/sousveil",
        exec_start.removeprefix("/opt/sousveil/venv/bin/sousveil"),
    )


def test_example_config_points_password_file_at_the_credential(service: dict[str, list[str]]) -> None:
    """The example's password_file is where systemd puts the unit's LoadCredential= copy
    (%d = /run/credentials/<unit>/) and the source it names is what install.sh creates."""
    cred_id, _, source = one(service, "LoadCredential").partition(":")
    example = (ROOT / "deploy" / "sousveil.example.toml").read_text(encoding="utf-8")
    lines = [line for line in example.splitlines() if line.startswith("# password_file = ")]
    assert len(lines) == 1, lines
    path = lines[0].split('"')[1]
    assert path == f"/run/credentials/{UNIT.name}/{cred_id}"
    install = (ROOT / "deploy" / "install.sh").read_text(encoding="utf-8")
    assert source == "/etc/sousveil/mqtt-password" and 'ETC_DIR/mqtt-password"' in install
