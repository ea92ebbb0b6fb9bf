"""Build the prediction cohort: one row per adult ICU stay of at least the window length.

Output columns: identifiers, ``intime``, ``first_careunit``, ``anchor_year_group``, demographics,
the three task labels (float, NaN = no label), availability flags, the hourly EHR series
(flattened, see :func:`ehr_array`), the linked radiology text and the chest X-ray path.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from client.errors import MoeHealthInputError
from client.mimic.config import CohortConfig
from client.mimic.linkage import link_chest_xrays, link_radiology_notes
from client.mimic.tables import TABLES, read_table
from client.mimic.timeseries import hourly_series
from client.mimic.variables import VARIABLE_NAMES
from shared_model.run_config import TASKS

__all__ = ["MimicRoots", "TASKS", "select_stays", "build_cohort", "write_cohort", "read_cohort",
           "cohort_metadata",
           "ehr_array"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MimicRoots:
    """Release roots: MIMIC-IV (hosp/, icu/) is required, Note and CXR-JPG are optional."""

    mimic_iv: Path
    mimic_note: Path | None = None
    mimic_cxr: Path | None = None


def _readmission_label(admissions: pd.DataFrame, days: float) -> pd.Series:
    """1 if another admission of the patient starts within ``days`` after discharge, NaN if died."""
    adm = admissions.sort_values("dischtime").dropna(subset=["dischtime"])
    starts = admissions[["subject_id", "admittime"]].dropna().sort_values("admittime")
    starts = starts.rename(columns={"admittime": "_next"})
    nxt = pd.merge_asof(adm[["hadm_id", "subject_id", "dischtime"]], starts,
                        left_on="dischtime", right_on="_next", by="subject_id",
                        direction="forward", allow_exact_matches=True)
    label = ((nxt["_next"] - nxt["dischtime"]) <= pd.Timedelta(days=days)).astype("float32")
    label.index = nxt["hadm_id"].to_numpy()
    died = admissions.set_index("hadm_id")["hospital_expire_flag"] == 1
    label[died.reindex(label.index).fillna(False).to_numpy()] = np.nan
    return label


def _one_row_per_stay(stays: pd.DataFrame, mimic_iv: Path) -> pd.DataFrame:
    """One row per ``stay_id`` (real exports can repeat rows): the first kept, with a warning
    counting the rows merged."""
    repeated = stays["stay_id"].duplicated()
    if repeated.any():
        log.warning("%s/icu/icustays: %d repeated rows of %d stays merged (one sample per stay, "
                    "the first row kept)", mimic_iv, int(repeated.sum()),
                    stays.loc[repeated, "stay_id"].nunique())
    return stays[~repeated]


def select_stays(mimic_iv: Path, config: CohortConfig) -> pd.DataFrame:
    """ICU stays of adults lasting at least the window, with demographics and the three labels."""
    stays = _one_row_per_stay(read_table(mimic_iv, TABLES["icustays"]), mimic_iv)
    patients = read_table(mimic_iv, TABLES["patients"])
    admissions = read_table(mimic_iv, TABLES["admissions"])
    stays = stays.merge(patients, on="subject_id", how="inner")
    stays["age"] = stays["anchor_age"] + (stays["intime"].dt.year - stays["anchor_year"])
    hours = (stays["outtime"] - stays["intime"]).dt.total_seconds() / 3600
    backwards = int((hours < 0).sum())
    if backwards:
        log.warning("%s/icu/icustays: %d stays whose outtime precedes intime dropped", mimic_iv,
                    backwards)
    adult, long_enough = stays["age"] >= config.min_age, hours >= config.window_hours
    log.info("cohort rules: %d stays; dropped %d under age %d, %d shorter than %d h", len(stays),
             int((~adult).sum()), config.min_age, int((adult & ~long_enough & (hours >= 0)).sum()),
             config.window_hours)
    stays = stays[adult & long_enough]
    stays = stays.merge(admissions[["hadm_id", "hospital_expire_flag"]], on="hadm_id", how="left")
    if stays["hospital_expire_flag"].isna().any():
        bad = stays.loc[stays["hospital_expire_flag"].isna(), "hadm_id"].iloc[0]
        raise MoeHealthInputError(
            f"{mimic_iv}/icu/icustays: hadm_id {bad} has no row in hosp/admissions"
        )
    stays["mortality"] = stays["hospital_expire_flag"].astype("float32")
    stays["los"] = (stays["los"] > config.los_threshold_days).astype("float32")
    readmit = _readmission_label(admissions, config.readmission_days)
    stays["readmission"] = readmit.reindex(stays["hadm_id"].to_numpy()).to_numpy()
    stays["gender"] = (stays["gender"] == "F").astype("float32")
    keep = ["stay_id", "subject_id", "hadm_id", "intime", "first_careunit", "anchor_year_group",
            "age", "gender", *TASKS]
    return stays[keep].sort_values("stay_id").reset_index(drop=True)


def build_cohort(roots: MimicRoots, config: CohortConfig | None = None) -> pd.DataFrame:
    """Run the whole cohort pipeline on MIMIC-format roots (real or synthetic)."""
    config = config or CohortConfig()
    started = time.perf_counter()
    stays = select_stays(roots.mimic_iv, config)
    if stays.empty:
        raise MoeHealthInputError(f"{roots.mimic_iv}: no ICU stay passes the cohort rules")
    series = hourly_series(roots.mimic_iv, stays, config)
    cohort = stays.copy()
    cohort["has_ehr"] = ~np.isnan(series).all(axis=(1, 2))
    cohort["ehr"] = list(series.reshape(len(stays), -1))
    notes = (link_radiology_notes(roots.mimic_note, stays, config) if roots.mimic_note
             else pd.Series("", index=stays.index, dtype="string"))
    cohort["note_text"] = notes.to_numpy()
    cohort["has_notes"] = notes.str.len().fillna(0).to_numpy() > 0
    if roots.mimic_cxr:
        cxr = link_chest_xrays(roots.mimic_cxr, stays, config)
        cohort[cxr.columns] = cxr.to_numpy()
        cohort["cxr_path"] = cohort["cxr_path"].astype("string")
    else:
        cohort["cxr_path"] = pd.Series(pd.NA, index=stays.index, dtype="string")
    cohort["has_cxr"] = cohort["cxr_path"].notna()
    cohort.attrs["moehealth"] = cohort_metadata(config)
    log.info("cohort: %d stays in %.1f s", len(cohort), time.perf_counter() - started)
    return cohort


def cohort_metadata(config: CohortConfig) -> dict:
    """What a reader needs to interpret a cohort file: window length, variable order, rules."""
    return {"window_hours": config.window_hours, "variables": list(VARIABLE_NAMES),
            "config": {k: v for k, v in asdict(config).items() if k != "progress"}}


COHORT_FILE = "cohort.parquet"


def cohort_file(path: Path) -> Path:
    """A cohort's parquet file: ``path`` itself, or ``path/cohort.parquet`` for a folder."""
    path = Path(path)
    return path / COHORT_FILE if path.is_dir() else path


def write_cohort(cohort: pd.DataFrame, path: Path, metadata: dict | None = None) -> None:
    """Write parquet atomically, with ``metadata`` (default: ``cohort.attrs``) in its schema
    (nothing is left behind when writing fails)."""
    metadata = metadata if metadata is not None else cohort.attrs["moehealth"]
    table = pa.Table.from_pandas(cohort.drop(columns=["cxr_time", "cxr_study_id"], errors="ignore"),
                                 preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"moehealth": json.dumps(metadata).encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        pq.write_table(table, tmp)
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise MoeHealthInputError(f"{path}: cannot write the cohort ({err.strerror or err})"
                                  ) from None


def read_cohort(path: Path) -> pd.DataFrame:
    """Read a cohort parquet written by :func:`write_cohort` (or the ``cohort.parquet`` in a
    folder), with a clear error if it is not one."""
    path = cohort_file(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise MoeHealthInputError(f"{path}: not a readable cohort parquet ({err})") from None
    meta = (table.schema.metadata or {}).get(b"moehealth")
    if meta is None:
        raise MoeHealthInputError(f"{path}: parquet lacks moehealth cohort metadata")
    cohort = table.to_pandas()
    cohort.attrs["moehealth"] = json.loads(meta)
    return cohort


def ehr_array(cohort: pd.DataFrame) -> np.ndarray:
    """The hourly series as float32 [n, window_hours, variables] (NaN where unobserved)."""
    hours = cohort.attrs.get("moehealth", {}).get("window_hours", 48)
    flat = np.stack(cohort["ehr"].to_numpy()).astype(np.float32) if len(cohort) else np.zeros(
        (0, hours * len(VARIABLE_NAMES)), dtype=np.float32)
    return flat.reshape(len(cohort), hours, len(VARIABLE_NAMES))
