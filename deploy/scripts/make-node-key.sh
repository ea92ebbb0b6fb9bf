#!/usr/bin/env bash
# Create a hospital's credentials. Run at the hospital. Usage:
#   deploy/scripts/make-node-key.sh OUT_DIR SITE_ID
# - SuperNode authentication key pair (ECDSA P-384): the coordinator registers the public key.
# - TLS client key and certificate request: the coordinator signs it (sign-hospital-cert.sh) for
#   mutual TLS at its proxy.
# Private keys never leave the hospital.
set -euo pipefail
out=${1:?usage: make-node-key.sh OUT_DIR SITE_ID}
site=${2:?usage: make-node-key.sh OUT_DIR SITE_ID}
mkdir -p "$out"
umask 077
ssh-keygen -q -t ecdsa -b 384 -N "" -C "moehealth-$site" -f "$out/$site.key"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout "$out/$site.tls.key" \
  -out "$out/$site.csr" -subj "/CN=$site/O=moehealth hospital" 2>/dev/null
chmod 644 "$out/$site.key.pub" "$out/$site.csr"
cat <<MSG
Created in $out:
  $site.key       PRIVATE: the SuperNode's authentication key (superlink.auth_private_key)
  $site.key.pub   PUBLIC: send to the coordinator, who registers it:
                  flwr supernode register $site.key.pub <connection>
  $site.tls.key   PRIVATE: the TLS client key (superlink.client_key)
  $site.csr       send to the coordinator, who returns $site.crt (superlink.client_certificate)
MSG
