"""Link radiology notes (MIMIC-IV-Note) and chest X-rays (MIMIC-CXR-JPG) to ICU stays by time.

Neither source reliably carries a stay id: notes may lack ``hadm_id`` and MIMIC-CXR has neither, so
both are linked by ``subject_id`` and a time window that ends at the prediction cutoff.
Discharge summaries are never read: they are written at discharge and would leak the outcome.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from client.mimic.config import CohortConfig
from client.mimic.tables import TABLES, iter_table_chunks, read_table

__all__ = ["link_radiology_notes", "link_chest_xrays", "cxr_image_path", "cxr_study_times"]

log = logging.getLogger(__name__)
_RADIOLOGY_TYPES = ("RR", "AR")


def _window(stays: pd.DataFrame, config: CohortConfig) -> pd.DataFrame:
    return pd.DataFrame({
        "subject_id": stays["subject_id"].to_numpy(),
        "_pos": np.arange(len(stays)),
        "_start": stays["intime"].to_numpy(),
        "_cutoff": (stays["intime"] + pd.Timedelta(hours=config.window_hours)).to_numpy(),
    })


def link_radiology_notes(mimic_note: Path, stays: pd.DataFrame, config: CohortConfig) -> pd.Series:
    """Return per stay the radiology reports known by the cutoff, oldest first ("" if none).

    A report counts if charted in [intime - notes_lookback_hours, cutoff] and stored by the cutoff.
    """
    window = _window(stays, config)
    lookback = pd.Timedelta(hours=config.notes_lookback_hours)
    found = []
    cols = ["subject_id", "note_type", "charttime", "storetime", "text"]
    for chunk in iter_table_chunks(mimic_note, TABLES["radiology"], usecols=cols,
                                   keep={"subject_id": set(window["subject_id"])}):
        chunk = chunk[chunk["note_type"].isin(_RADIOLOGY_TYPES)]
        linked = chunk.merge(window, on="subject_id")
        known = linked["storetime"].fillna(linked["charttime"])
        keep = ((linked["charttime"] >= linked["_start"] - lookback)
                & (linked["charttime"] <= linked["_cutoff"]) & (known <= linked["_cutoff"]))
        found.append(linked.loc[keep, ["_pos", "charttime", "text"]])
    texts = pd.Series("", index=np.arange(len(stays)), dtype="string")
    if found:
        notes = pd.concat(found).sort_values(["_pos", "charttime"])
        joined = notes.groupby("_pos")["text"].agg(lambda t: "\n\n".join(t.astype(str)))
        texts.loc[joined.index] = joined
    return texts.reset_index(drop=True)


def cxr_study_times(metadata: pd.DataFrame) -> pd.Series:
    """StudyDate (YYYYMMDD) + StudyTime (HHMMSS.fff, zero-padded to 6 digits) as timestamps."""
    date = metadata["StudyDate"].astype("string").str.strip().str.split(".").str[0]
    clock = metadata["StudyTime"].astype("string").str.strip()
    whole = clock.str.split(".").str[0].str.zfill(6)
    frac = clock.str.split(".").str[1].fillna("0")
    return pd.to_datetime(date + whole + "." + frac, format="%Y%m%d%H%M%S.%f", errors="coerce")


def cxr_image_path(root: Path, subject_id: int, study_id: int, dicom_id: str) -> Path:
    """files/p{first 2 digits}/p{subject_id}/s{study_id}/{dicom_id}.jpg under the release root."""
    sid = str(int(subject_id))
    return Path(root) / "files" / f"p{sid[:2]}" / f"p{sid}" / f"s{int(study_id)}" / f"{dicom_id}.jpg"


def link_chest_xrays(mimic_cxr: Path, stays: pd.DataFrame, config: CohortConfig) -> pd.DataFrame:
    """Return per stay the latest AP/PA image taken in [intime, cutoff]: path, study_id, time.

    Images whose JPEG file is missing are skipped with one warning (partial downloads happen).
    """
    meta = read_table(mimic_cxr, TABLES["cxr_metadata"])
    meta = meta[meta["ViewPosition"].isin(config.cxr_views)
                & meta["subject_id"].isin(stays["subject_id"])].copy()
    meta["_time"] = cxr_study_times(meta)
    linked = meta.merge(_window(stays, config), on="subject_id")
    linked = linked[(linked["_time"] >= linked["_start"]) & (linked["_time"] <= linked["_cutoff"])]
    linked["cxr_path"] = [
        str(cxr_image_path(mimic_cxr, s, st, d))
        for s, st, d in zip(linked["subject_id"], linked["study_id"], linked["dicom_id"],
                            strict=True)
    ]
    exists = linked["cxr_path"].map(lambda p: Path(p).is_file())
    if (~exists).any():
        log.warning("%s: %d linked images have no JPEG file; treated as missing",
                    mimic_cxr, int((~exists).sum()))
    latest = (linked[exists].sort_values(["_pos", "_time", "dicom_id"])
              .groupby("_pos").tail(1).set_index("_pos"))
    out = pd.DataFrame(index=np.arange(len(stays)))
    out["cxr_path"] = latest["cxr_path"].astype("string")
    out["cxr_study_id"] = latest["study_id"].astype("Int64")
    out["cxr_time"] = latest["_time"]
    return out

