"""``moehealth`` command line: one subcommand per step of the data flow.

Errors in user input (files, columns, sites, configs) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import shared_model.progress_bars  # noqa: F401  (first: no bars when output is not a terminal)
from moehealth.cli_options import DEFAULTS, add_data_args, federation_data
from shared_model.errors import MoeHealthInputError
from shared_model.run_config import CLI_NUM_SITES, Scheme

Handler = Callable[[argparse.Namespace], int]


def _version(package: str = "moehealth") -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cmd_synth(args: argparse.Namespace) -> int:
    from simulation.synth import generate_synthetic_mimic

    summary = generate_synthetic_mimic(args.out, patients=args.patients, seed=args.seed)
    print(json.dumps(summary.__dict__, indent=2))
    return 0


def cmd_cohort(args: argparse.Namespace) -> int:
    from client.mimic.cohort import MimicRoots, build_cohort, cohort_file, write_cohort
    from client.mimic.config import CohortConfig

    started = time.perf_counter()
    out = cohort_file(args.out)
    config = CohortConfig(window_hours=args.window_hours, los_threshold_days=args.los_days,
                          progress=not args.quiet)
    cohort = build_cohort(MimicRoots(args.mimic_iv, args.mimic_note, args.mimic_cxr), config)
    write_cohort(cohort, out)
    print(json.dumps({
        "out": str(out), "stays": len(cohort),
        "labels": {t: int(cohort[t].sum()) for t in ("mortality", "los", "readmission")},
        "with_notes": int(cohort["has_notes"].sum()), "with_cxr": int(cohort["has_cxr"].sum()),
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1)}, indent=2))
    return 0


def cmd_partition(args: argparse.Namespace) -> int:
    from client.data.sites import SplitConfig
    from client.mimic.cohort import read_cohort
    from simulation.partition import PartitionConfig, load_site_profiles, partition_cohort

    config = PartitionConfig(num_sites=args.sites, scheme=args.scheme, alpha=args.alpha,
                             seed=args.seed, split=SplitConfig(seed=args.seed))
    summary = partition_cohort(read_cohort(args.cohort), args.out, config,
                               load_site_profiles(args.profile))
    print(json.dumps(summary, indent=2))
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from client.data.sites import read_site_samples
    from client.features.cache import EncoderConfig, build_site_features

    config = EncoderConfig(text_model_path=args.text_model, image_weights=args.image_weights,
                           device=args.device)
    site_dirs = [args.sites_dir / s for s in args.site] if args.site else sorted(
        p for p in args.sites_dir.iterdir() if (p / "samples.parquet").is_file())
    if not site_dirs:
        raise MoeHealthInputError(f"{args.sites_dir}: no site directories with samples.parquet")
    for site_dir in site_dirs:
        path = build_site_features(read_site_samples(site_dir), site_dir.name, config,
                                   args.cache_dir, progress=not args.quiet)
        print(f"{site_dir.name}: {path}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from simulation.populations import build_populations
    from simulation.prepare import prepare_sites, prepare_test_population

    data = federation_data(args)
    started = time.perf_counter()
    encoders = data.encoder_config(build_populations(data, progress=not args.quiet,
                                                     draw_pacs=True))
    sites = prepare_sites(data, encoders, args.cache_dir, progress=not args.quiet)
    test_population = prepare_test_population(data, encoders, args.cache_dir,
                                              progress=not args.quiet)
    print(json.dumps({"sites": {k: str(v) for k, v in sites.items()},
                      "test_population": test_population and str(test_population),
                      "image_weights": encoders.image_weights,
                      "seconds": round(time.perf_counter() - started, 1),
                      "peak_rss_mb": round(_peak_rss_mb(), 1)}, indent=2))
    return 0


def cmd_pretrain_image(args: argparse.Namespace) -> int:
    from simulation.image_pretraining import PacsPretraining, pretrain_image_encoder

    config = PacsPretraining(patients=args.patients, seed=args.seed, image_size=args.image_size,
                             epochs=args.epochs)
    path = pretrain_image_encoder(config, args.out)
    print(json.dumps({"weights": str(path), "card": str(path.with_suffix(".json"))}, indent=2))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from shared_model.ledger import ledger_table, plot_epsilon, read_ledger, verify_ledger

    rows = read_ledger(args.ledger)
    if args.empirical:
        from client.privacy.canary_audit import run_empirical_audit_cli

        return run_empirical_audit_cli(args)
    findings = verify_ledger(rows, args.tolerance) if args.verify else None
    print(ledger_table(rows, findings), end="")
    if args.plot:
        print(f"plot: {plot_epsilon(rows, args.plot)}")
    if findings is not None:
        bad = [f for f in findings if f.problem]
        print(f"verify: {len(findings) - len(bad)} of {len(findings)} rows consistent with "
              "dp-accounting" + ("" if not bad else f"; {len(bad)} FAIL"))
        return 1 if bad else 0
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Every run-config key of `flwr run . -c 'key=value'`, its default and meaning; with
    ``--check``, the checks the ServerApp makes before any data work, on the given overrides;
    with ``--site``, a site's DP settings in their three spellings (README's table)."""
    from shared_model.run_config import key_comments

    if args.check is not None:
        return check_overrides(args.check)
    if args.site:
        from client.privacy.settings import settings_markdown

        print(settings_markdown(), end="")
        return 0

    comments = key_comments()
    width = max(map(len, DEFAULTS))
    for key, value in DEFAULTS.items():
        print(f"{key:<{width}}  {json.dumps(value):<12}  {comments.get(key, '')}".rstrip())
    return 0


def check_overrides(overrides: list[str]) -> int:
    """``moehealth config --check 'key=value ...'``: the overrides of ``flwr run . -c`` checked
    as the ServerApp checks them (keys, types, settings, files; simulation's data and DP keys),
    without Flower, data or a model."""
    import click
    from flwr.common.config import parse_config_args

    from server.app import resumed_run_config
    from server.run_config_check import check_keys_and_types, check_run_config
    from shared_model.run_config import SIMULATION

    try:
        given = parse_config_args(overrides)
    except (click.ClickException, ValueError) as err:
        message = err.format_message() if isinstance(err, click.ClickException) else str(err)
        raise MoeHealthInputError(f"run config: {message}") from None
    check_keys_and_types(given)
    run_config = resumed_run_config({**DEFAULTS, **given}, given=set(given))
    check_run_config(run_config)
    if run_config.get(SIMULATION):
        from simulation.environment import check_simulation_config

        check_simulation_config(run_config)
    shown = " ".join(f"{k}={json.dumps(v)}" for k, v in given.items()) or "(defaults only)"
    print(f"run config OK: {shown}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from server.report import build_report

    try:
        path = build_report(args.run_dir, args.out)
    except ValueError as err:
        raise MoeHealthInputError(str(err)) from None
    print(f"report: {path} (and report.html, PNGs beside it)")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from server.results import write_results_table
    from shared_model.paths import default_cache_dir

    runs_dir = args.runs_dir or default_cache_dir() / "runs"
    if not runs_dir.is_dir():
        raise MoeHealthInputError(f"{runs_dir}: no such directory of runs")
    from server.results import results_table

    if not results_table(runs_dir):
        raise MoeHealthInputError(f"{runs_dir}: no run directories in it (a run directory holds "
                                  "rounds.jsonl; flwr run prints where each run writes)")
    path = write_results_table(runs_dir)
    print(path.read_text(), end="")
    print(f"results: {path} and results.csv beside it")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moehealth", description=__doc__,
                                     formatter_class=DefaultsFormatter)
    parser.add_argument("--version", action="version",
                        version=f"moehealth {_version()} (flwr {_version('flwr')})")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level (default INFO; -v is DEBUG)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic MIMIC-IV / Note / CXR-JPG set")
    p.add_argument("--out", type=Path, required=True, help="folder for the MIMIC-format tables")
    p.add_argument("--patients", type=int, default=DEFAULTS["data.patients"], help="patients to draw")
    p.add_argument("--seed", type=int, default=DEFAULTS["data.seed"], help="random seed")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("cohort", help="build the prediction cohort (parquet) from MIMIC roots")
    p.add_argument("--mimic-iv", type=Path, required=True, help="MIMIC-IV root (hosp/, icu/)")
    p.add_argument("--mimic-note", type=Path, help="MIMIC-IV-Note root (optional)")
    p.add_argument("--mimic-cxr", type=Path, help="MIMIC-CXR-JPG root (optional)")
    p.add_argument("--out", type=Path, required=True,
                   help="the cohort file to write (an existing folder: FOLDER/cohort.parquet)")
    p.add_argument("--window-hours", type=int, default=48,
                   help="hours after ICU admission the model sees (prediction time)")
    p.add_argument("--los-days", type=float, default=7.0, help="length-of-stay label threshold")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_cohort)

    p = sub.add_parser("partition", help="split a cohort into virtual sites (patient level)")
    p.add_argument("--cohort", type=Path, required=True,
                   help="the cohort file `moehealth cohort` wrote (or its folder)")
    p.add_argument("--out", type=Path, required=True, help="folder of site folders")
    p.add_argument("--sites", type=int, default=CLI_NUM_SITES,
                   help="virtual sites (default: %(default)s)")
    p.add_argument("--scheme", choices=[s.value for s in Scheme], default=DEFAULTS["data.scheme"],
                   help="how patients are split into sites")
    p.add_argument("--alpha", type=float, default=DEFAULTS["data.alpha"],
                   help="Dirichlet concentration")
    p.add_argument("--profile", type=Path, help="site profile YAML (modalities to remove)")
    p.add_argument("--seed", type=int, default=DEFAULTS["data.seed"], help="random seed")
    p.set_defaults(func=cmd_partition)

    p = sub.add_parser("encode", help="run frozen encoders once per sample, cache per site")
    p.add_argument("--sites-dir", type=Path, required=True, help="folder of site folders")
    p.add_argument("--site", action="append", help="site id (repeatable; default: all)")
    p.add_argument("--cache-dir", type=Path, help="default: $MOEHEALTH_CACHE or ~/.cache/moehealth")
    p.add_argument("--text-model", help="local BERT-family model dir (default: bundled MiniLM)")
    p.add_argument("--image-weights", help="local DenseNet-121 state dict (.pt)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("prepare", help="synth -> cohort -> partition -> encode, cached")
    add_data_args(p, seed_flag="--seed")
    p.add_argument("--cache-dir", type=Path, help="default: $MOEHEALTH_CACHE or ~/.cache/moehealth")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("pretrain-image", help="pre-train the DenseNet-121 image backbone on a "
                       "synthetic PACS disjoint from every site (cached state dict)")
    p.add_argument("--patients", type=int, default=1200, help="patients in the synthetic archive")
    p.add_argument("--seed", type=int, default=0, help="seed of the archive and the training")
    p.add_argument("--image-size", type=int, default=128, help="pixels the backbone sees")
    p.add_argument("--epochs", type=int, default=2, help="passes over the archive")
    p.add_argument("--out", type=Path,
                   help="state dict to write (default: $MOEHEALTH_CACHE/image-encoder/...)")
    p.set_defaults(func=cmd_pretrain_image)

    p = sub.add_parser("audit", help="privacy ledger: table, final budgets, --verify, plot")
    p.add_argument("ledger", type=Path, help="a site's ledger.jsonl or a run's privacy_ledger.jsonl")
    p.add_argument("--verify", action="store_true",
                   help="recompute every epsilon with dp-accounting; exit 1 on under-reporting")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="--verify: relative epsilon difference accepted")
    p.add_argument("--plot", type=Path, help="write a PNG of epsilon per round per site")
    p.add_argument("--empirical", action="store_true",
                   help="one-run canary audit (Steinke et al. 2023) of a site's DP-SGD")
    p.add_argument("--features", type=Path, help="--empirical: the site's feature cache dir")
    p.add_argument("--site", help="--empirical: which site of the ledger to audit")
    p.add_argument("--task", default="mortality", help="--empirical: the task trained")
    p.add_argument("--canaries", type=int, default=5000, help="--empirical: canaries inserted")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("config", help="list the run-config keys of `flwr run`, defaults, meanings")
    p.add_argument("--check", nargs="*", metavar="KEY=VALUE",
                   help="check these `flwr run . -c` overrides before running (unknown keys with "
                        "the closest valid one, types, values, files) and exit 0 or 2")
    p.add_argument("--site", action="store_true",
                   help="a site's own DP settings instead: each key as written in the site YAML, "
                        "the node config and (simulation) the run config, with default and unit")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("report", help="Markdown/HTML report with plots of a run directory")
    p.add_argument("run_dir", type=Path, help="a run directory (printed at the start of a run)")
    p.add_argument("--out", type=Path, help="default: RUN_DIR/report")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("results", help="one table of every run under a folder (config, final "
                       "AUROC with interval, status)")
    p.add_argument("runs_dir", type=Path, nargs="?",
                   help="folder of run directories (default: $MOEHEALTH_CACHE/runs)")
    p.set_defaults(func=cmd_results)

    from moehealth.cli_model import add_model_commands

    add_model_commands(sub)
    from moehealth.cli_experiments import add_experiment_commands

    add_experiment_commands(sub)
    from moehealth.cli_site import add_site_commands

    add_site_commands(sub)
    from moehealth.cli_coordinator import add_coordinator_commands

    add_coordinator_commands(sub)
    _show_defaults(parser)
    return parser


class DefaultsFormatter(argparse.RawDescriptionHelpFormatter):
    """Help with every option's default (where it has one)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default is not None and default is not False and default != argparse.SUPPRESS \
                and "%(default)" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """The defaults formatter for every subcommand, however deep."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.formatter_class = DefaultsFormatter
                _show_defaults(sub)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = args.log_level or ("DEBUG" if args.verbose else "INFO")
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (MoeHealthInputError, ValueError) as err:
        print(f"moehealth {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
