"""External validation: leave one hospital out (issue 29, ``moehealth experiment external``).

For each site of a care-unit federation (each site a hospital): every model is trained on the
other sites' training splits pooled (hyper-parameters on their validation splits) and scored on
the independent test population, split by hospital the way the training population was: a test
patient belongs to the site of their first stay's care unit. *Internal*: the test stays of the
sites the model trained on; *external*: those of the held-out site, which it never saw. The drop
from internal to external is reported with a 95% interval from independent bootstrap resamples of
the two sets of stays. Federated training per held-out site is not run here (pooled training of
the same sites is its upper reference).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from client.data.dataset import SiteData, concat_sites
from client.data.sites import read_site_samples
from client.mimic.cohort import read_cohort
from client.rounds.training import predict, resolve_device
from shared_model.errors import MoeHealthInputError
from shared_model.run_config import Scheme
from simulation.baselines import VARIANTS, variant_model_config
from simulation.bootstrap import Interval, auroc_interval, unpaired_difference
from simulation.centralized import CentralizedConfig, train_centralized
from simulation.prepare import (
    TEST_POPULATION_SITE,
    FederationData,
    partition_sites,
    prepare_sites,
    prepare_test_population,
    test_population_cohort,
)
from simulation.step_progress import StepLog
from simulation.tabular_baselines import BenchmarkSplits, fit_baselines, split_table

log = logging.getLogger(__name__)


def first_units(stays: pd.DataFrame) -> pd.Series:
    """Per patient, the care unit of their first ICU stay (what assigns them to a site)."""
    return stays.sort_values("intime").groupby("subject_id")["first_careunit"].first()


def unit_sites(samples: dict[str, Path]) -> dict[str, str]:
    """Care unit -> the site its patients went to in the training partition."""
    out: dict[str, str] = {}
    for site, folder in samples.items():
        for unit in first_units(read_site_samples(folder)).unique():
            out.setdefault(str(unit), site)
    return out


def test_population_sites(data: FederationData, test: SiteData) -> np.ndarray:
    """The hospital of each test-population stay (by its patient's first care unit)."""
    mapping = unit_sites(partition_sites(data))
    cohort = read_cohort(test_population_cohort(data))
    by_patient = first_units(cohort).map(mapping)
    return pd.Series(test.subject_id).map(by_patient).fillna("").to_numpy(str)


def external_validation(out: Path, data: FederationData, task: str, variants: Iterable[str],
                        seeds: Iterable[int], lr: float = 1e-4, train: dict | None = None
                        ) -> pd.DataFrame:
    """Leave one hospital out: every model trained pooled on the other sites, scored on their
    test-population stays (internal) and on the held-out site's (external).

    Args:
        out: folder for ``results.md`` / ``results.csv``.
        data: a careunit-partitioned federation with an independent test population.
        task: the prediction task.
        variants, seeds: neural models to train (simulation/baselines.py) and their seeds.
        lr: their learning rate (tabular baselines are tuned on validation).
        train: ``CentralizedConfig`` overrides (epochs, batch size).

    Returns:
        Rows per held-out site and model: internal and external AUROC, and their difference.
    """
    if data.scheme != Scheme.CAREUNIT or data.test_patients <= 0:
        raise MoeHealthInputError("external validation needs hospitals (data.scheme careunit) and "
                                  "an independent test population (data.test-patients > 0, e.g. "
                                  "--preset benchmark)")
    features = prepare_sites(data)
    sites = {s: SiteData.load(d, task, s) for s, d in features.items()}
    test = SiteData.load(prepare_test_population(data), task, TEST_POPULATION_SITE)
    hospital = test_population_sites(data, test)[test.split == "test"]
    labels = test.labels.numpy()[test.split == "test"]
    device = resolve_device()
    rows = []
    variants, seeds = list(variants), list(seeds)
    steps = StepLog(len(sites) * len(variants) * len(seeds), "external")
    for held in sites:
        pooled = concat_sites([d for s, d in sites.items() if s != held])
        splits = BenchmarkSplits(task, pooled, test, "independent test population", None)
        scorers = {name: model.scores(split_table(test, "test"))
                   for name, model in fit_baselines(splits).items()}
        for name in variants:
            for seed in seeds:
                step = f"{held} held out, {name} seed {seed}"
                steps.start(step)
                started = time.perf_counter()
                result = train_centralized(pooled, variant_model_config(name),
                                           CentralizedConfig(task=task, lr=lr, seed=seed,
                                                       **(train or {})),
                                           pretrain=VARIANTS[name].pretrain_experts)
                steps.finish(step, time.perf_counter() - started)
                scorers[f"{name} (seed {seed})"] = predict(result.model, test.subset("test"),
                                                           device).probs
        external = hospital == held
        for name, probs in scorers.items():
            inside = auroc_interval(labels[~external], probs[~external])
            outside = auroc_interval(labels[external], probs[external])
            drop = unpaired_difference(labels[external], probs[external], labels[~external],
                                       probs[~external])
            rows.append({"task": task, "held_out": held, "model": name,
                         "internal_n": int((~external).sum()),
                         "internal_positives": int(labels[~external].sum()),
                         "external_n": int(external.sum()),
                         "external_positives": int(labels[external].sum()),
                         "internal": inside.value, "internal_low": inside.low,
                         "internal_high": inside.high, "external": outside.value,
                         "external_low": outside.low, "external_high": outside.high,
                         "change": drop.value, "change_low": drop.low,
                         "change_high": drop.high})
            log.info("held out %s / %s: internal %.3f, external %.3f", held, name, inside.value,
                     outside.value)
    frame = pd.DataFrame(rows)
    write_external(out, frame)
    return frame


def write_external(out: Path, frame: pd.DataFrame) -> None:
    """``results.csv`` and ``results.md`` (one table per held-out site)."""
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "results.csv", index=False)
    (out / "results.md").write_text(
        f"# External validation: leave one hospital out ({frame.iloc[0].task})\n\n"
        + external_markdown(frame))


def external_markdown(frame: pd.DataFrame) -> str:
    """One table per held-out site: internal and external AUROC and the change."""
    lines = ["Trained on the other sites pooled; scored on the independent test population's "
             "stays of those sites (internal) and of the held-out site (external). Change: "
             "external minus internal AUROC, 95% interval from independent bootstrap resamples.",
             ""]
    for held, group in frame.groupby("held_out", sort=False):
        first = group.iloc[0]
        lines += [f"#### {held} held out: internal n = {first.internal_n} "
                  f"({first.internal_positives} positives), external n = {first.external_n} "
                  f"({first.external_positives} positives)", "",
                  "| model | internal AUROC | external AUROC | change |", "|---|---|---|---|"]
        for r in group.itertuples():
            lines.append(f"| {r.model} | {Interval(r.internal, r.internal_low, r.internal_high)} "
                         f"| {Interval(r.external, r.external_low, r.external_high)} | "
                         f"{Interval(r.change, r.change_low, r.change_high).signed()} |")
        lines.append("")
    return "\n".join(lines)
