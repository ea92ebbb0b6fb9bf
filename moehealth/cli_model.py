"""``moehealth train``: centralized MoE-Health and its baselines on pooled data or one site."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from moehealth.cli_options import add_data_args, add_task_arg, federation_data, tasks
from shared_model.errors import MoeHealthInputError


def cmd_train(args: argparse.Namespace) -> int:
    from client.data.dataset import SiteData, concat_sites
    from server.plots import routing_heatmap
    from simulation.baselines import VARIANTS, variant_model_config
    from simulation.centralized import CentralizedConfig, train_centralized
    from simulation.oracle import REACHABLE, oracle_auroc
    from simulation.prepare import prepare_sites

    data = federation_data(args)
    feature_dirs = prepare_sites(data)
    if args.site and args.site not in feature_dirs:
        raise MoeHealthInputError(f"unknown site '{args.site}' (have: {', '.join(feature_dirs)})")
    variants = list(VARIANTS) if "all" in args.variant else args.variant
    results: dict = {"setting": "site " + args.site if args.site else "pooled", "tasks": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    for task in args.task:
        sites = [SiteData.load(d, task, s) for s, d in feature_dirs.items()
                 if not args.site or s == args.site]
        pooled = concat_sites(sites)
        test = pooled.subset("test")
        test_ids, test_labels = pooled.stay_id[pooled.split == "test"], test.tensors[-1].numpy()
        oracle = oracle_auroc(data.oracle_csv(), test_ids, test_labels, task)
        reachable = oracle_auroc(data.oracle_csv(), test_ids, test_labels, task, REACHABLE)
        task_result = {"oracle_auroc": oracle, "reachable_auroc": reachable, "variants": {}}
        for name in variants:
            chosen = {"lr": args.lr, "max_epochs": args.epochs, "patience": args.patience,
                      "pretrain_epochs": args.pretrain_epochs}
            config = CentralizedConfig(task=task, seed=args.seed,
                                 **{k: v for k, v in chosen.items() if v is not None})
            res = train_centralized(pooled, variant_model_config(name), config,
                                    pretrain=VARIANTS[name].pretrain_experts)
            task_result["variants"][name] = {**{k: v for k, v in res.test.items()},
                                             "fraction_of_reachable": res.test["auroc"] / reachable,
                                             "val_auroc": res.val_auroc, "epochs": res.epochs,
                                             "seconds": round(res.seconds, 1), "routing": res.routing}
            _save_model(res.model, args.out / f"model-{task}-{name}.safetensors")
            if res.routing:
                routing_heatmap(res.routing, args.out / f"routing-{task}-{name}.png",
                                f"{name}, {task}: mean routing weight per expert")
            print(f"{task:12s} {name:22s} test AUROC {res.test['auroc']:.3f}  AUPRC "
                  f"{res.test['auprc']:.3f}  F1 {res.test['f1']:.3f}  ({res.seconds:.0f} s, "
                  f"{res.epochs} epochs)", flush=True)
        results["tasks"][task] = task_result
        print(f"{task:12s} {'reachable ceiling':22s} test AUROC {reachable:.3f}")
        print(f"{task:12s} {'oracle':22s} test AUROC {oracle:.3f}")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(results_markdown(results))
    print(f"results written to {args.out}/results.json and results.md")
    return 0


def _save_model(model, path: Path) -> None:
    """The trained model as a checkpoint a federated run can start from (``init-from``)."""
    from shared_model.checkpoint import write_model_file
    from shared_model.params import model_to_arrays

    write_model_file(path, model_to_arrays(model))


def results_markdown(results: dict) -> str:
    lines = [f"Setting: {results['setting']}", "",
             "| task | variant | AUROC | fraction of reachable ceiling | AUPRC | F1 | epochs | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for task, res in results["tasks"].items():
        for name, r in res["variants"].items():
            lines.append(f"| {task} | {name} | {r['auroc']:.3f} | {r['fraction_of_reachable']:.3f} "
                         f"| {r['auprc']:.3f} | {r['f1']:.3f} | {r['epochs']} | {r['seconds']} |")
        lines.append(f"| {task} | reachable ceiling | {res['reachable_auroc']:.3f} | 1.000 | | | | |")
        lines.append(f"| {task} | true probability (oracle) | {res['oracle_auroc']:.3f} | | | | | |")
    return "\n".join(lines) + "\n"


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    from simulation.baselines import VARIANTS

    p = sub.add_parser("train", help="centralized training: pooled sites or one site, baselines")
    add_data_args(p)
    add_task_arg(p)
    p.add_argument("--variant", action="append", choices=[*VARIANTS, "all"],
                   help="model variant (repeatable; default: moe-health)")
    p.add_argument("--site", help="train on this site only (default: all sites pooled)")
    p.add_argument("--epochs", type=int, help="maximum joint epochs (default: 50)")
    p.add_argument("--pretrain-epochs", type=int, help="expert pre-training epochs (default: 5)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default: 5)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default: 1e-4, the paper's)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--out", type=Path, required=True, help="folder for results and plots")
    p.set_defaults(func=_with_defaults)


def _with_defaults(args: argparse.Namespace) -> int:
    args.task = tasks(args)
    args.variant = args.variant or ["moe-health"]
    return cmd_train(args)
