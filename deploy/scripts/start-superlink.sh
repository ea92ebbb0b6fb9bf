#!/usr/bin/env bash
# Start the coordinator's SuperLink with TLS and SuperNode authentication.
# Usage: deploy/scripts/start-superlink.sh CERT_DIR STATE_DIR [HOST] [PORT]
# Flower 1.42 serves the Fleet API (hospitals), the Control API (the operator's `flwr` CLI) and
# the runtime API on one HTTPS port (default 0.0.0.0:9092). Only this port needs to be reachable
# from the hospitals; nothing at the hospitals listens for inbound connections.
set -euo pipefail
certs=${1:?usage: start-superlink.sh CERT_DIR STATE_DIR [HOST] [PORT]}
state=${2:?usage: start-superlink.sh CERT_DIR STATE_DIR [HOST] [PORT]}
host=${3:-0.0.0.0}
port=${4:-9092}
mkdir -p "$state"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
exec flower-superlink \
  --ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/server.pem" --ssl-keyfile "$certs/server.key" \
  --enable-supernode-auth --disable-runtime-dependency-installation \
  --host "$host" --port "$port" --database "$state/superlink.db"
