#!/usr/bin/env bash
# sousveil installer for Raspberry Pi OS (Debian bookworm/trixie). Run as root; idempotent.
#   sudo deploy/install.sh                 install from this repo checkout (the script's ..)
#   sudo deploy/install.sh --from X        install from a wheel, sdist or source path X
#   sudo deploy/install.sh --dry-run       print the steps, change nothing
#   sudo deploy/install.sh --uninstall [--purge]
#   deploy/install.sh --print-pi-config    print the config installed on Raspberry Pi OS, and exit
# SOUSVEIL_ROOT=/some/dir prefixes every file path (for tests, with --dry-run). See docs/install.md.
set -euo pipefail

ROOT="${SOUSVEIL_ROOT:-}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
SVC_USER=sousveil
PREFIX=/opt/sousveil
VENV="$PREFIX/venv"
ETC_DIR=/etc/sousveil
STATE_DIR=/var/lib/sousveil
UNIT=/etc/systemd/system/sousveil.service
APT_PACKAGES=(python3-venv python3-pip gpsd gpsd-clients chrony)
# Raspberry Pi OS only (archive.raspberrypi.com): the camera, and gpiozero with lgpio, its pin
# backend on a Pi 5 (python3-gpiozero on plain Debian is 1.6 without lgpio; nothing uses it there)
PI_PACKAGES=(python3-picamera2 python3-gpiozero python3-lgpio)
WANT_GROUPS=(video gpio dialout)

DRY_RUN=0
UNINSTALL=0
PURGE=0
PRINT_PI_CONFIG=0
FROM=""

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }  # the header comment

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) PURGE=1 ;;
        --print-pi-config) PRINT_PI_CONFIG=1 ;;
        --from) [ $# -ge 2 ] || { echo "error: --from needs a path" >&2; exit 2; }; FROM="$2"; shift ;;
        --from=*) FROM="${1#--from=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ "$PURGE" = 1 ] && [ "$UNINSTALL" = 0 ]; then
    echo "error: --purge only goes with --uninstall" >&2; exit 2
fi

# The Raspberry Pi config: the example with the on-bike sources (the example's defaults replay a
# recorded video with a GPX track, which a service on a fresh Pi would fail on and restart forever)
pi_config() {
    local example="$SCRIPT_DIR/sousveil.example.toml" out
    out="$(sed -e 's/^source = "video"       /source = "picamera2"   /' \
               -e 's/^source = "gpx"         /source = "gpsd"        /' \
               -e 's/^enabled = false        /enabled = true         /' "$example")"
    if ! grep -q '^source = "picamera2"' <<<"$out" || ! grep -q '^source = "gpsd"' <<<"$out" \
        || ! grep -q '^enabled = true' <<<"$out"; then
        echo "error: $example no longer has the lines pi_config() in $0 rewrites" >&2
        return 1
    fi
    printf '%s\n' "# Raspberry Pi config written by deploy/install.sh from deploy/sousveil.example.toml:"
    printf '%s\n' "# [camera] source = \"picamera2\", [gps] source = \"gpsd\", [gpio] enabled = true."
    printf '%s\n' "# Check it with the service stopped (docs/service.md):  sudo sousveil check --device CONFIG"
    printf '%s\n' "$out"
}
if [ "$PRINT_PI_CONFIG" = 1 ]; then
    pi_config
    exit 0
fi

step() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
# run CMD...: print it; execute it unless --dry-run
run() {
    printf '    + %s\n' "$*"
    if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

if [ "$DRY_RUN" = 1 ]; then
    step "dry run: printing the steps, changing nothing${ROOT:+ (root prefix $ROOT)}"
elif [ "$(id -u)" -ne 0 ]; then
    echo "error: run as root (sudo $0)" >&2; exit 1
fi

systemd_running() {
    # sd_booted(): /run/systemd/system exists; and PID 1 must be systemd (not so in a chroot)
    [ -d "$ROOT/run/systemd/system" ] && [ "$(cat /proc/1/comm 2>/dev/null || true)" = systemd ]
}

# shellcheck disable=SC1090
detect_system() {
    step "detecting the system"
    local id="unknown" codename="unknown" pretty="unknown" arch osr="$ROOT/etc/os-release" why=""
    [ -r "$osr" ] || osr=/etc/os-release
    if [ -r "$osr" ]; then
        id="$(. "$osr"; echo "${ID:-unknown}")"
        codename="$(. "$osr"; echo "${VERSION_CODENAME:-unknown}")"
        pretty="$(. "$osr"; echo "${PRETTY_NAME:-unknown}")"
    fi
    arch="$(dpkg --print-architecture 2>/dev/null || uname -m)"
    # Raspberry Pi OS: its image stamp, the 32-bit id, or apt sources on archive.raspberrypi.com
    IS_PI_OS=0
    if [ -e "$ROOT/etc/rpi-issue" ]; then
        why="/etc/rpi-issue"
    elif [ "$id" = raspbian ]; then
        why="ID=raspbian"
    elif grep -qsE '^[^#]*archive\.raspberrypi\.(com|org)' "$ROOT"/etc/apt/sources.list "$ROOT"/etc/apt/sources.list.d/*; then
        why="an apt source on archive.raspberrypi.com"
    fi
    [ -n "$why" ] && IS_PI_OS=1
    note "OS: $pretty (id=$id, codename=$codename), architecture: $arch"
    if [ "$IS_PI_OS" = 1 ]; then
        note "Raspberry Pi OS detected ($why)"
    elif [ "$id" = debian ]; then
        note "plain Debian (not a Raspberry Pi OS image): Pi-only packages will be skipped"
    else
        warn "not Debian or Raspberry Pi OS ($id); continuing, apt-get may fail"
    fi
    case "$arch" in
        arm64|aarch64) ;;
        *) note "architecture $arch is not the Pi's arm64: fine for testing, the camera will not work" ;;
    esac
}

# candidate PKG: the version apt would install, empty when none (apt-cache policy prints "(none)")
candidate() {
    local v=""
    if command -v apt-cache >/dev/null 2>&1; then
        v="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')"
    fi
    [ "$v" = "(none)" ] && v=""
    printf '%s' "$v"
}

install_packages() {
    step "installing apt packages: ${APT_PACKAGES[*]}"
    local pkgs=("${APT_PACKAGES[@]}") missing=() p v
    # first: on a fresh image the package lists are empty or stale, and the candidates below come from them
    run env DEBIAN_FRONTEND=noninteractive apt-get update
    if [ "$IS_PI_OS" = 1 ]; then
        for p in "${PI_PACKAGES[@]}"; do
            v="$(candidate "$p")"
            if [ -n "$v" ]; then note "$p $v: installing it"; pkgs+=("$p"); else missing+=("$p"); fi
        done
        if [ "${#missing[@]}" -gt 0 ]; then
            local stale=""
            [ "$DRY_RUN" = 1 ] && stale="; a dry run does not run apt-get update, so the lists may be stale"
            echo "error: Raspberry Pi OS, but apt has no candidate for ${missing[*]} (needed for the camera" \
                "and the LED/button): check the archive.raspberrypi.com source in /etc/apt/sources.list.d/" \
                "and the network$stale" >&2
            exit 1
        fi
    else
        note "skipping ${PI_PACKAGES[*]}: not a Raspberry Pi OS image (they come from archive.raspberrypi.com);"
        note "the camera (camera.source = \"picamera2\") and [gpio] will not work here"
    fi
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"
}

create_user() {
    step "system user $SVC_USER (no login, home $STATE_DIR)"
    if getent passwd "$SVC_USER" >/dev/null 2>&1; then
        note "user $SVC_USER exists"
    else
        run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "sousveil camera mapper" "$SVC_USER"
    fi
    local g present=() missing=()
    for g in "${WANT_GROUPS[@]}"; do
        if getent group "$g" >/dev/null 2>&1; then present+=("$g"); else missing+=("$g"); fi
    done
    if [ "${#present[@]}" -gt 0 ]; then
        local joined
        joined="$(IFS=,; echo "${present[*]}")"
        run usermod -a -G "$joined" "$SVC_USER"
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        warn "groups missing on this system, not created: ${missing[*]}"
        note "(sousveil.service names SupplementaryGroups=${WANT_GROUPS[*]}; on a Pi all exist)"
    fi
    run install -d -m 0750 -o "$SVC_USER" -g "$SVC_USER" "$ROOT$STATE_DIR"
}

install_venv() {
    local src="${FROM:-$REPO_DIR}"
    step "virtual environment $VENV (--system-site-packages)"
    if [ -x "$ROOT$VENV/bin/python" ]; then
        note "venv exists"
    else
        run install -d -m 0755 "$ROOT$PREFIX"
        run python3 -m venv --system-site-packages "$ROOT$VENV"
    fi
    step "pip install sousveil from $src"
    if [ -z "$FROM" ] && [ ! -f "$REPO_DIR/pyproject.toml" ]; then
        echo "error: no pyproject.toml in $REPO_DIR; use --from WHEEL_OR_PATH" >&2; exit 1
    fi
    if [ -n "$FROM" ] && [ ! -e "$FROM" ]; then
        echo "error: --from $FROM: no such file or folder" >&2; exit 1
    fi
    run "$ROOT$VENV/bin/pip" install --no-cache-dir --upgrade "$src"
    if [ -z "$FROM" ] && [ -d "$REPO_DIR/docs" ]; then
        note "docs to $PREFIX/docs (the unit's Documentation=)"
        run rm -rf "$ROOT$PREFIX/docs"
        run cp -r "$REPO_DIR/docs" "$ROOT$PREFIX/docs"
    fi
}

install_config() {
    step "config $ETC_DIR/sousveil.toml"
    run install -d -m 0755 "$ROOT$ETC_DIR"
    if [ -e "$ROOT$ETC_DIR/sousveil.toml" ]; then
        note "exists: left as it is (never overwritten); the template is $REPO_DIR/deploy/sousveil.example.toml"
    elif [ "$IS_PI_OS" = 1 ]; then
        note "the Raspberry Pi config: the example with camera picamera2, gps gpsd, gpio enabled ($0 --print-pi-config)"
        local text
        text="$(pi_config)"
        run install -m 0640 -o root -g "$SVC_USER" /dev/stdin "$ROOT$ETC_DIR/sousveil.toml" <<<"$text"
    else
        note "not a Raspberry Pi: the example config (it replays a recorded ride; edit [camera] and [gps])"
        run install -m 0640 -o root -g "$SVC_USER" "$SCRIPT_DIR/sousveil.example.toml" "$ROOT$ETC_DIR/sousveil.toml"
    fi
    # the unit's LoadCredential= source: an empty placeholder for the MQTT password, root only
    if [ -e "$ROOT$ETC_DIR/mqtt-password" ]; then
        note "$ETC_DIR/mqtt-password exists: left as it is"
    else
        note "$ETC_DIR/mqtt-password: empty, root only; put the broker password in it (docs/service.md)"
        run install -m 0600 -o root -g root /dev/null "$ROOT$ETC_DIR/mqtt-password"
    fi
}

install_unit() {
    step "systemd unit $UNIT"
    if [ -f "$ROOT$UNIT" ] && cmp -s "$SCRIPT_DIR/sousveil.service" "$ROOT$UNIT"; then
        note "unit up to date"
    else
        run install -D -m 0644 "$SCRIPT_DIR/sousveil.service" "$ROOT$UNIT"
    fi
    if systemd_running; then
        run systemctl daemon-reload
        run systemctl enable sousveil.service
        note "enabled; start it with: systemctl start sousveil (logs: journalctl -u sousveil)"
    else
        note "unit installed but not enabled: systemd is not running (PID 1 is not systemd, e.g. in a chroot)"
        note "on the booted system run: systemctl daemon-reload && systemctl enable --now sousveil"
    fi
}

uninstall() {
    step "uninstalling sousveil"
    if systemd_running && [ -f "$ROOT$UNIT" ]; then
        run systemctl disable --now sousveil.service
    fi
    if [ -e "$ROOT$UNIT" ]; then run rm -f "$ROOT$UNIT"; else note "no unit at $UNIT"; fi
    if systemd_running; then run systemctl daemon-reload; fi
    if [ -e "$ROOT$PREFIX" ]; then run rm -rf "$ROOT$PREFIX"; else note "no $PREFIX"; fi
    if getent passwd "$SVC_USER" >/dev/null 2>&1; then run userdel "$SVC_USER"; else note "no user $SVC_USER"; fi
    if getent group "$SVC_USER" >/dev/null 2>&1; then run groupdel "$SVC_USER"; fi
    if [ "$PURGE" = 1 ]; then
        step "purging $ETC_DIR and $STATE_DIR"
        run rm -rf "$ROOT$ETC_DIR" "$ROOT$STATE_DIR"
    else
        note "kept $ETC_DIR (config) and $STATE_DIR (data); --uninstall --purge removes them"
    fi
    note "apt packages (gpsd, chrony, ...) are left installed"
}

detect_system
if [ "$UNINSTALL" = 1 ]; then
    uninstall
    step "done: sousveil uninstalled"
    exit 0
fi
install_packages
create_user
install_venv
install_config
install_unit
step "done: sousveil installed${ROOT:+ under $ROOT}"
[ "$DRY_RUN" = 1 ] && note "(dry run: nothing was changed)"
exit 0
