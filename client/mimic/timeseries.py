"""Hourly EHR series over the prediction window, streamed from chartevents and labevents.

Both tables are streamed, filtered by itemid and cohort stay/subject inside the CSV reader, and
reduced into running per-hour sums, so memory is bounded by the cohort size, not the table size.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from client.mimic.config import CohortConfig
from client.mimic.tables import TABLES, iter_table_chunks
from client.mimic.variables import (
    CHART_ITEMIDS,
    LAB_ITEMIDS,
    VARIABLES,
    add_gcs_total,
    harmonize_events,
)

__all__ = ["hourly_series"]

_HOUR_NS = 3_600_000_000_000


class _HourlyAccumulator:
    """Running sums and counts per (stay, hour, variable)."""

    def __init__(self, stays: pd.DataFrame, hours: int) -> None:
        n = len(stays)
        self.hours = hours
        self.sums = np.zeros((n, hours, len(VARIABLES)), dtype=np.float64)
        self.counts = np.zeros((n, hours, len(VARIABLES)), dtype=np.int32)
        self.intime = stays["intime"].to_numpy(dtype="datetime64[ns]").astype(np.int64)

    def add(self, pos: np.ndarray, events: pd.DataFrame) -> None:
        """Add events (charttime, storetime, itemid, valuenum[, value]) of the stays at ``pos``."""
        chart = events["charttime"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
        store = events["storetime"].fillna(events["charttime"])
        store = store.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        start = self.intime[pos]
        cutoff = start + self.hours * _HOUR_NS
        hour = np.floor_divide(chart - start, _HOUR_NS)
        index, values = harmonize_events(
            events["itemid"], events["valuenum"], events.get("value")
        )
        keep = (hour >= 0) & (hour < self.hours) & (store <= cutoff) & (index >= 0)
        keep &= ~events["charttime"].isna().to_numpy()
        where = (pos[keep], hour[keep], index[keep])
        np.add.at(self.sums, where, values[keep])
        np.add.at(self.counts, where, 1)

    def merge(self, other: _HourlyAccumulator) -> None:
        """Add another accumulator of the same stays (e.g. one filled on another thread)."""
        self.sums += other.sums
        self.counts += other.counts

    def series(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)
        return add_gcs_total(mean.astype(np.float32))


def _progress(desc: str, enabled: bool) -> tqdm:
    return tqdm(desc=desc, unit=" rows", unit_scale=True, disable=None if enabled else True, leave=False)


def hourly_series(mimic_iv: Path, stays: pd.DataFrame, config: CohortConfig) -> np.ndarray:
    """Return the hourly mean of each variable, shape [stays, window_hours, 17], NaN = unobserved.

    Chart events are linked by ``stay_id``; lab events by ``subject_id`` and time (their
    ``hadm_id`` is often empty). An event counts only if known by the cutoff (its storetime).
    """
    chart, lab = (_HourlyAccumulator(stays, config.window_hours) for _ in range(2))
    stay_ids = stays["stay_id"].to_numpy(np.int64)
    by_id = np.argsort(stay_ids)
    subject_stays = pd.DataFrame({"subject_id": stays["subject_id"].to_numpy(),
                                  "_pos": np.arange(len(stays))})

    def add_lab_events() -> None:
        cols = ["subject_id", "itemid", "charttime", "storetime", "valuenum", "valueuom"]
        for chunk in iter_table_chunks(mimic_iv, TABLES["labevents"], usecols=cols,
                                       keep={"itemid": LAB_ITEMIDS,
                                             "subject_id": set(subject_stays["subject_id"])}):
            linked = chunk.merge(subject_stays, on="subject_id")
            lab.add(linked["_pos"].to_numpy(), linked)

    # labevents streams on a second core (pyarrow releases the GIL) into its own accumulator
    with ThreadPoolExecutor(max_workers=1) as pool:
        labs = pool.submit(add_lab_events)
        cols = ["stay_id", "charttime", "storetime", "itemid", "value", "valuenum"]
        with _progress("chartevents (cohort rows)", config.progress) as bar:
            for chunk in iter_table_chunks(mimic_iv, TABLES["chartevents"], usecols=cols,
                                           keep={"itemid": CHART_ITEMIDS,
                                                 "stay_id": set(stay_ids)}):
                bar.update(len(chunk))
                found = np.searchsorted(stay_ids, chunk["stay_id"].to_numpy(np.int64), sorter=by_id)
                chart.add(by_id[found], chunk)
        labs.result()  # re-raises a lab file error here
    chart.merge(lab)
    return chart.series()
