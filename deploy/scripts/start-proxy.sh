#!/usr/bin/env bash
# Start the coordinator's hospital-facing proxy (nginx) in front of the SuperLink.
# Usage: deploy/scripts/start-proxy.sh CERT_DIR STATE_DIR LISTEN SUPERLINK_PORT [--mtls SITE_REGISTRY]
#   LISTEN          hospital-facing address, e.g. 0.0.0.0:443
#   SUPERLINK_PORT  the SuperLink's port on 127.0.0.1 (start-superlink.sh)
#   --mtls SITE_REGISTRY
#                   require a hospital TLS client certificate signed by the federation CA and not
#                   revoked (CERT_DIR/crl.pem), whose CN is the site the call's node key is
#                   registered as in SITE_REGISTRY (moehealth coordinator register)
# Only /v1/fleet/* (POST) is forwarded; everything else gets 403. Limits (per-address connections,
# timeouts, body size, per-certificate concurrent requests): deploy/README.md, "Limits"; override
# with PROXY_PER_ADDRESS (32), PROXY_PER_CERTIFICATE (8), PROXY_MAX_BODY (8m).
# Runs in the foreground (for a service manager); the rendered config is STATE_DIR/nginx.conf, logs
# are in STATE_DIR. After registering a hospital or revoking a certificate: reload-proxy.sh.
set -euo pipefail
usage="usage: start-proxy.sh CERT_DIR STATE_DIR LISTEN SUPERLINK_PORT [--mtls SITE_REGISTRY]"
fail() { echo "start-proxy.sh: $*" >&2; exit 2; }
certs=$(cd "${1:?$usage}" && pwd)
state=${2:?$usage}
listen=${3:?$usage}
superlink_port=${4:?$usage}
verify=off registry=""
if [ "${5:-}" = "--mtls" ]; then
  verify=on
  registry=${6:?$usage}
  [ -r "$registry" ] || fail "site registry $registry is not readable"
  registry=$(cd "$(dirname "$registry")" && pwd)/$(basename "$registry")
elif [ -n "${5:-}" ]; then
  fail "unknown option '$5' ($usage)"
fi
command -v nginx >/dev/null || fail "nginx is not installed (apt-get install nginx-light libnginx-mod-stream)"
for f in server.pem server.key ca.crt; do
  [ -r "$certs/$f" ] || fail "$certs/$f is not readable"
done
if [ "$verify" = on ] && [ ! -r "$certs/crl.pem" ]; then
  fail "$certs/crl.pem is not readable: make it with deploy/scripts/make-crl.sh CA_DIR $certs"
fi
# the stream module: built in, or Debian's libnginx-mod-stream
load_stream=""
if ! nginx -V 2>&1 | grep -q -- '--with-stream\( \|$\)'; then
  modules=$(nginx -V 2>&1 | sed -n 's/.*--modules-path=\([^ ]*\).*/\1/p')
  module="${modules:-/usr/lib/nginx/modules}/ngx_stream_module.so"
  [ -r "$module" ] || fail "nginx has no stream module (apt-get install libnginx-mod-stream)"
  load_stream="load_module $module;"
fi
mkdir -p "$state/tmp"
state=$(cd "$state" && pwd)
# the socket between the two layers: in a short folder of its own (a unix socket path has at most
# 107 characters) that nginx's unprivileged workers can reach
sockets="${PROXY_SOCKET_DIR:-/tmp/moehealth-proxy-$(printf %s "$state" | sha256sum | cut -c1-12)}"
mkdir -p "$sockets"
[ -O "$sockets" ] || fail "$sockets belongs to another user"
chmod 755 "$sockets"
if [ -n "$registry" ]; then
  moehealth coordinator proxy-map "$registry" "$state/node-keys.map"
  echo "$registry" > "$state/site-registry.path"
  bind='if ($node_key_bound = 0) { return 403 "client certificate and node key are not of one registered site"; }'
  crl="ssl_crl $certs/crl.pem;"
else
  : > "$state/node-keys.map"
  rm -f "$state/site-registry.path"
  bind="# no mutual TLS: no certificate to bind a node key to"
  crl=""
fi
template="$(dirname "$0")/../nginx/moehealth-proxy.conf.template"
sed -e "s|@CERT_DIR@|$certs|g" -e "s|@STATE_DIR@|$state|g" -e "s|@SOCKET_DIR@|$sockets|g" -e "s|@LISTEN@|$listen|g" \
    -e "s|@SUPERLINK_PORT@|$superlink_port|g" -e "s|@VERIFY_CLIENT@|$verify|g" \
    -e "s|@LOAD_STREAM@|$load_stream|g" -e "s|@CRL@|$crl|g" -e "s|@BIND_NODE_KEY@|$bind|g" \
    -e "s|@PER_ADDRESS@|${PROXY_PER_ADDRESS:-32}|g" \
    -e "s|@PER_CERTIFICATE@|${PROXY_PER_CERTIFICATE:-8}|g" \
    -e "s|@MAX_BODY@|${PROXY_MAX_BODY:-8m}|g" \
    "$template" > "$state/nginx.conf"
if [ "$(id -u)" = 0 ]; then  # workers drop to nobody; they need only the temp folders
  sed -i "/^worker_processes/i user nobody nogroup;" "$state/nginx.conf"
  chown -R nobody:nogroup "$state/tmp"
fi
nginx -t -q -c "$state/nginx.conf" -p "$state"
exec nginx -c "$state/nginx.conf" -p "$state" -g "daemon off;"
