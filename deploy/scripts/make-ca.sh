#!/usr/bin/env bash
# Create the federation's private certificate authority, then the coordinator's TLS certificate.
# Run once at the coordinating institution. Usage:
#   deploy/scripts/make-ca.sh CA_DIR CERT_DIR [SAN ...]   e.g. make-ca.sh ca certs DNS:coordinator.example.org
# CA_DIR (ca.key) belongs offline or at least away from the SuperLink host; CERT_DIR is what the
# proxy and the SuperLink read. SANs: every name/IP hospitals use to reach the coordinator.
# Rotate the server certificate later with issue-server-cert.sh (same CA: hospitals change nothing).
set -euo pipefail
ca=${1:?usage: make-ca.sh CA_DIR CERT_DIR [SAN ...]}
out=${2:?usage: make-ca.sh CA_DIR CERT_DIR [SAN ...]}
shift 2
if [ -e "$ca/ca.key" ]; then
  echo "make-ca.sh: $ca/ca.key exists; use issue-server-cert.sh to rotate the server certificate" >&2
  exit 2
fi
mkdir -p "$ca"
(umask 077; openssl req -x509 -newkey rsa:4096 -sha256 -days 1825 -nodes -keyout "$ca/ca.key" \
  -out "$ca/ca.crt" -subj "/CN=moehealth federation CA" 2>/dev/null)
chmod 644 "$ca/ca.crt"
"$(dirname "$0")/issue-server-cert.sh" "$ca" "$out" "$@" >/dev/null
"$(dirname "$0")/make-crl.sh" "$ca" "$out" >/dev/null
cat <<MSG
Created:
  $ca/ca.key       PRIVATE to the coordinator, kept off the SuperLink host: signs certificates
  $ca/ca.crt       PUBLIC: send to every hospital (it verifies the coordinator with it)
  $out/server.pem  the coordinator's certificate (proxy and SuperLink), $out/server.key its key
  $out/ca.crt      copy of the CA certificate for the proxy and the SuperLink
  $out/crl.pem     revoked hospital certificates (none yet; reissue yearly: make-crl.sh)
MSG
