"""Ceilings on the synthetic data, from ``oracle.csv`` (evaluation only): the AUROC of the true
outcome probabilities and of the reachable ceiling (the best probability given what the written
data shows; see ``simulation/synth/ceiling.py``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

TRUE = ""
REACHABLE = "_reachable"
REACHABLE_EHR = "_reachable_ehr"


def oracle_auroc(oracle_csv: Path | None, stay_ids: np.ndarray, labels: np.ndarray, task: str,
                 ceiling: str = TRUE) -> float:
    """AUROC of a ceiling's probabilities on the given stays (NaN without the file or column);
    ``ceiling`` is TRUE, REACHABLE or REACHABLE_EHR."""
    if oracle_csv is None or not Path(oracle_csv).is_file() or len(np.unique(labels)) < 2:
        return math.nan
    column = task + ceiling
    table = pd.read_csv(oracle_csv)
    if column not in table.columns:
        return math.nan
    truth = table.set_index("stay_id")[column]
    return float(roc_auc_score(labels, truth.loc[stay_ids].to_numpy()))
