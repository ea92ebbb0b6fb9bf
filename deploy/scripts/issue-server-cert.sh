#!/usr/bin/env bash
# Issue (or rotate) the coordinator's TLS certificate from the existing federation CA; the CA,
# and so every hospital's ca.crt, stays the same. Run at the coordinator. Usage:
#   deploy/scripts/issue-server-cert.sh CA_DIR OUT_DIR [SAN ...]
#   e.g. issue-server-cert.sh ca certs DNS:coordinator.example.org IP:203.0.113.10
# The certificate serves the hospital-facing proxy and the SuperLink behind it on loopback, so
# DNS:localhost and IP:127.0.0.1 are always added to the SANs given.
set -euo pipefail
ca=${1:?usage: issue-server-cert.sh CA_DIR OUT_DIR [SAN ...]}
out=${2:?usage: issue-server-cert.sh CA_DIR OUT_DIR [SAN ...]}
shift 2
[ -r "$ca/ca.key" ] && [ -r "$ca/ca.crt" ] || { echo "issue-server-cert.sh: $ca/ca.key and $ca/ca.crt are needed" >&2; exit 2; }
sans=("$@" DNS:localhost IP:127.0.0.1)
san_line=$(printf '%s\n' "${sans[@]}" | awk '!seen[$0]++' | paste -sd, -)
mkdir -p "$out"
umask 077
openssl req -newkey rsa:4096 -sha256 -nodes -keyout "$out/server.key.new" -out "$out/server.csr" \
  -subj "/CN=moehealth-coordinator" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  "$san_line" > "$out/server.ext"
openssl x509 -req -in "$out/server.csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" -CAcreateserial \
  -CAserial "$ca/ca.srl" -out "$out/server.pem.new" -days 825 -sha256 -extfile "$out/server.ext" 2>/dev/null
mv "$out/server.key.new" "$out/server.key"
mv "$out/server.pem.new" "$out/server.pem"
cp "$ca/ca.crt" "$out/ca.crt"
rm -f "$out/server.csr" "$out/server.ext"
chmod 644 "$out/ca.crt" "$out/server.pem"
echo "Issued $out/server.pem (SANs: $san_line) from $ca/ca.crt; restart the proxy and the SuperLink."
