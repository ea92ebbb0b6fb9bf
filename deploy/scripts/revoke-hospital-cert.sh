#!/usr/bin/env bash
# Revoke a hospital's TLS client certificate (a removed hospital, a lost or stolen key):
#   deploy/scripts/revoke-hospital-cert.sh CA_DIR SITE.crt CERT_DIR
# Records the revocation in the CA's database, reissues the CRL (make-crl.sh) into CERT_DIR, then
# reload the proxy (reload-proxy.sh STATE_DIR): from then on that certificate fails the TLS
# handshake. Also unregister the hospital's node key: flwr supernode unregister NODE_ID coordinator.
set -euo pipefail
usage="usage: revoke-hospital-cert.sh CA_DIR SITE.crt CERT_DIR"
ca=${1:?$usage}
crt=${2:?$usage}
out=${3:?$usage}
[ -r "$crt" ] || { echo "revoke-hospital-cert.sh: $crt is not readable" >&2; exit 2; }
"$(dirname "$0")/make-crl.sh" "$ca" "$out" >/dev/null  # the CA database and its config
openssl ca -config "$ca/openssl-ca.cnf" -revoke "$crt" 2>/dev/null
"$(dirname "$0")/make-crl.sh" "$ca" "$out"
echo "Revoked $(openssl x509 -in "$crt" -noout -subject -serial | tr '\n' ' '); now run reload-proxy.sh STATE_DIR"
