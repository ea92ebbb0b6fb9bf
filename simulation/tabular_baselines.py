"""The benchmark's yardstick: reachable ceilings and tuned tabular baselines on the cached inputs.

For each task, on the pooled training and validation splits of the sites and one test set (the
independent test population when the federation has one, else the sites' pooled test split):

- ceilings: the true probability, the reachable ceiling (what all written data shows) and its
  EHR-only part, read from ``oracle.csv`` (evaluation only);
- logistic regression and scikit-learn's HistGradientBoosting on EHR summaries (per variable: last,
  mean, min, max of the standardized forward-filled series, share of hours observed) plus
  demographics, alone and with the cached note and image embeddings (zero and a flag where
  missing; for boosting reduced to ``EMBEDDING_COMPONENTS`` principal components fitted on the
  training split). Hyper-parameters are chosen on validation AUROC, never on test.

Every AUROC has a 95% bootstrap interval, every comparison a paired one, and every model the
fraction of the reachable ceiling it reaches (AUROC / ceiling AUROC).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from client.data.dataset import SiteData, concat_sites
from simulation.bootstrap import Interval, auroc_interval, paired_difference
from simulation.prepare import (
    TEST_POPULATION_SITE,
    FederationData,
    prepare_sites,
    prepare_test_population,
)

log = logging.getLogger(__name__)
EMBEDDING_COMPONENTS = 32
LR_C = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 1.0)
HGB_GRID = ({"learning_rate": 0.03, "max_leaf_nodes": 7}, {"learning_rate": 0.05, "max_leaf_nodes": 15},
            {"learning_rate": 0.1, "max_leaf_nodes": 31})


@dataclass(frozen=True)
class Split:
    """One split's stays as a table of inputs, with labels and stay ids."""

    ehr: np.ndarray
    notes: np.ndarray
    cxr: np.ndarray
    labels: np.ndarray
    stay_id: np.ndarray


def ehr_summaries(data: SiteData, mask: np.ndarray) -> np.ndarray:
    """Per EHR variable: last, mean, min, max and share of hours observed; plus demographics."""
    values = data.inputs["ehr"].numpy()[mask]
    seen = data.inputs["ehr_mask"].numpy()[mask]
    return np.hstack([values[:, -1], values.mean(1), values.min(1), values.max(1), seen.mean(1),
                      data.inputs["demographics"].numpy()[mask]])


def _split(data: SiteData, split: str) -> Split:
    mask = data.split == split
    available = data.inputs["available"].numpy()[mask]
    notes = np.hstack([data.inputs["notes"].numpy()[mask], available[:, 1:2]])
    cxr = np.hstack([data.inputs["cxr"].numpy()[mask], available[:, 2:3]])
    return Split(ehr_summaries(data, mask), notes, cxr, data.labels.numpy()[mask],
                 data.stay_id[mask])


def _fit_logistic(train_x, train_y, val_x, val_y):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = None
    for c in LR_C:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        model.fit(train_x, train_y)
        score = roc_auc_score(val_y, model.predict_proba(val_x)[:, 1])
        if best is None or score > best[0]:
            best = (score, model, {"C": c})
    return best


def _fit_boosting(train_x, train_y, val_x, val_y):
    from sklearn.ensemble import HistGradientBoostingClassifier

    best = None
    for params in HGB_GRID:
        model = HistGradientBoostingClassifier(max_iter=300, early_stopping=True,
                                               validation_fraction=0.15, random_state=0, **params)
        model.fit(train_x, train_y)
        score = roc_auc_score(val_y, model.predict_proba(val_x)[:, 1])
        if best is None or score > best[0]:
            best = (score, model, params)
    return best


def _reduce_embeddings(train: Split, *others: Split) -> list[np.ndarray]:
    """Notes and image embeddings -> principal components fitted on the training split."""
    from sklearn.decomposition import PCA

    out = []
    for name in ("notes", "cxr"):
        pca = PCA(EMBEDDING_COMPONENTS, random_state=0).fit(getattr(train, name)[:, :-1])
        out.append([np.hstack([pca.transform(getattr(s, name)[:, :-1]), getattr(s, name)[:, -1:]])
                    for s in (train, *others)])
    return [np.hstack([s.ehr, notes, cxr]) for s, notes, cxr in
            zip((train, *others), out[0], out[1], strict=True)]


Fit = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple]


def _models(train: Split, val: Split, test: Split) -> dict[str, tuple[Fit, list[np.ndarray]]]:
    full = [np.hstack([s.ehr, s.notes, s.cxr]) for s in (train, val, test)]
    return {
        "logistic regression, EHR": (_fit_logistic, [s.ehr for s in (train, val, test)]),
        "logistic regression, all modalities": (_fit_logistic, full),
        "gradient boosting, EHR": (_fit_boosting, [s.ehr for s in (train, val, test)]),
        "gradient boosting, all modalities": (_fit_boosting, _reduce_embeddings(train, val, test)),
    }


def _oracle_scores(oracle_csv, stay_id: np.ndarray, task: str) -> dict[str, np.ndarray]:
    if oracle_csv is None or not oracle_csv.is_file():
        return {}
    oracle = pd.read_csv(oracle_csv).set_index("stay_id").loc[stay_id]
    return {"true probability (oracle)": oracle[task].to_numpy(),
            "reachable ceiling, all modalities": oracle[f"{task}_reachable"].to_numpy(),
            "reachable ceiling, EHR": oracle[f"{task}_reachable_ehr"].to_numpy()}


COMPARISONS = (
    ("logistic regression, all modalities", "logistic regression, EHR"),
    ("gradient boosting, all modalities", "gradient boosting, EHR"),
    ("gradient boosting, all modalities", "logistic regression, all modalities"),
    ("reachable ceiling, all modalities", "reachable ceiling, EHR"),
    ("reachable ceiling, all modalities", "gradient boosting, all modalities"),
)


@dataclass(frozen=True)
class BenchmarkSplits:
    """One task's pooled training sites and the test set every model is scored on."""

    task: str
    pooled: SiteData
    test: SiteData
    test_name: str
    oracle_csv: Path | None

    def labels(self) -> np.ndarray:
        return self.test.labels.numpy()[self.test.split == "test"]

    def stay_ids(self) -> np.ndarray:
        return self.test.stay_id[self.test.split == "test"]


def benchmark_splits(data: FederationData, task: str) -> BenchmarkSplits:
    """Pooled sites (train, val) and the test set: the independent test population when the
    federation has one, else the sites' pooled test split."""
    features = prepare_sites(data)
    pooled = concat_sites([SiteData.load(d, task, s) for s, d in features.items()])
    test_features = prepare_test_population(data)
    if test_features is not None:
        return BenchmarkSplits(task, pooled, SiteData.load(test_features, task, TEST_POPULATION_SITE),
                               "independent test population", data.test_oracle_csv())
    return BenchmarkSplits(task, pooled, pooled, "pooled test split of the sites",
                           data.oracle_csv())


def tabular_scores(splits: BenchmarkSplits) -> tuple[dict[str, np.ndarray], dict[str, str],
                                                     dict[str, float]]:
    """Test scores of every tabular baseline, the hyper-parameters chosen on validation, seconds."""
    train, val = _split(splits.pooled, "train"), _split(splits.pooled, "val")
    test = _split(splits.test, "test")
    scores, chosen, seconds = {}, {}, {}
    for name, (fit, (x_train, x_val, x_test)) in _models(train, val, test).items():
        started = time.perf_counter()
        _, model, params = fit(x_train, train.labels, x_val, val.labels)
        scores[name] = model.predict_proba(x_test)[:, 1]
        chosen[name], seconds[name] = str(params), time.perf_counter() - started
        log.info("%s / %s: fitted in %.0f s (%s)", splits.task, name, seconds[name], params)
    return scores, chosen, seconds


def ceiling_scores(splits: BenchmarkSplits) -> dict[str, np.ndarray]:
    """The true and reachable probabilities of the test stays (empty without ``oracle.csv``)."""
    return _oracle_scores(splits.oracle_csv, splits.stay_ids(), splits.task)


def benchmark_yardstick(data: FederationData, tasks: Iterable[str]
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows per task and model (AUROC with interval, fraction of the ceiling) and per comparison
    (paired difference with interval)."""
    rows, diffs = [], []
    for task in tasks:
        splits = benchmark_splits(data, task)
        test_name = splits.test_name
        train = _split(splits.pooled, "train")
        test = _split(splits.test, "test")
        scores = ceiling_scores(splits)
        fitted, chosen, seconds = tabular_scores(splits)
        scores |= fitted
        ceiling = (roc_auc_score(test.labels, scores["reachable ceiling, all modalities"])
                   if "reachable ceiling, all modalities" in scores else np.nan)
        for name, score in scores.items():
            auroc = auroc_interval(test.labels, score)
            rows.append({"task": task, "model": name, "test_set": test_name,
                         "n": len(test.labels), "positives": int(test.labels.sum()),
                         "train_n": len(train.labels), "auroc": auroc.value,
                         "auroc_low": auroc.low, "auroc_high": auroc.high,
                         "fraction_of_reachable": auroc.value / ceiling,
                         "chosen_on_validation": chosen.get(name, ""),
                         "seconds": round(seconds.get(name, 0.0), 1)})
        for first, second in COMPARISONS:
            if first in scores and second in scores:
                diff = paired_difference(test.labels, scores[first], scores[second])
                diffs.append({"task": task, "comparison": f"{first} - {second}",
                              "difference": diff.value, "low": diff.low, "high": diff.high,
                              "interval_excludes_0": diff.excludes_zero()})
    return pd.DataFrame(rows), pd.DataFrame(diffs)


def yardstick_markdown(rows: pd.DataFrame, diffs: pd.DataFrame) -> str:
    """The two tables as Markdown."""
    lines = []
    for task, group in rows.groupby("task", sort=False):
        first = group.iloc[0]
        lines += [f"### {task}: {first.test_set}, n = {first.n}, positives = {first.positives} "
                  f"(trained on {first.train_n} stays)", "",
                  "| model | AUROC [95% CI] | fraction of reachable ceiling | chosen on validation |",
                  "|---|---|---|---|"]
        for r in group.itertuples():
            interval = Interval(r.auroc, r.auroc_low, r.auroc_high)
            lines.append(f"| {r.model} | {interval} | {r.fraction_of_reachable:.3f} | "
                         f"{r.chosen_on_validation} |")
        lines += ["", "| paired difference | AUROC difference [95% CI] |", "|---|---|"]
        for d in diffs[diffs.task == task].itertuples():
            lines.append(f"| {d.comparison} | {Interval(d.difference, d.low, d.high).signed()} |")
        lines.append("")
    return "\n".join(lines)
