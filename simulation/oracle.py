"""Best achievable AUROC on the synthetic data, from ``oracle.csv`` (evaluation only)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def oracle_auroc(oracle_csv: Path, stay_ids: np.ndarray, labels: np.ndarray, task: str) -> float:
    """AUROC of the true outcome probabilities on the given stays (NaN without the file)."""
    if not Path(oracle_csv).is_file() or len(np.unique(labels)) < 2:
        return math.nan
    truth = pd.read_csv(oracle_csv, usecols=["stay_id", task]).set_index("stay_id")[task]
    return float(roc_auc_score(labels, truth.loc[stay_ids].to_numpy()))
