#!/usr/bin/env bash
# Prove deploy/install.sh on a fresh Debian bookworm amd64 root (amd64 stands in for the Pi).
# Also: the Pi config it writes on Raspberry Pi OS passes `sousveil check`, a faked Raspberry Pi
# OS without the Pi packages stops the install, and docs/gps-hardware.md's chrony snippet parses.
# Run by hand as root, not in CI:  sudo deploy/test-install-debootstrap.sh [TARGET_DIR]
# Set KEEP=1 to keep TARGET_DIR afterwards; REUSE=1 to reuse an existing debootstrapped root.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${1:-/tmp/sousveil-debootstrap}"
SUITE=bookworm
ARCH=amd64
[ "$(id -u)" -eq 0 ] || { echo "error: run as root" >&2; exit 1; }

# The mirror this machine's apt uses (deb822 .sources or one-line sources.list), else deb.debian.org
MIRROR="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}')"
if [ -z "$MIRROR" ]; then
    MIRROR="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}')"
fi
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "==> installing debootstrap"
    apt-get install -y debootstrap
fi

MOUNTS=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$TARGET"; else echo "kept $TARGET"; fi
}
trap cleanup EXIT

if [ "${REUSE:-0}" = 1 ] && [ -x "$TARGET/usr/bin/apt-get" ]; then
    echo "==> reusing the root in $TARGET"
else
    rm -rf "$TARGET"
    echo "==> debootstrap $SUITE $ARCH from $MIRROR into $TARGET"
    t0=$(date +%s)
    debootstrap --variant=minbase --arch="$ARCH" "$SUITE" "$TARGET" "$MIRROR"
    echo "    debootstrap took $(( $(date +%s) - t0 )) s"
fi

echo "==> copying the repo to $TARGET/src/sousveil"
mkdir -p "$TARGET/src"
rm -rf "$TARGET/src/sousveil"
tar -C "$REPO_DIR" --exclude=.git --exclude=build --exclude='*.egg-info' --exclude=out -cf - . \
    | (mkdir -p "$TARGET/src/sousveil" && tar -C "$TARGET/src/sousveil" -xf -)
cp /etc/resolv.conf "$TARGET/etc/resolv.conf"
# Behind a TLS-intercepting proxy, pip in the chroot needs this machine's CA bundle
EXTRA_ENV=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$TARGET/usr/local/share/host-ca"
    cp /etc/ssl/certs/ca-certificates.crt "$TARGET/usr/local/share/host-ca/ca.crt"
    EXTRA_ENV=(PIP_CERT=/usr/local/share/host-ca/ca.crt SSL_CERT_FILE=/usr/local/share/host-ca/ca.crt)
fi

for m in proc sys dev; do
    mkdir -p "$TARGET/$m"
    case "$m" in
        proc) mount -t proc proc "$TARGET/proc" ;;
        sys) mount -t sysfs sysfs "$TARGET/sys" ;;
        dev) mount --bind /dev "$TARGET/dev" ;;
    esac
    MOUNTS+=("$TARGET/$m")
done

in_root() { chroot "$TARGET" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "${EXTRA_ENV[@]}" "$@"; }

declare -A RESULT
runstep() {
    local name="$1"; shift
    echo; echo "######## $name: $*"
    local t0 rc=0
    t0=$(date +%s)
    in_root "$@" || rc=$?
    RESULT[$name]="rc=$rc ($(( $(date +%s) - t0 )) s)"
}

# The chrony snippet of docs/gps-hardware.md (the code block opened by its file name), as chronyd parses it
CHRONY_CONF=/etc/chrony/conf.d/sousveil-gps.conf
awk -v start="# $CHRONY_CONF" '$0 == start {on = 1} on && /^```/ {exit} on {print}' \
    "$REPO_DIR/docs/gps-hardware.md" > "$TARGET/tmp/sousveil-gps.conf"

runstep "1st install" bash /src/sousveil/deploy/install.sh
# shellcheck disable=SC2016  # $(...) and $rc are for the sh in the chroot
runstep "check" sh -c 'test -x /opt/sousveil/venv/bin/sousveil && /opt/sousveil/venv/bin/sousveil --help >/dev/null && id sousveil && ls -l /etc/sousveil /etc/systemd/system/sousveil.service \
    && test "$(stat -c %a:%U:%s /etc/sousveil/mqtt-password)" = 600:root:0 \
    && grep -q "^WorkingDirectory=%t/sousveil" /etc/systemd/system/sousveil.service \
    && grep -q "^source = \"video\"" /etc/sousveil/sousveil.toml'
runstep "pi config" sh -c 'bash /src/sousveil/deploy/install.sh --print-pi-config > /tmp/pi.toml && /opt/sousveil/venv/bin/sousveil check /tmp/pi.toml && grep -q "^source = \"picamera2\"" /tmp/pi.toml'
# Raspberry Pi OS (faked by its image stamp) without the archive.raspberrypi.com source: must stop, not skip
# shellcheck disable=SC2016
runstep "pi os, no picamera2" sh -c 'touch /etc/rpi-issue; bash /src/sousveil/deploy/install.sh > /tmp/pi-os.log 2>&1; rc=$?; rm -f /etc/rpi-issue; cat /tmp/pi-os.log; test "$rc" = 1 && grep -q "no candidate for python3-picamera2" /tmp/pi-os.log'
runstep "chrony gps conf" sh -c "test -s /tmp/sousveil-gps.conf && cp /tmp/sousveil-gps.conf $CHRONY_CONF && chronyd -p | grep -E '^(refclock|makestep)' && rm -f $CHRONY_CONF"
echo "# user edit" >> "$TARGET/etc/sousveil/sousveil.toml" 2>/dev/null || true
runstep "2nd install" bash /src/sousveil/deploy/install.sh
runstep "config kept" grep -q '^# user edit' /etc/sousveil/sousveil.toml
runstep "uninstall" bash /src/sousveil/deploy/install.sh --uninstall
runstep "after uninstall" sh -c '! test -e /opt/sousveil && ! test -e /etc/systemd/system/sousveil.service && ! id sousveil 2>/dev/null && test -f /etc/sousveil/sousveil.toml && test -f /etc/sousveil/mqtt-password'

echo; echo "======== summary ($SUITE $ARCH, mirror $MIRROR)"
fail=0
for k in "1st install" "check" "pi config" "pi os, no picamera2" "chrony gps conf" "2nd install" "config kept" "uninstall" "after uninstall"; do
    printf '  %-20s %s\n' "$k" "${RESULT[$k]}"
    case "${RESULT[$k]}" in rc=0*) ;; *) fail=1 ;; esac
done
[ "$fail" = 0 ] && echo "  ALL PASSED" || echo "  FAILED"
exit "$fail"
