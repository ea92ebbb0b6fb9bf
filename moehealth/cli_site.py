"""``moehealth site prepare|check|run|personalize SITE.yaml``: what a hospital's IT team runs.

``site check`` exits 0 when every check passes, 2 when the site's config or data is wrong, and 1
when they are fine but the SuperLink cannot be reached or refuses the node."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from shared_model.run_config import TASKS


def cmd_site(args: argparse.Namespace) -> int:
    from client.site.config import SiteConfig
    from client.site.setup import check_site, prepare_site

    if args.action == "personalize":
        return _personalize(args)
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


def _personalize(args: argparse.Namespace) -> int:
    import json

    from client.errors import MoeHealthInputError
    from client.rounds.personalize import FineTuneConfig
    from client.site.config import SiteConfig
    from client.site.personalize import personalize_site
    from shared_model.config import model_config_from_run_config

    if args.model is None or args.out is None:
        raise MoeHealthInputError("site personalize needs --model (the released model file) and "
                                  "--out (a folder at the site)")
    run_config = {}
    if args.run_config:
        try:
            run_config = json.loads(args.run_config.read_text())
        except (OSError, ValueError) as err:
            raise MoeHealthInputError(f"--run-config: {args.run_config}: not a readable run "
                                      f"config.json ({err})") from None
        if not isinstance(run_config, dict):
            raise MoeHealthInputError(f"--run-config: {args.run_config}: a run's config.json "
                                      "holds one JSON object of run-config keys")
    config = SiteConfig.load(args.config)
    report = personalize_site(config, args.model, args.task, args.out,
                              FineTuneConfig(**{k: v for k, v in (
                                  ("max_epochs", args.epochs), ("lr", args.lr),
                                  ("parts", args.parts)) if v is not None}),
                              model_config_from_run_config(run_config), progress=not args.quiet)
    print(report.summary())
    return 0


def add_site_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("site", help="hospital site: prepare data, check, run the SuperNode, "
                                    "personalize the released model")
    p.add_argument("action", choices=["prepare", "check", "run", "personalize"],
                   help="prepare data and features; check everything; run the SuperNode; "
                        "fine-tune the released model on this site's data (kept here)")
    p.add_argument("config", type=Path, help="the site's YAML file")
    p.add_argument("--offline", action="store_true", help="check: skip the SuperLink connection")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--retries", type=int, default=10,
                   help="run: restarts of a SuperNode that exits with an error (refused right "
                        "after a crash, disconnected), with pauses of 10, 20, 40, 60, 60... s")
    p.add_argument("--model", type=Path,
                   help="personalize: the released model (a round checkpoint or a model file)")
    p.add_argument("--run-config", type=Path,
                   help="personalize: the federation's config.json, for its model.* settings "
                        "(default: the built-in model)")
    p.add_argument("--out", type=Path, help="personalize: folder for the model and its report")
    p.add_argument("--task", choices=TASKS, default="mortality",
                   help="personalize: the task the released model predicts")
    p.add_argument("--epochs", type=int,
                   help="personalize: at most this many passes over the training stays "
                        "(default 5)")
    p.add_argument("--lr", type=float, help="personalize: learning rate (default 3e-4)")
    p.add_argument("--parts", choices=["all", "fusion"],
                   help="personalize: all parameters (default), or fusion only (encoders as "
                        "released)")
    p.set_defaults(func=cmd_site)
