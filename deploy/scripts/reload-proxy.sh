#!/usr/bin/env bash
# Reload the running proxy (start-proxy.sh) after registering a hospital (its node key joins the
# certificate -> node key map) or revoking a certificate (make-crl.sh wrote a new crl.pem):
#   deploy/scripts/reload-proxy.sh STATE_DIR
# Re-renders STATE_DIR/node-keys.map from the site registry the proxy was started with, checks
# the configuration and reloads nginx without dropping connections in progress.
set -euo pipefail
state=$(cd "${1:?usage: reload-proxy.sh STATE_DIR}" && pwd)
[ -r "$state/nginx.conf" ] || { echo "reload-proxy.sh: $state/nginx.conf missing: start the proxy with start-proxy.sh" >&2; exit 2; }
if [ -r "$state/site-registry.path" ]; then
  moehealth coordinator proxy-map "$(cat "$state/site-registry.path")" "$state/node-keys.map"
fi
nginx -t -q -c "$state/nginx.conf" -p "$state"
nginx -s reload -c "$state/nginx.conf" -p "$state"
echo "reloaded the proxy in $state"
