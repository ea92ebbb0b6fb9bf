"""What a simulated run adds to the coordinator: virtual sites prepared and described in a sites
manifest (one deployment-shaped node config per site), and the pooled test evaluation."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from client.data.dataset import SiteData, concat_sites
from client.data.sites import read_site_samples
from client.mimic.cohort import read_cohort
from client.privacy.settings import DPSettings
from client.rounds.clinical import (
    calibration_intervals,
    decision_curve,
    platt_recalibrated,
    stay_subgroups,
    subgroup_metrics,
    threshold_table,
)
from client.rounds.evaluation import (
    best_f1_threshold,
    bootstrap_auroc,
    evaluate_predictions,
    reliability_bins,
)
from client.rounds.training import predict, resolve_device
from client.site.manifest import MANIFEST_NAME, write_manifest
from server.app import PooledEvaluate, SimulatedSites
from server.run_dir import DATA_SUMMARY
from server.settings import FederationSettings
from shared_model import ModelConfig, build_model
from shared_model.config import model_config_from_run_config
from shared_model.errors import MoeHealthInputError
from shared_model.modalities import MODALITIES
from shared_model.params import load_arrays
from shared_model.protocol import (
    DECISION_CURVE,
    MIN_CELL_SIZE,
    RELIABILITY,
    ConfigValue,
    NodeConfigKey,
    pooled_key,
)
from shared_model.run_config import DATA_PREFIX, TASK
from simulation.partition import SiteProfile, load_site_profiles
from simulation.populations import build_populations
from simulation.prepare import (
    PRESET_KEY,
    TEST_POPULATION_SITE,
    FederationData,
    encode_sites,
    partition_sites,
    prepare_test_population,
    test_population_cohort,
)

DP_SITES = "dp.sites"  # simulation only: "all" or a comma list of the sites that run DP


def simulated_dp(run_config: dict[str, Any], site: str) -> DPSettings:
    """In simulation the run-config stands in for each hospital's own DP settings:
    ``dp.enabled`` applies to the sites listed in ``dp.sites`` ("all" or "site-0,site-2")."""
    settings = DPSettings.from_mapping(run_config)
    chosen = dp_site_names(run_config)
    if settings.enabled and chosen is not None and site not in chosen:
        return DPSettings(enabled=False)
    return settings


def dp_site_names(run_config: dict[str, Any], known: Iterable[str] | None = None
                  ) -> set[str] | None:
    """The sites ``dp.sites`` names (None: all), spaces stripped; with ``known``, a name that is
    no site is an error (a typo must not turn DP off where it was meant to be on)."""
    text = str(run_config.get(DP_SITES, "all") or "all").strip()
    if text == "all":
        return None
    names = {name.strip() for name in text.split(",")}
    unknown = sorted(names - set(known)) if known is not None else []
    if "" in names or unknown:
        raise MoeHealthInputError(
            f"{DP_SITES} = {text!r}: {'an empty name' if '' in names else repr(unknown[0])} is "
            f"not a site (sites: {', '.join(sorted(known or []))}; or \"all\")")
    return names


SITE_MIN_CELL_SIZE = DATA_PREFIX + "min-cell-size"  # stands in for each hospital's site YAML


def site_node_config(site: str, samples_dir: Path, feature_dir: Path, run_dir: Path,
                     dp: DPSettings, modalities: tuple[str, ...],
                     min_cell_size: int = MIN_CELL_SIZE) -> dict[str, ConfigValue]:
    """What a hospital's node config would say for this virtual site."""
    return {NodeConfigKey.SITE_ID: site, NodeConfigKey.DATA_DIR: str(samples_dir),
            NodeConfigKey.FEATURE_DIR: str(feature_dir),
            NodeConfigKey.PRIVACY_DIR: str(run_dir / "sites" / site),  # a resume continues it
            NodeConfigKey.MODALITIES: ",".join(modalities),
            NodeConfigKey.MIN_CELL_SIZE: min_cell_size, **dp.node_config()}


def declared_modalities(data: FederationData, site: str) -> tuple[str, ...]:
    """The modalities a virtual site has: all but those its site profile removes."""
    dropped = set(load_site_profiles(data.profile).get(site, SiteProfile()).drop_modalities)
    return tuple(m.value for m in MODALITIES if m.value not in dropped)


def stay_groups(samples: dict[str, Path], test_population_cohort: Path | None,
                scheme: str) -> dict[str, dict[int, str]]:
    """Per test stay: its care unit and its site (``dimension -> stay id -> group``). Stays of
    the independent test population belong to the site their patient's first care unit went to,
    which names a hospital only when sites are care units."""
    if test_population_cohort is None:
        stays = {site: read_site_samples(folder) for site, folder in samples.items()}
        units = pd.concat(stays.values())
        site_of = {int(s): site for site, frame in stays.items() for s in frame.stay_id}
    else:
        from simulation.external import first_units, unit_sites

        units = read_cohort(test_population_cohort)
        site_of = {}
        if scheme == "careunit":  # unit_sites reads the site samples itself
            by_patient = first_units(units).map(unit_sites(samples))
            site_of = {int(s): str(by_patient.get(p, "")) for s, p in
                       zip(units.stay_id, units.subject_id, strict=True)}
    unit_of = {int(s): str(u) for s, u in zip(units.stay_id, units.first_careunit, strict=True)}
    return {"care unit": unit_of} | ({"site": site_of} if site_of else {})


def pooled_evaluator(sites: dict[str, SiteData], model_config: ModelConfig,
                     test_population: SiteData | None = None, *,
                     min_cell_size: int = MIN_CELL_SIZE,
                     groups_of_stays: dict[str, dict[int, str]] | None = None) -> PooledEvaluate:
    """AUROC (with a 95% bootstrap interval), AUPRC, F1, loss and Brier score of a global model on
    the pooled test split of all virtual sites (or, when given, on the independent test
    population), with n and positives; F1 at the threshold that maximizes it on the pooled
    validation split (the same rule as at the sites). Subgroups by sex, age band, modality
    combination and each dimension of ``groups_of_stays`` (see ``stay_groups``), released under
    ``min_cell_size`` like a site's."""
    pooled = concat_sites(list(sites.values()))
    tested = pooled if test_population is None else test_population
    val, test = pooled.subset("val"), tested.subset("test")
    test_stays = tested.stay_id[tested.split == "test"]
    device = resolve_device()

    def evaluate(arrays: dict[str, np.ndarray]) -> dict[str, float]:
        model = build_model(model_config).to(device)
        load_arrays(model, arrays)
        val_pred = predict(model, val, device)
        threshold = best_f1_threshold(val_pred.labels, val_pred.probs)
        test_pred = predict(model, test, device)
        result = evaluate_predictions(test_pred, threshold)
        out = {pooled_key(k): float(result[k])
               for k in ("auroc", "auprc", "f1", "loss", "brier", "n")}
        low, high = bootstrap_auroc(test_pred.labels, test_pred.probs)
        bins = reliability_bins(test_pred.labels, test_pred.probs)
        clinical = {**calibration_intervals(test_pred.labels, test_pred.probs),
                    **threshold_table(test_pred.labels, test_pred.probs),
                    **platt_recalibrated(val_pred.labels, val_pred.probs, test_pred.labels,
                                         test_pred.probs)}
        curve = decision_curve(test_pred.labels, test_pred.probs)
        groups = stay_subgroups(test, test_pred.combo)
        groups |= {dimension: np.asarray([of.get(int(s), "") for s in test_stays], dtype=object)
                   for dimension, of in (groups_of_stays or {}).items()}
        clinical |= subgroup_metrics(test_pred.labels, test_pred.probs, groups, min_cell_size)
        out |= {pooled_key(k): v for k, v in clinical.items()}
        out |= {pooled_key(f"{DECISION_CURVE}.{k}"): v for k, v in curve.items()}
        return out | {pooled_key("positives"): float(test_pred.labels.sum()),
                      pooled_key("threshold"): threshold, pooled_key("auroc_low"): low,
                      pooled_key("auroc_high"): high} | {
            pooled_key(f"{RELIABILITY}.{k}"): v for k, v in bins.items()}

    return evaluate


def pooled_ceilings(data: FederationData, sites: dict[str, SiteData],
                    test_population: SiteData | None, task: str) -> dict[str, float]:
    """AUROC of the synthetic data's reachable ceiling and of its true probabilities on the
    pooled test set that centralized evaluation scores (none for real data)."""
    from simulation.oracle import REACHABLE, TRUE, oracle_auroc

    if data.mimic_iv:
        return {}
    if test_population is not None:
        test, oracle = test_population, data.test_oracle_csv()
    else:
        test, oracle = concat_sites(list(sites.values())), data.oracle_csv()
    mask = test.split == "test"
    stays, labels = test.stay_id[mask], test.labels.numpy()[mask]
    values = {"reachable_auroc": oracle_auroc(oracle, stays, labels, task, REACHABLE),
              "true_auroc": oracle_auroc(oracle, stays, labels, task, TRUE)}
    return {k: v for k, v in values.items() if np.isfinite(v)}


def write_data_summary(path: Path, sites: dict[str, SiteData], task: str, source: str = "",
                       ceilings: dict[str, float] | None = None) -> dict:
    """Per site and split: samples, positives and modality mix, for the run report (simulation
    only: in deployment the coordinator sees no such counts); ``source``: what the data is;
    ``ceilings``: AUROCs the pooled test set allows (synthetic data)."""
    summary = {}
    for site, data in sites.items():
        available = data.inputs["available"].numpy() > 0.5
        summary[site] = {split: {
            "samples": data.size(split),
            "positives": int(data.labels.numpy()[data.split == split].sum()),
            **{f"with_{m.value}": int(available[data.split == split, i].sum())
               for i, m in enumerate(MODALITIES)}} for split in ("train", "val", "test")}
    out = {"task": task, "source": source, "ceilings": ceilings or {}, "sites": summary}
    path.write_text(json.dumps(out, indent=2))
    return out


def data_support(summary: dict, min_cell_size: int, pooled: bool) -> tuple[list[str], bool]:
    """What the data can estimate, said before training: per site, whether its test split can
    release metrics (>= ``min_cell_size`` positives and negatives), and whether the pooled test
    set (``pooled``: centralized evaluation on) has as many of both classes. Returns the lines
    and whether anything at all can be estimated."""
    lines, releasing = [], 0
    pooled_counts = [0, 0]
    for site, splits in summary["sites"].items():
        if site == TEST_POPULATION_SITE:
            continue
        test = splits["test"]
        positives, negatives = test["positives"], test["samples"] - test["positives"]
        pooled_counts[0] += positives
        pooled_counts[1] += negatives
        if min(positives, negatives) >= min_cell_size:
            releasing += 1
        else:
            lines.append(f"{site}: test split {test['samples']} stays, {positives} positive: "
                         f"fewer than {min_cell_size} positives or negatives, so the site "
                         "releases no test metric")
    population = summary["sites"].get(TEST_POPULATION_SITE, {}).get("test")
    if population:
        pooled_counts = [population["positives"], population["samples"] - population["positives"]]
    if pooled and min(pooled_counts) < min_cell_size:
        lines.append(f"pooled test set: {sum(pooled_counts)} stays, {pooled_counts[0]} positive: "
                     f"fewer than {min_cell_size} positives or negatives, too few for an AUROC, "
                     "AUPRC or calibration worth reporting")
    estimable = releasing > 0 or (pooled and min(pooled_counts) >= min_cell_size)
    return lines, estimable


def training_units(samples: pd.DataFrame, task: str, unit: str) -> int:
    """A site's privacy units in its training rows, from its samples (the rows SiteData keeps:
    those with a label for the task): patients, or stays."""
    train = samples[(samples["split"] == "train") & samples[task].notna()]
    return int(train["subject_id"].nunique()) if unit == "patient" else len(train)


def check_dp_budgets(run_config: dict[str, Any], samples: dict[str, Path], run_dir: Path,
                     server_round: int) -> None:
    """Refuse, before the run's first round (``server_round``) and before any site is encoded, a
    run in which a DP site would decline: the same plan each DP site makes
    (:func:`client.privacy.dp_round.fixed_budget`), on its ledger in the run directory (a resumed
    run continues it), naming the site."""
    settings = FederationSettings.from_run_config(run_config)
    cfg = settings.round_config(server_round)
    if DPSettings.from_mapping(run_config).enabled:
        dp_site_names(run_config, known=samples)
    for site, folder in samples.items():
        dp = simulated_dp(run_config, site)
        if not dp.enabled:
            continue
        from client.data.sites import read_site_samples
        from client.privacy.dp_round import fixed_budget  # Opacus: DP only
        from client.privacy.site_ledger import SiteLedger

        units = training_units(read_site_samples(folder), settings.task, dp.unit)
        _, refusal = fixed_budget(dp, SiteLedger(run_dir / "sites" / site), units, cfg)
        if refusal:
            raise MoeHealthInputError(f"site {site}: {refusal}")


def check_simulation_config(run_config: dict[str, Any]) -> int:
    """The simulation's ``data.*`` and ``dp.*`` keys, before any data is generated, read or
    encoded; returns the number of sites the data needs (0: one per SuperNode, not known yet, in
    which case ``dp.sites`` is checked again once the ServerApp has counted the SuperNodes)."""
    _, required = _checked_data(run_config)
    return required


def _checked_data(run_config: dict[str, Any]) -> tuple[FederationData, int]:
    num_sites = int(run_config.get(DATA_PREFIX + "num-sites", 0))
    try:
        data = FederationData.from_run_config(run_config)
    except ValueError as err:
        raise MoeHealthInputError(f"run config: {err}") from None
    if data.profile is not None:
        load_site_profiles(data.profile)
    min_cell_size = int(run_config.get(SITE_MIN_CELL_SIZE, MIN_CELL_SIZE))
    if min_cell_size < 1:
        raise MoeHealthInputError(f"data.min-cell-size must be at least 1, got {min_cell_size}")
    required = data.num_sites if num_sites > 0 or run_config.get(PRESET_KEY) else 0
    if DPSettings.from_mapping(run_config).enabled and required > 0:
        dp_site_names(run_config, known=[f"site-{i}" for i in range(required)])
    return data, required


def simulated_sites(run_config: dict[str, Any], run_dir: Path, start_round: int = 0
                    ) -> SimulatedSites:
    """Prepare (or reuse) the virtual sites (DP budgets checked before encoding), write the
    sites manifest."""
    data, _ = _checked_data(run_config)
    build_populations(data)  # a first preset build: both populations side by side
    samples = partition_sites(data)
    check_dp_budgets(run_config, samples, run_dir, start_round + 1)
    features = encode_sites(samples, data)
    min_cell_size = int(run_config.get(SITE_MIN_CELL_SIZE, MIN_CELL_SIZE))
    nodes = [site_node_config(site, data.sites_dir() / site, path, run_dir,
                              simulated_dp(run_config, site), declared_modalities(data, site),
                              min_cell_size)
             for site, path in features.items()]
    manifest = write_manifest(run_dir / MANIFEST_NAME, nodes)
    test_population = prepare_test_population(data)
    task = str(run_config[TASK])
    loaded = {site: SiteData.load(path, task, site) for site, path in features.items()}
    tested = (SiteData.load(test_population, task, TEST_POPULATION_SITE) if test_population
              else None)  # each feature cache read once, for the summary, ceilings and evaluation
    shown = loaded | ({TEST_POPULATION_SITE: tested} if tested is not None else {})
    summary = write_data_summary(run_dir / DATA_SUMMARY, shown, task, data.describe(),
                                 pooled_ceilings(data, loaded, tested, task))
    settings = FederationSettings.from_run_config(run_config)
    problems, estimable = data_support(summary, min_cell_size, settings.centralized_eval)
    for line in problems:
        print(f"moehealth: warning: {line}", flush=True)
    if not estimable:
        raise MoeHealthInputError(
            f"the data cannot support any estimate of {settings.task} ({data.describe()}): "
            + "; ".join(problems) + ". Use more patients, fewer sites or a lower "
            "data.min-cell-size")
    groups = stay_groups(samples, test_population_cohort(data) if test_population else None,
                         str(data.scheme))
    evaluate = pooled_evaluator(loaded, model_config_from_run_config(run_config), tested,
                                min_cell_size=min_cell_size, groups_of_stays=groups)
    return SimulatedSites(str(manifest), evaluate)
