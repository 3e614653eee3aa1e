"""deploy/install.sh: syntax, a --dry-run that changes nothing, shellcheck. CI-safe.

The real install is proven by hand on a debootstrapped Debian root:
deploy/test-install-debootstrap.sh (docs/install.md).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "deploy" / "install.sh"
DEBOOTSTRAP_TEST = REPO / "deploy" / "test-install-debootstrap.sh"

bash = shutil.which("bash")
pytestmark = pytest.mark.skipif(bash is None, reason="bash not installed")


def _dry_run(tmp_path, *args, path_prefix=None):
    env = dict(os.environ, SOUSVEIL_ROOT=str(tmp_path))
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [bash, str(INSTALL), "--dry-run", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("script", [INSTALL, DEBOOTSTRAP_TEST], ids=lambda p: p.name)
def test_bash_syntax(script):
    r = subprocess.run([bash, "-n", str(script)], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_dry_run_prints_steps_and_writes_nothing(tmp_path):
    r = _dry_run(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for expected in (
        "detecting the system",
        "apt-get install -y --no-install-recommends python3-venv python3-pip gpsd gpsd-clients chrony",
        "system user sousveil",
        "--system-site-packages",
        f"{tmp_path}/opt/sousveil/venv",
        f"pip install --no-cache-dir --upgrade {REPO}",
        f"{tmp_path}/etc/sousveil/sousveil.toml",
        f"{tmp_path}/etc/systemd/system/sousveil.service",
        "dry run: nothing was changed",
    ):
        assert expected in out, f"missing {expected!r} in:\n{out}"
    assert "python3-picamera2" in out  # either installed or skipped with the message
    assert list(tmp_path.iterdir()) == [], "dry run wrote files"


def test_dry_run_keeps_an_existing_config(tmp_path):
    cfg = tmp_path / "etc" / "sousveil" / "sousveil.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("# mine\n")
    r = _dry_run(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "left as it is (never overwritten)" in r.stdout
    assert "install -m 0640" not in r.stdout


def test_dry_run_uninstall_keeps_data_unless_purge(tmp_path):
    r = _dry_run(tmp_path, "--uninstall")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kept /etc/sousveil (config) and /var/lib/sousveil (data)" in r.stdout
    r = _dry_run(tmp_path, "--uninstall", "--purge")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"rm -rf {tmp_path}/etc/sousveil {tmp_path}/var/lib/sousveil" in r.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def fake_apt_cache(tmp_path_factory):
    """A folder with an ``apt-cache`` whose ``policy`` gives the candidate in $FAKE_CANDIDATE (else
    none) and logs its calls, put first on PATH: the Pi OS branch without a Pi."""
    bindir = tmp_path_factory.mktemp("bin")
    log = bindir / "calls.log"
    script = bindir / "apt-cache"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        'echo "$2:"\necho "  Installed: (none)"\necho "  Candidate: ${FAKE_CANDIDATE:-(none)}"\n'
    )
    script.chmod(0o755)
    return bindir, log


def _pi_os(root, how):
    if how == "rpi-issue":
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "rpi-issue").write_text("Raspberry Pi reference 2025-05-13\n")
    else:  # the apt source Raspberry Pi OS ships
        src = root / "etc" / "apt" / "sources.list.d"
        src.mkdir(parents=True)
        (src / "raspi.sources").write_text(
            "Types: deb\nURIs: http://archive.raspberrypi.com/debian/\nSuites: bookworm\nComponents: main\n"
        )


def test_apt_get_update_comes_before_the_candidate_check(tmp_path, fake_apt_cache, monkeypatch):
    """On a fresh image the package lists are empty: asking apt-cache before the update would miss
    python3-picamera2 (and, on Raspberry Pi OS, now stop the install)."""
    bindir, _ = fake_apt_cache
    _pi_os(tmp_path, "rpi-issue")
    monkeypatch.setenv("FAKE_CANDIDATE", "0.3.31-1")
    r = _dry_run(tmp_path, path_prefix=bindir)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    update = lines.index("    + env DEBIAN_FRONTEND=noninteractive apt-get update")
    checked = lines.index("    python3-picamera2 0.3.31-1: installing it")
    install = next(i for i, line in enumerate(lines) if "apt-get install" in line)
    assert update < checked < install


@pytest.mark.parametrize("how", ["rpi-issue", "raspi-apt-source"])
def test_pi_os_without_picamera2_fails_instead_of_skipping(tmp_path, fake_apt_cache, how):
    bindir, log = fake_apt_cache
    _pi_os(tmp_path, how)
    r = _dry_run(tmp_path, path_prefix=bindir)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Raspberry Pi OS detected" in r.stdout
    assert "no candidate for python3-picamera2 python3-gpiozero python3-lgpio" in r.stderr
    assert "apt-get update" in r.stdout and "skipping" not in r.stdout
    assert "policy python3-picamera2" in log.read_text()


def test_pi_os_installs_the_pi_packages_and_the_pi_config(tmp_path, fake_apt_cache, monkeypatch):
    bindir, _ = fake_apt_cache
    _pi_os(tmp_path, "raspi-apt-source")
    monkeypatch.setenv("FAKE_CANDIDATE", "0.3.31-1")
    r = _dry_run(tmp_path, path_prefix=bindir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        "apt-get install -y --no-install-recommends python3-venv python3-pip gpsd gpsd-clients chrony"
        " python3-picamera2 python3-gpiozero python3-lgpio"
    ) in r.stdout
    assert f"install -m 0640 -o root -g sousveil /dev/stdin {tmp_path}/etc/sousveil/sousveil.toml" in r.stdout


def test_plain_debian_skips_the_pi_packages_with_a_message(tmp_path, fake_apt_cache, monkeypatch):
    bindir, _ = fake_apt_cache
    monkeypatch.setenv("FAKE_CANDIDATE", "1.0")  # even when apt could: not a Pi OS image
    r = _dry_run(tmp_path, path_prefix=bindir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "skipping python3-picamera2 python3-gpiozero python3-lgpio: not a Raspberry Pi OS image" in r.stdout
    assert "python3-lgpio" not in r.stdout.split("apt-get install", 1)[1].splitlines()[0]
    assert f"sousveil.example.toml {tmp_path}/etc/sousveil/sousveil.toml" in r.stdout


def test_the_pi_config_runs_the_camera_gpsd_and_gpio(tmp_path):
    from firmware.config import load_config

    r = subprocess.run([bash, str(INSTALL), "--print-pi-config"], check=True, capture_output=True, text=True)
    config_file = tmp_path / "sousveil.toml"
    config_file.write_text(r.stdout)
    config = load_config(config_file, state_dir=tmp_path)
    assert config.camera.source == "picamera2" and config.gps.source == "gpsd" and config.gpio.enabled
    example = load_config(REPO / "deploy" / "sousveil.example.toml", state_dir=tmp_path)
    assert (example.camera.source, example.gps.source, example.gpio.enabled) == ("video", "gpx", False)
    # nothing else differs from the example
    assert config.detector == example.detector and config.tracker == example.tracker
    assert config.camera.width == example.camera.width and config.gps.port == example.gps.port


def test_mqtt_password_placeholder_is_made_once(tmp_path):
    r = _dry_run(tmp_path)
    assert f"install -m 0600 -o root -g root /dev/null {tmp_path}/etc/sousveil/mqtt-password" in r.stdout
    secret = tmp_path / "etc" / "sousveil" / "mqtt-password"
    secret.parent.mkdir(parents=True)
    secret.write_text("hunter2\n")
    r = _dry_run(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "/etc/sousveil/mqtt-password exists: left as it is" in r.stdout
    assert "/dev/null" not in r.stdout


def test_help_prints_the_header_comment_only():
    r = subprocess.run([bash, str(INSTALL), "--help"], check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("sousveil installer for Raspberry Pi OS")
    assert lines[-1].startswith("SOUSVEIL_ROOT=") and "--print-pi-config" in r.stdout
    assert "set -euo pipefail" not in r.stdout and "#" not in r.stdout


def test_bad_options(tmp_path):
    assert _dry_run(tmp_path, "--bogus").returncode == 2
    assert _dry_run(tmp_path, "--purge").returncode == 2
    assert _dry_run(tmp_path, "--from", str(tmp_path / "missing.whl")).returncode == 1


@pytest.mark.parametrize("script", [INSTALL, DEBOOTSTRAP_TEST], ids=lambda p: p.name)
def test_shellcheck(script):
    sc = shutil.which("shellcheck")
    if sc is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    r = subprocess.run([sc, str(script)], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
