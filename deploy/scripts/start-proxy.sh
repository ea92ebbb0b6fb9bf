#!/usr/bin/env bash
# Start the coordinator's hospital-facing proxy (nginx) in front of the SuperLink.
# Usage: deploy/scripts/start-proxy.sh CERT_DIR STATE_DIR LISTEN SUPERLINK_PORT [--mtls]
#   LISTEN          hospital-facing address, e.g. 0.0.0.0:443
#   SUPERLINK_PORT  the SuperLink's port on 127.0.0.1 (start-superlink.sh)
#   --mtls          require a hospital TLS client certificate signed by the federation CA
# Only /v1/fleet/* (POST) is forwarded; everything else gets 403. Runs in the foreground (for a
# service manager); the rendered config is STATE_DIR/nginx.conf, logs are in STATE_DIR.
set -euo pipefail
usage="usage: start-proxy.sh CERT_DIR STATE_DIR LISTEN SUPERLINK_PORT [--mtls]"
certs=$(cd "${1:?$usage}" && pwd)
state=${2:?$usage}
listen=${3:?$usage}
superlink_port=${4:?$usage}
verify=off
[ "${5:-}" = "--mtls" ] && verify=on
command -v nginx >/dev/null || { echo "start-proxy.sh: nginx is not installed (apt-get install nginx-light)" >&2; exit 2; }
for f in server.pem server.key ca.crt; do
  [ -r "$certs/$f" ] || { echo "start-proxy.sh: $certs/$f is not readable" >&2; exit 2; }
done
mkdir -p "$state/tmp"
state=$(cd "$state" && pwd)
template="$(dirname "$0")/../nginx/moehealth-proxy.conf.template"
sed -e "s|@CERT_DIR@|$certs|g" -e "s|@STATE_DIR@|$state|g" -e "s|@LISTEN@|$listen|g" \
    -e "s|@SUPERLINK_PORT@|$superlink_port|g" -e "s|@VERIFY_CLIENT@|$verify|g" \
    "$template" > "$state/nginx.conf"
if [ "$(id -u)" = 0 ]; then  # workers drop to nobody; they need only the temp folders
  sed -i "1i user nobody nogroup;" "$state/nginx.conf"
  chown -R nobody:nogroup "$state/tmp"
fi
nginx -t -q -c "$state/nginx.conf" -p "$state"
exec nginx -c "$state/nginx.conf" -p "$state" -g "daemon off;"
