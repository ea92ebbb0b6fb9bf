#!/usr/bin/env bash
# Create a private certificate authority and the SuperLink's TLS certificate.
# Run at the coordinating institution. Usage:
#   deploy/scripts/make-ca.sh OUT_DIR [SAN ...]     e.g. make-ca.sh certs DNS:localhost IP:127.0.0.1
# SANs must include every name/IP the hospitals use to reach the SuperLink.
set -euo pipefail
out=${1:?usage: make-ca.sh OUT_DIR [SAN ...]}
shift || true
sans=("$@")
[ ${#sans[@]} -gt 0 ] || sans=(DNS:localhost IP:127.0.0.1)
san_line=$(IFS=,; echo "${sans[*]}")
mkdir -p "$out"
umask 077
openssl req -x509 -newkey rsa:4096 -sha256 -days 1825 -nodes -keyout "$out/ca.key" \
  -out "$out/ca.crt" -subj "/CN=moehealth federation CA" 2>/dev/null
openssl req -newkey rsa:4096 -sha256 -nodes -keyout "$out/server.key" -out "$out/server.csr" \
  -subj "/CN=moehealth-superlink" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  "$san_line" > "$out/server.ext"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -out "$out/server.pem" -days 825 -sha256 -extfile "$out/server.ext" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext"
chmod 644 "$out/ca.crt" "$out/server.pem"
cat <<MSG
Created in $out:
  ca.key       PRIVATE to the coordinator (offline if possible): signs SuperLink certificates
  ca.crt       PUBLIC: send to every hospital (their SuperNodes verify the SuperLink with it)
  server.pem   SuperLink certificate (SANs: $san_line)
  server.key   PRIVATE to the SuperLink host
MSG
