"""``moehealth experiment NAME``: the paper-style experiments as one command each."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from moehealth.cli_options import DEFAULTS, add_data_args, add_task_arg, federation_data, tasks


def epsilon_list(text: str) -> list[float | str]:
    """``--epsilons``: positive per-site targets, ``inf`` (no DP), ``no-noise`` or
    ``federated`` (the references ``privacy-utility`` pairs every target with)."""
    from simulation.experiments import DEFAULT_FEDERATED, NO_NOISE

    out: list[float | str] = []
    for token in (t.strip() for t in text.split(",")):
        if token in (NO_NOISE, DEFAULT_FEDERATED):
            out.append(token)
            continue
        try:
            value = float(token)
        except ValueError:
            value = math.nan
        if not value > 0:  # also NaN
            raise argparse.ArgumentTypeError(
                f"{token!r} is not a positive epsilon, inf, {NO_NOISE} or {DEFAULT_FEDERATED}")
        out.append(value)
    return out


def recipe_candidate(text: str):
    """``--candidates``: one dp-recipe candidate (simulation.dp_recipe.RecipeCandidate)."""
    from shared_model.errors import MoeHealthInputError
    from simulation.dp_recipe import RecipeCandidate

    try:
        return RecipeCandidate.parse(text)
    except MoeHealthInputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _dp_recipe(args: argparse.Namespace) -> dict[str, object]:
    """The run-config keys a DP experiment's runs share (a dp-recipe candidate overrides
    ``dp.train`` and ``lr``)."""
    return {key: value for key, value in (
        ("init-from", str(args.init_from) if args.init_from else None),
        ("dp.train", args.dp_train), ("dp.batch-size", args.dp_batch_size),
        ("dp.max-grad-norm", args.dp_max_grad_norm), ("lr", args.lr)) if value is not None}


def cmd_experiment(args: argparse.Namespace) -> int:
    """Run one experiment; its tables, CSVs, ``provenance.json`` and model card go to
    ``--out``."""
    import time

    from simulation import experiments as ex
    from simulation.experiment_card import write_experiment_card
    from simulation.results_store import current_commit, measure, write_provenance, write_tables

    started, commit = time.time(), current_commit()
    budget = ex.Budget(rounds=args.rounds, pretrain_rounds=args.pretrain_rounds,
                       local_epochs=args.local_epochs)
    data = federation_data(args)
    if args.name == "fl-vs-central":
        frame = ex.fl_vs_central(args.out, data, tasks(args), args.seeds, budget)
    elif args.name == "privacy-utility":
        frame = ex.privacy_utility(args.out, data, args.epsilons, args.seeds, tasks(args)[0],
                                   budget, _dp_recipe(args), args.dp_units)
    elif args.name == "dp-recipe":
        from simulation.dp_recipe import DEFAULT_CANDIDATES, RecipeCandidate, dp_recipe

        candidates = args.candidates or [RecipeCandidate.parse(c) for c in DEFAULT_CANDIDATES]
        frame = dp_recipe(args.out, data, candidates, args.epsilons[0], args.seeds[0],
                          tasks(args)[0], budget, _dp_recipe(args) | {"dp.unit": args.dp_units[0]})
    elif args.name == "ablations":
        from simulation.baselines import FEDERATED_ABLATIONS

        frame = ex.federated_ablations(args.out, data, args.seeds, tasks(args)[0], budget,
                                       args.variant or FEDERATED_ABLATIONS)
    elif args.name == "yardstick":
        from simulation.tabular_baselines import benchmark_yardstick, yardstick_markdown

        frame, diffs = benchmark_yardstick(data, tasks(args))
        write_tables(args.out, frame, diffs, "Benchmark yardstick: ceilings and tuned tabular "
                     "baselines", yardstick_markdown(frame, diffs))
    elif args.name == "models":
        import pandas as pd

        from simulation.model_comparison import compare_models, comparison_markdown

        variants = args.variant or ["moe-health", "unimodal-ehr", "mlp-fusion"]
        train = {key: value for key, value in (("max_epochs", args.epochs),
                                               ("pretrain_epochs", args.pretrain_epochs),
                                               ("batch_size", args.batch_size))
                 if value is not None}
        parts = [compare_models(data, task, variants, args.seeds, args.lrs, train)
                 for task in tasks(args)]
        frame = pd.concat([rows for rows, _ in parts], ignore_index=True)
        diffs = pd.concat([d for _, d in parts], ignore_index=True)
        write_tables(args.out, frame, diffs, "Centralized MoE-Health vs baselines",
                     comparison_markdown(frame, diffs))
    elif args.name in ("robustness", "external"):
        from simulation.external import external_validation
        from simulation.robustness import robustness

        train = {key: value for key, value in (("max_epochs", args.epochs),
                                               ("pretrain_epochs", args.pretrain_epochs),
                                               ("batch_size", args.batch_size))
                 if value is not None}
        variants = args.variant or ["moe-health", "mlp-fusion", "unimodal-ehr"]
        if args.name == "robustness":
            frame = robustness(args.out, data, tasks(args)[0], variants, args.seeds, args.lrs[0],
                               train, args.fractions)
        else:
            frame = external_validation(args.out, data, tasks(args)[0], variants, args.seeds,
                                        args.lrs[0], train)
    elif args.name == "personalization":
        from client.rounds.personalize import FineTuneConfig

        given = {key: value for key, value in (("max_epochs", args.fine_tune_epochs),
                                               ("lr", args.fine_tune_lr),
                                               ("parts", args.fine_tune_parts)) if value is not None}
        frame = ex.personalization(args.out, data, args.seeds, tasks(args)[0], budget,
                                   FineTuneConfig(**given), args.site_local)
    elif args.name == "heterogeneity":
        frame = ex.heterogeneity(args.out, data, args.missing, args.seeds,
                                 tasks(args)[0], budget, args.aggregations, args.server_lrs)
    else:
        raise ValueError(f"unknown experiment {args.name}")
    provenance = measure(args.name, args.preset or "", str(data.arm), args.seeds, started, commit)
    write_provenance(args.out, provenance)
    write_experiment_card(args.out, args.name, data, frame, provenance)
    print((args.out / "results.md").read_text())
    print(f"{len(frame)} rows; results in {args.out} (with provenance.json)")
    return 0


def add_experiment_commands(sub: argparse._SubParsersAction) -> None:
    from simulation.baselines import AGGREGATIONS, VARIANTS

    p = sub.add_parser("experiment", help="run a paper-style experiment (tables + plots)")
    p.add_argument("name", choices=["fl-vs-central", "ablations", "heterogeneity",
                                    "privacy-utility", "yardstick", "models", "robustness",
                                    "external", "personalization", "dp-recipe"],
                   help="which experiment (README's table); yardstick: reachable ceilings and "
                        "tuned logistic regression / gradient boosting on the cached inputs; "
                        "models: centralized variants vs those, paired intervals; robustness: "
                        "every model with notes / X-rays removed from a fraction of test stays; "
                        "external: leave one hospital out, internal vs external test stays; "
                        "personalization: each site fine-tunes the federated model on its data; "
                        "dp-recipe: DP recipes at one epsilon, chosen on validation")
    p.add_argument("--out", type=Path, required=True, help="folder for results and plots")
    add_task_arg(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    p.add_argument("--rounds", type=int, default=DEFAULTS["num-server-rounds"],
                   help="federated rounds (the baselines get as many epochs)")
    p.add_argument("--pretrain-rounds", type=int, default=DEFAULTS["pretrain-rounds"],
                   help="expert pre-training rounds among them")
    p.add_argument("--local-epochs", type=int, default=DEFAULTS["local-epochs"],
                   help="passes over each site's training split per round")
    p.add_argument("--epsilons", type=epsilon_list, default="1,3,8,no-noise,inf",
                   help="privacy-utility: comma list of per-site targets; no-noise: the same DP "
                        "recipe without noise; inf: no DP; federated: the default non-DP "
                        "federation (no recipe)")
    p.add_argument("--init-from", type=Path,
                   help="privacy-utility, dp-recipe: start every run from this model (public "
                        "pre-training)")
    p.add_argument("--dp-train", choices=["all", "fusion"], help="privacy-utility: dp.train")
    p.add_argument("--dp-batch-size", type=int, help="privacy-utility, dp-recipe: dp.batch-size")
    p.add_argument("--dp-max-grad-norm", type=float, help="privacy-utility, dp-recipe: "
                   "dp.max-grad-norm")
    p.add_argument("--dp-units", nargs="+", choices=["patient", "stay"], default=["patient"],
                   help="privacy-utility: privacy units (dp.unit); two: each epsilon paired "
                        "patient - stay")
    p.add_argument("--lr", type=float, help="privacy-utility: the run's lr")
    p.add_argument("--candidates", type=recipe_candidate, nargs="+",
                   help="dp-recipe: 'public' (the --init-from model alone) or TRAIN:LR:EPOCHS "
                        "(dp.train all|fusion, lr, local epochs), each run at the first of "
                        "--epsilons with the first of --seeds (default: DEFAULT_CANDIDATES of "
                        "simulation/dp_recipe.py)")
    p.add_argument("--variant", action="append", choices=list(VARIANTS),
                   help="models: variant to train (repeatable; default: moe-health, unimodal-ehr, "
                        "mlp-fusion); ablations: variants to federate (default: the paper's "
                        "ablations), the mixture-of-experts ones ranked on validation")
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-4],
                   help="models: learning rates to choose from by validation loss (first seed); "
                        "robustness: the first is used")
    p.add_argument("--epochs", type=int, help="models: maximum epochs (default: CentralizedConfig's)")
    p.add_argument("--pretrain-epochs", type=int,
                   help="models: expert pre-training epochs (default: CentralizedConfig's)")
    p.add_argument("--batch-size", type=int, help="models: batch size (default: CentralizedConfig's)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0],
                   help="robustness: fractions of the test stays with a modality that lose it")
    p.add_argument("--missing", type=int, nargs="+", default=[0, 1, 2],
                   help="heterogeneity: numbers of sites lacking CXR (and notes)")
    p.add_argument("--aggregations", nargs="+", choices=AGGREGATIONS,
                   default=["modality-aware", "fedavg-all"],
                   help="heterogeneity: aggregations to compare; +fedadam: Flower's FedAdam on the "
                        "server, its server-lr chosen on validation among --server-lrs")
    p.add_argument("--server-lrs", type=float, nargs="+", default=[0.003, 0.01, 0.03],
                   help="heterogeneity: FedAdam server-lr candidates (chosen by the first seed's "
                        "AUROC on the skewed sites' pooled validation split)")
    p.add_argument("--fine-tune-epochs", type=int,
                   help="personalization: most local epochs (the best on the site's validation "
                        "loss is kept, the global model included; default: FineTuneConfig's)")
    p.add_argument("--fine-tune-lr", type=float,
                   help="personalization: local lr (default: FineTuneConfig's)")
    p.add_argument("--fine-tune-parts", choices=["all", "fusion"],
                   help="personalization: all parameters (default), or the fusion layers only "
                        "(encoders stay global)")
    p.add_argument("--site-local", default="",
                   help="personalization: also a federation in which each site keeps these "
                        "groups to itself (run-config site-local-groups, e.g. gate)")
    add_data_args(p)
    p.set_defaults(func=cmd_experiment)
