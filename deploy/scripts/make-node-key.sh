#!/usr/bin/env bash
# Create a hospital's SuperNode authentication key pair (ECDSA P-384). Run at the hospital.
# Usage: deploy/scripts/make-node-key.sh OUT_DIR SITE_ID
set -euo pipefail
out=${1:?usage: make-node-key.sh OUT_DIR SITE_ID}
site=${2:?usage: make-node-key.sh OUT_DIR SITE_ID}
mkdir -p "$out"
umask 077
ssh-keygen -q -t ecdsa -b 384 -N "" -C "moehealth-$site" -f "$out/$site.key"
chmod 644 "$out/$site.key.pub"
cat <<MSG
Created in $out:
  $site.key      PRIVATE: stays at the hospital; only its SuperNode reads it
  $site.key.pub  PUBLIC: send to the coordinator, who registers it:
                 flwr supernode register $site.key.pub <connection>
MSG
