"""``moehealth coordinator register KEY.pub SITE``: register a hospital's SuperNode key with the
SuperLink (``flwr supernode register``) and record node id -> site name in the coordinator's site
registry, which the ServerApp uses to name every reply (run-config ``site-registry``)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from shared_model.errors import MoeHealthInputError


def cmd_register(args: argparse.Namespace) -> int:
    from server.identity import node_key_header, register_site

    if not args.public_key.is_file():
        raise MoeHealthInputError(f"{args.public_key}: no such public key file")
    header = node_key_header(args.public_key)
    flwr = shutil.which("flwr") or "flwr"
    done = subprocess.run([flwr, "supernode", "register", str(args.public_key), args.connection,
                           "--format", "json"], capture_output=True, text=True, timeout=120)
    try:
        node_id = int(json.loads(done.stdout)["node-id"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        print(f"moehealth coordinator: error: flwr supernode register failed (exit "
              f"{done.returncode}): {(done.stdout + done.stderr).strip()[-500:]}", file=sys.stderr)
        return 1
    register_site(args.registry, node_id, args.site, header)
    print(f"registered {args.site} as node {node_id} in {args.registry}; with mutual TLS, "
          "reload the proxy (deploy/scripts/reload-proxy.sh) so it admits this key with the "
          f"certificate CN={args.site}")
    return 0


def cmd_proxy_map(args: argparse.Namespace) -> int:
    from server.identity import proxy_node_key_map

    text = proxy_node_key_map(args.registry)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    return 0


def add_coordinator_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("coordinator", help="coordinator: register a hospital's key under its name")
    actions = p.add_subparsers(dest="action", required=True)
    r = actions.add_parser("register", help="flwr supernode register + the site registry entry")
    r.add_argument("public_key", type=Path, help="the hospital's KEY.pub (make-node-key.sh)")
    r.add_argument("site", help="the hospital's site name (its records are keyed by it)")
    r.add_argument("--registry", type=Path, required=True,
                   help="the site registry JSON (run-config site-registry points at it)")
    r.add_argument("--connection", default="coordinator",
                   help="the flwr connection to the SuperLink (default: coordinator)")
    r.set_defaults(func=cmd_register)
    m = actions.add_parser("proxy-map", help="the proxy's certificate-name -> node-key map, from "
                           "the site registry (start-proxy.sh and reload-proxy.sh run it)")
    m.add_argument("registry", type=Path, help="the site registry JSON")
    m.add_argument("out", type=Path, help="the map file to write (in the proxy's state folder)")
    m.set_defaults(func=cmd_proxy_map)
