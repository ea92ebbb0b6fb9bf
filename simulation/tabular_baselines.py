"""The benchmark's yardstick: reachable ceilings and tuned tabular baselines on the cached inputs.

For each task, on the pooled training and validation splits of the sites and one test set (the
independent test population when the federation has one, else the sites' pooled test split):

- ceilings: the true probability, the reachable ceiling (what all written data shows) and its
  EHR-only part, read from ``oracle.csv`` (evaluation only);
- logistic regression and scikit-learn's HistGradientBoosting on EHR summaries (per variable: last,
  mean, min, max of the standardized forward-filled series, share of hours observed) plus
  demographics, alone and with the cached note and image embeddings (zero and a flag where
  missing; for boosting reduced to ``EMBEDDING_COMPONENTS`` principal components fitted on the
  training split); and logistic regression with one submodel per missingness pattern (pattern
  submodels, Fletcher Mercaldo & Blume, Biostatistics 2020). Hyper-parameters are chosen on
  validation AUROC, never on test.

Every AUROC has a 95% bootstrap interval, every comparison a paired one, and every model the
fraction of the reachable ceiling it reaches (AUROC / ceiling AUROC).
"""

from __future__ import annotations

import hashlib
import json
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


def split_table(data: SiteData, split: str) -> Split:
    """One split of ``data`` as the tabular baselines see it."""
    mask = data.split == split
    available = data.inputs["available"].numpy()[mask]
    notes = np.hstack([data.inputs["notes"].numpy()[mask], available[:, 1:2]])
    cxr = np.hstack([data.inputs["cxr"].numpy()[mask], available[:, 2:3]])
    return Split(ehr_summaries(data, mask), notes, cxr, data.labels.numpy()[mask],
                 data.stay_id[mask])


def _fit_logistic(train_x, train_y, val_x, val_y):
    """Logistic regression on standardized inputs, C chosen on validation AUROC. The C grid is
    walked from the strongest regularization up, each fit starting from the last one's
    coefficients (the same convex optimum, reached in fewer L-BFGS steps)."""
    import copy

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    train_z, val_z = scaler.transform(train_x), scaler.transform(val_x)
    model = LogisticRegression(max_iter=3000, warm_start=True)
    best = None
    for c in sorted(LR_C):
        model.set_params(C=c).fit(train_z, train_y)
        score = roc_auc_score(val_y, model.predict_proba(val_z)[:, 1])
        if best is None or score > best[0]:
            best = (score, make_pipeline(scaler, copy.deepcopy(model)), {"C": c})
    return best


def _fit_boosting(train_x, train_y, val_x, val_y):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    best = None
    for params in HGB_GRID:
        model = HistGradientBoostingClassifier(max_iter=300, early_stopping=True,
                                               validation_fraction=0.15, random_state=0, **params)
        # One OpenMP thread: HistGradientBoosting's many short parallel regions spin-wait at
        # every barrier, so when any other process holds a core (a CI run, a second experiment)
        # a 2-thread fit took 8-13x longer than a 1-thread one (bench/README, issue 33).
        with threadpool_limits(limits=1, user_api="openmp"):
            model.fit(train_x, train_y)
        score = roc_auc_score(val_y, model.predict_proba(val_x)[:, 1])
        if best is None or score > best[0]:
            best = (score, model, params)
    return best


def _reducer(train: Split) -> Callable[[Split], np.ndarray]:
    """Inputs with the note and image embeddings as principal components fitted on the training
    split (their missingness flags kept)."""
    from sklearn.decomposition import PCA

    def fitted(embeddings: np.ndarray) -> PCA:  # fewer components where few stays train it
        components = min(EMBEDDING_COMPONENTS, *embeddings.shape)
        return PCA(components, random_state=0).fit(embeddings)

    pcas = {name: fitted(getattr(train, name)[:, :-1]) for name in ("notes", "cxr")}

    def features(s: Split) -> np.ndarray:
        return np.hstack([s.ehr, *(np.hstack([pcas[name].transform(getattr(s, name)[:, :-1]),
                                              getattr(s, name)[:, -1:]])
                                   for name in ("notes", "cxr"))])

    return features


def _ehr(s: Split) -> np.ndarray:
    return s.ehr


def _full(s: Split) -> np.ndarray:
    return np.hstack([s.ehr, s.notes, s.cxr])


Fit = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple]
Featurize = Callable[[Split], np.ndarray]


def _models(train: Split) -> dict[str, tuple[Fit, Featurize]]:
    return {
        "logistic regression, EHR": (_fit_logistic, _ehr),
        "logistic regression, all modalities": (_fit_logistic, _full),
        "gradient boosting, EHR": (_fit_boosting, _ehr),
        "gradient boosting, all modalities": (_fit_boosting, _reducer(train)),
    }


@dataclass(frozen=True)
class FittedBaseline:
    """A tabular baseline fitted on the training split, chosen on validation."""

    featurize: Featurize
    model: object
    params: str
    seconds: float = 0.0

    def scores(self, split: Split) -> np.ndarray:
        return self.model.predict_proba(self.featurize(split))[:, 1]


class PatternSubmodels:
    """Logistic regression with one submodel per missingness pattern (Fletcher Mercaldo & Blume,
    Biostatistics 2020): each pattern's submodel sees only the modalities that pattern has and is
    fitted on the training stays with that pattern (C chosen on their validation stays); a
    pattern with fewer than ``MIN_PATTERN_STAYS`` training stays, or none of one class, uses the
    EHR submodel fitted on all stays."""

    MIN_PATTERN_STAYS = 200

    def __init__(self, train: Split, val: Split) -> None:
        started = time.perf_counter()
        self.models: dict[tuple[bool, bool], object] = {}
        self.chosen: dict[str, float] = {}
        _, self.fallback, _ = _fit_logistic(train.ehr, train.labels, val.ehr, val.labels)
        for pattern in {tuple(p) for p in _patterns(train)}:
            rows, val_rows = _with_pattern(train, pattern), _with_pattern(val, pattern)
            if rows.sum() < self.MIN_PATTERN_STAYS or len(np.unique(train.labels[rows])) < 2 \
                    or len(np.unique(val.labels[val_rows])) < 2:
                continue
            _, model, params = _fit_logistic(_pattern_inputs(train, pattern)[rows],
                                             train.labels[rows],
                                             _pattern_inputs(val, pattern)[val_rows],
                                             val.labels[val_rows])
            self.models[pattern] = model
            self.chosen[_pattern_name(pattern)] = params["C"]
        self.seconds = time.perf_counter() - started

    @property
    def params(self) -> str:
        return str(self.chosen)

    def scores(self, split: Split) -> np.ndarray:
        out = self.fallback.predict_proba(split.ehr)[:, 1]
        for pattern, model in self.models.items():
            rows = _with_pattern(split, pattern)
            if rows.any():
                out[rows] = model.predict_proba(_pattern_inputs(split, pattern)[rows])[:, 1]
        return out


def _patterns(split: Split) -> np.ndarray:
    """Per stay: (has a note, has a film)."""
    return np.column_stack([split.notes[:, -1] > 0.5, split.cxr[:, -1] > 0.5])


def _with_pattern(split: Split, pattern: tuple[bool, bool]) -> np.ndarray:
    return (_patterns(split) == np.array(pattern)).all(axis=1)


def _pattern_inputs(split: Split, pattern: tuple[bool, bool]) -> np.ndarray:
    parts = [split.ehr]
    if pattern[0]:
        parts.append(split.notes[:, :-1])
    if pattern[1]:
        parts.append(split.cxr[:, :-1])
    return np.hstack(parts)


def _pattern_name(pattern: tuple[bool, bool]) -> str:
    return "+".join(["ehr", *(["notes"] if pattern[0] else []), *(["cxr"] if pattern[1] else [])])


PATTERN_SUBMODELS = "logistic regression, pattern submodels"


def fit_baselines(splits: BenchmarkSplits) -> dict[str, FittedBaseline | PatternSubmodels]:
    """Every tabular baseline fitted on the pooled training split, chosen on validation."""
    train, val = split_table(splits.pooled, "train"), split_table(splits.pooled, "val")
    fitted: dict[str, FittedBaseline | PatternSubmodels] = {}
    for name, (fit, featurize) in _models(train).items():
        started = time.perf_counter()
        _, model, params = fit(featurize(train), train.labels, featurize(val), val.labels)
        fitted[name] = FittedBaseline(featurize, model, str(params),
                                      time.perf_counter() - started)
        log.info("%s / %s: fitted in %.0f s (%s)", splits.task, name,
                 time.perf_counter() - started, params)
    fitted[PATTERN_SUBMODELS] = PatternSubmodels(train, val)
    return fitted


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
    (PATTERN_SUBMODELS, "logistic regression, all modalities"),
)


@dataclass(frozen=True)
class BenchmarkSplits:
    """One task's pooled training sites and the test set every model is scored on."""

    task: str
    pooled: SiteData
    test: SiteData
    test_name: str
    oracle_csv: Path | None
    inputs: tuple[str, ...] = ()  # the feature caches behind it (content-addressed folders)

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
    inputs = tuple(str(d) for _, d in sorted(features.items()))
    if test_features is not None:
        return BenchmarkSplits(task, pooled, SiteData.load(test_features, task, TEST_POPULATION_SITE),
                               "independent test population", data.test_oracle_csv(),
                               (*inputs, str(test_features)))
    return BenchmarkSplits(task, pooled, pooled, "pooled test split of the sites",
                           data.oracle_csv(), inputs)


TabularScores = tuple[dict[str, np.ndarray], dict[str, str], dict[str, float]]


def tabular_scores(splits: BenchmarkSplits) -> TabularScores:
    """Test scores of every tabular baseline, the hyper-parameters chosen on validation, seconds.

    The fits are deterministic, so they are kept in ``tabular/`` beside the feature caches'
    ``features/`` under a key of the feature caches, the task, the grids,
    scikit-learn's version and this module's source: a second experiment on the same inputs
    reuses them."""
    path = _scores_file(splits)
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            log.info("%s: tabular baselines reused from %s (their fits took %.0f s)",
                     splits.task, path, sum(meta["seconds"].values()))
            return ({name: stored[f"scores_{i}"] for i, name in enumerate(meta["params"])},
                    meta["params"], meta["seconds"])
    fitted = fit_baselines(splits)
    test = split_table(splits.test, "test")
    scores = {name: model.scores(test) for name, model in fitted.items()}
    params = {name: model.params for name, model in fitted.items()}
    seconds = {name: model.seconds for name, model in fitted.items()}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, meta=json.dumps({"params": params, "seconds": seconds}),
                 **{f"scores_{i}": scores[name] for i, name in enumerate(params)})
        partial.replace(path)
    return scores, params, seconds


def _scores_file(splits: BenchmarkSplits) -> Path | None:
    """Where the fits of these inputs are kept (None when the inputs are not cached folders)."""
    if not splits.inputs:
        return None
    import sklearn

    key = hashlib.sha256(json.dumps(
        [splits.task, list(splits.inputs), sklearn.__version__, LR_C, HGB_GRID,
         hashlib.sha256(Path(__file__).read_bytes()).hexdigest()]).encode()).hexdigest()[:24]
    features = Path(splits.inputs[0]).parents[1]  # <cache>/features/<site>/<identity>
    return features.parent / "tabular" / f"{splits.task}-{key}.npz"


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
        train = split_table(splits.pooled, "train")
        test = split_table(splits.test, "test")
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
