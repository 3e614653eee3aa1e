#!/bin/sh
# TLS files for the sousveil map broker (docs/broker.md).
#
#   make-ca.sh [--dir DIR] [--days N] NAME [NAME ...]
#       a local CA (made once, kept in DIR/ca.key) and a server certificate for the broker's
#       host names and IP addresses NAME...; run again to renew the server certificate.
#   make-ca.sh [--dir DIR] --use CA.crt SERVER.crt SERVER.key
#       install the operator's own CA and server certificate instead (e.g. from a public CA).
#
# DIR defaults to /etc/mosquitto/sousveil/tls. Writes ca.crt, server.crt, server.key (and
# ca.key for a local CA, mode 0600: keep it, or move it offline between renewals). When the
# group 'mosquitto' exists the server key is made readable by it (mosquitto 2 reads it as that user).
set -eu

dir=/etc/mosquitto/sousveil/tls
days=825
use=0

die() {
    echo "make-ca.sh: $*" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dir) [ $# -ge 2 ] || die "--dir needs a folder"; dir=$2; shift 2 ;;
        --days) [ $# -ge 2 ] || die "--days needs a number"; days=$2; shift 2 ;;
        --use) use=1; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        --) shift; break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) break ;;
    esac
done
case "$days" in
    ''|*[!0-9]*) die "--days: expected a whole number of days, got '$days'" ;;
esac
command -v openssl >/dev/null 2>&1 || die "openssl is not installed (apt-get install openssl)"
umask 077
mkdir -p "$dir"

give_to_mosquitto() {
    if getent group mosquitto >/dev/null 2>&1; then
        chgrp mosquitto "$@" 2>/dev/null && chmod 0640 "$@" && return 0
    fi
    chmod 0600 "$@"
}

if [ "$use" = 1 ]; then
    [ $# -eq 3 ] || die "--use takes three files: CA.crt SERVER.crt SERVER.key"
    for f in "$@"; do [ -r "$f" ] || die "cannot read $f"; done
    openssl verify -CAfile "$1" "$2" >/dev/null 2>&1 || die "$2 is not signed by $1 (openssl verify failed)"
    cert_key=$(openssl x509 -in "$2" -noout -pubkey | openssl sha256)
    key_key=$(openssl pkey -in "$3" -pubout | openssl sha256)
    [ "$cert_key" = "$key_key" ] || die "$3 is not the key of $2"
    cp "$1" "$dir/ca.crt"
    cp "$2" "$dir/server.crt"
    cp "$3" "$dir/server.key"
    chmod 0644 "$dir/ca.crt" "$dir/server.crt"
    give_to_mosquitto "$dir/server.key"
    echo "installed $1, $2 and $3 in $dir"
    exit 0
fi

[ $# -ge 1 ] || die "name the broker's host names or IP addresses (see --help)"
san=""
for name in "$@"; do
    case "$name" in
        *[!0-9.]*)
            case "$name" in
                *:*) entry="IP:$name" ;;           # IPv6
                *[!A-Za-z0-9.-]*) die "not a host name or IP address: '$name'" ;;
                *) entry="DNS:$name" ;;
            esac ;;
        *) entry="IP:$name" ;;
    esac
    san="${san:+$san,}$entry"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -f "$dir/ca.key" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 3650 -subj "/CN=sousveil map broker CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>"$tmp/err" || die "openssl could not make the CA: $(tail -n 1 "$tmp/err")"
    chmod 0600 "$dir/ca.key"
    chmod 0644 "$dir/ca.crt"
    echo "made a CA in $dir (ca.crt goes to the devices, ca.key stays private)"
fi

cat >"$tmp/ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EXT
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tmp/server.key" \
    -out "$tmp/server.csr" -subj "/CN=$1" 2>"$tmp/err" || die "openssl could not make the key: $(tail -n 1 "$tmp/err")"
openssl x509 -req -in "$tmp/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -CAserial "$dir/ca.srl" -out "$tmp/server.crt" -days "$days" -extfile "$tmp/ext" 2>"$tmp/err" \
    || die "openssl could not sign the certificate: $(tail -n 1 "$tmp/err")"
give_to_mosquitto "$tmp/server.key"
chmod 0644 "$tmp/server.crt"
mv "$tmp/server.key" "$dir/server.key"
mv "$tmp/server.crt" "$dir/server.crt"
echo "made server.crt for $san, valid $days days (reload mosquitto to use it)"
