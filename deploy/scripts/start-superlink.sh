#!/usr/bin/env bash
# Start the coordinator's SuperLink with TLS and SuperNode authentication.
# Usage: deploy/scripts/start-superlink.sh CERT_DIR STATE_DIR [HOST] [PORT]
# Flower 1.42 serves the Fleet API (hospitals), the Control API (the operator's `flwr` CLI, with
# no operator authentication) and the runtime API on one HTTPS port. It therefore listens on
# 127.0.0.1 (default 127.0.0.1:9092): hospitals reach the Fleet API only through the proxy
# (start-proxy.sh), operators use the Control API on this host.
set -euo pipefail
certs=${1:?usage: start-superlink.sh CERT_DIR STATE_DIR [HOST] [PORT]}
state=${2:?usage: start-superlink.sh CERT_DIR STATE_DIR [HOST] [PORT]}
host=${3:-127.0.0.1}
port=${4:-9092}
mkdir -p "$state"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
exec flower-superlink \
  --ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/server.pem" --ssl-keyfile "$certs/server.key" \
  --enable-supernode-auth --disable-runtime-dependency-installation \
  --host "$host" --port "$port" --database "$state/superlink.db"
