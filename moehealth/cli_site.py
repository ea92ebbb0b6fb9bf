"""``moehealth site prepare|check|run SITE.yaml``: what a hospital's IT team runs.

``site check`` exits 0 when every check passes, 2 when the site's config or data is wrong, and 1
when they are fine but the SuperLink cannot be reached or refuses the node."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def cmd_site(args: argparse.Namespace) -> int:
    from client.site.config import SiteConfig
    from client.site.setup import check_site, prepare_site

    if args.action == "check":
        results = check_site(args.config, connect=not args.offline)
        for r in results:
            print(f"[{'ok' if r.ok else 'FAIL'}] {r.name}: {r.detail}")
        failed = next((r for r in results if not r.ok), None)
        if failed is None:
            return 0
        return 2 if failed.input_error else 1  # 2: the site's config or data; 1: the SuperLink
    config = SiteConfig.load(args.config)
    features = prepare_site(config, progress=not args.quiet)
    print(f"features: {features}")
    if args.action == "prepare":
        return 0
    command = config.supernode_command(shutil.which("flower-supernode") or "flower-supernode",
                                       features)
    print("starting:", " ".join(command[:-6]), "...", flush=True)
    from client.site.supervise import run_supervised

    def say(line: str) -> None:
        print(line, flush=True)

    code = run_supervised(command, retries=args.retries, say=say)
    return 0 if code == 0 else 1


def add_site_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("site", help="hospital site: prepare data, check, run the SuperNode")
    p.add_argument("action", choices=["prepare", "check", "run"],
                   help="prepare data and features; check everything; run the SuperNode")
    p.add_argument("config", type=Path, help="the site's YAML file")
    p.add_argument("--offline", action="store_true", help="check: skip the SuperLink connection")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--retries", type=int, default=10,
                   help="run: restarts of a SuperNode that exits with an error (refused right "
                        "after a crash, disconnected), with pauses of 10, 20, 40, 60, 60... s")
    p.set_defaults(func=cmd_site)
