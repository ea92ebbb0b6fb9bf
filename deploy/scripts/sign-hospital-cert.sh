#!/usr/bin/env bash
# Sign a hospital's TLS client certificate request (made by make-node-key.sh at the hospital)
# with the federation CA, for mutual TLS at the coordinator's proxy. Run at the coordinator.
# Usage: deploy/scripts/sign-hospital-cert.sh CA_DIR SITE.csr    -> SITE.crt beside the request
set -euo pipefail
ca=${1:?usage: sign-hospital-cert.sh CA_DIR SITE.csr}
csr=${2:?usage: sign-hospital-cert.sh CA_DIR SITE.csr}
[ -r "$csr" ] || { echo "sign-hospital-cert.sh: $csr is not readable" >&2; exit 2; }
crt="${csr%.csr}.crt"
ext=$(mktemp)
trap 'rm -f "$ext"' EXIT
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n' > "$ext"
openssl x509 -req -in "$csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" -CAcreateserial \
  -CAserial "$ca/ca.srl" -out "$crt" -days 825 -sha256 -extfile "$ext" 2>/dev/null
chmod 644 "$crt"
echo "Signed $crt ($(openssl x509 -in "$crt" -noout -subject)); send it back to the hospital."
