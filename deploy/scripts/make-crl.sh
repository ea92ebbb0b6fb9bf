#!/usr/bin/env bash
# (Re)issue the federation's certificate revocation list and install it for the proxy:
#   deploy/scripts/make-crl.sh CA_DIR CERT_DIR
# Writes CA_DIR/crl.pem (signed with ca.key, valid 365 days) and copies it to CERT_DIR/crl.pem,
# which the proxy checks every hospital certificate against (start-proxy.sh --mtls). Run it when a
# certificate is revoked (revoke-hospital-cert.sh does) and at least yearly: an expired CRL makes
# the proxy refuse every hospital. Then deploy/scripts/reload-proxy.sh STATE_DIR.
set -euo pipefail
ca=$(cd "${1:?usage: make-crl.sh CA_DIR CERT_DIR}" && pwd)
out=${2:?usage: make-crl.sh CA_DIR CERT_DIR}
[ -r "$ca/ca.key" ] || { echo "make-crl.sh: $ca/ca.key is not readable (the CA's private key signs the list)" >&2; exit 2; }
touch "$ca/index.txt"
[ -s "$ca/crlnumber" ] || echo 1000 > "$ca/crlnumber"
cat > "$ca/openssl-ca.cnf" <<CNF
[ ca ]
default_ca = federation
[ federation ]
dir = $ca
database = \$dir/index.txt
crlnumber = \$dir/crlnumber
certificate = \$dir/ca.crt
private_key = \$dir/ca.key
default_md = sha256
default_crl_days = 365
CNF
openssl ca -config "$ca/openssl-ca.cnf" -gencrl -out "$ca/crl.pem" 2>/dev/null
mkdir -p "$out"
cp "$ca/crl.pem" "$out/crl.pem"
chmod 644 "$out/crl.pem"
echo "CRL $out/crl.pem: $(openssl crl -in "$ca/crl.pem" -noout -text | grep -c 'Serial Number') revoked, next update $(openssl crl -in "$ca/crl.pem" -noout -nextupdate | cut -d= -f2)"
