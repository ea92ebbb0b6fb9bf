"""Table specs and safe readers for MIMIC-format csv/csv.gz files.

Every reader turns a missing file, a truncated gzip, an empty table or a missing column into a
one-line :class:`~client.errors.MimicFileError` that names the file (and column).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from client.errors import MimicFileError

__all__ = ["TableSpec", "TABLES", "resolve_table_path", "read_table", "iter_table_chunks"]


@dataclass(frozen=True)
class TableSpec:
    """One MIMIC table: where it lives under its release root and the columns the loaders need.

    ``columns`` is the full header of the real release, in order (the synthetic writer uses it);
    ``required`` the subset the loaders read; ``dates`` the columns parsed as timestamps.
    """

    stem: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    dates: tuple[str, ...] = ()
    nullable_ints: tuple[str, ...] = ()


TABLES: dict[str, TableSpec] = {
    "patients": TableSpec(
        "hosp/patients",
        ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"),
        ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group"),
        dates=("dod",),
    ),
    "admissions": TableSpec(
        "hosp/admissions",
        (
            "subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
            "admit_provider_id", "admission_location", "discharge_location", "insurance",
            "language", "marital_status", "race", "edregtime", "edouttime", "hospital_expire_flag",
        ),
        ("subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "hospital_expire_flag"),
        dates=("admittime", "dischtime", "deathtime"),
    ),
    "transfers": TableSpec(
        "hosp/transfers",
        ("subject_id", "hadm_id", "transfer_id", "eventtype", "careunit", "intime", "outtime"),
        ("subject_id", "hadm_id", "careunit", "intime"),
        dates=("intime", "outtime"),
        nullable_ints=("hadm_id",),
    ),
    "labevents": TableSpec(
        "hosp/labevents",
        (
            "labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid", "order_provider_id",
            "charttime", "storetime", "value", "valuenum", "valueuom", "ref_range_lower",
            "ref_range_upper", "flag", "priority", "comments",
        ),
        ("subject_id", "itemid", "charttime", "storetime", "valuenum", "valueuom"),
        dates=("charttime", "storetime"),
        nullable_ints=("hadm_id",),
    ),
    "d_labitems": TableSpec(
        "hosp/d_labitems", ("itemid", "label", "fluid", "category"), ("itemid", "label")
    ),
    "icustays": TableSpec(
        "icu/icustays",
        (
            "subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime",
            "outtime", "los",
        ),
        ("subject_id", "hadm_id", "stay_id", "first_careunit", "intime", "outtime", "los"),
        dates=("intime", "outtime"),
    ),
    "chartevents": TableSpec(
        "icu/chartevents",
        (
            "subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime",
            "itemid", "value", "valuenum", "valueuom", "warning",
        ),
        ("stay_id", "charttime", "storetime", "itemid", "value", "valuenum"),
        dates=("charttime", "storetime"),
    ),
    "d_items": TableSpec(
        "icu/d_items",
        (
            "itemid", "label", "abbreviation", "linksto", "category", "unitname", "param_type",
            "lownormalvalue", "highnormalvalue",
        ),
        ("itemid", "label"),
    ),
    "radiology": TableSpec(
        "note/radiology",
        ("note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime",
         "text"),
        ("note_id", "subject_id", "note_type", "charttime", "storetime", "text"),
        dates=("charttime", "storetime"),
        nullable_ints=("hadm_id",),
    ),
    "discharge": TableSpec(
        "note/discharge",
        ("note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime",
         "text"),
        ("note_id", "subject_id", "hadm_id", "note_type", "charttime", "text"),
        dates=("charttime", "storetime"),
    ),
    "cxr_metadata": TableSpec(
        "mimic-cxr-2.0.0-metadata",
        (
            "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
            "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
            "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
            "PatientOrientationCodeSequence_CodeMeaning",
        ),
        ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"),
    ),
    "cxr_split": TableSpec(
        "mimic-cxr-2.0.0-split",
        ("dicom_id", "study_id", "subject_id", "split"),
        ("dicom_id", "study_id", "subject_id", "split"),
    ),
    "cxr_chexpert": TableSpec(
        "mimic-cxr-2.0.0-chexpert",
        (
            "subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
            "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity",
            "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax",
            "Support Devices",
        ),
        ("subject_id", "study_id"),
    ),
}


def resolve_table_path(root: Path | str, spec: TableSpec) -> Path:
    """Return ``root/stem.csv.gz`` or ``root/stem.csv``, whichever exists."""
    root = Path(root)
    for suffix in (".csv.gz", ".csv"):
        path = root / f"{spec.stem}{suffix}"
        if path.is_file():
            return path
    raise MimicFileError(f"{root / spec.stem}.csv.gz: file not found (also looked for .csv)")


def _check_header(path: Path, spec: TableSpec, wanted: Sequence[str]) -> None:
    try:
        header = pd.read_csv(path, nrows=0).columns
    except pd.errors.EmptyDataError:
        raise MimicFileError(f"{path}: empty file (no header row)") from None
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
        raise MimicFileError(f"{path}: unreadable or truncated file ({err})") from None
    missing = [c for c in wanted if c not in header]
    if missing:
        raise MimicFileError(
            f"{path}: missing column '{missing[0]}' (header has: {', '.join(header)})"
        )


def _dtypes(spec: TableSpec, usecols: Sequence[str]) -> dict[str, str]:
    dtypes: dict[str, str] = {c: "Int64" for c in spec.nullable_ints if c in usecols}
    for text_col in ("value", "valueuom", "text", "StudyTime", "StudyDate", "note_id"):
        if text_col in usecols:
            dtypes[text_col] = "string"
    return dtypes


def _parse_dates(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    for col in spec.dates:
        if col in frame.columns:
            frame[col] = pd.to_datetime(frame[col], format="ISO8601", errors="coerce")
    return frame


def iter_table_chunks(
    root: Path | str,
    spec: TableSpec,
    *,
    usecols: Sequence[str] | None = None,
    chunksize: int = 250_000,
) -> Iterator[pd.DataFrame]:
    """Stream a (possibly huge) table in chunks of ``chunksize`` rows, dates parsed.

    Raises :class:`MimicFileError` naming the file for any read problem, also mid-stream.
    """
    path = resolve_table_path(root, spec)
    cols = list(usecols or spec.required)
    _check_header(path, spec, cols)
    rows = 0
    try:
        reader = pd.read_csv(path, usecols=cols, dtype=_dtypes(spec, cols), chunksize=chunksize)
        for chunk in reader:
            rows += len(chunk)
            yield _parse_dates(chunk, spec)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise MimicFileError(f"{path}: truncated or corrupt gzip after {rows} rows ({err})") from None
    except (pd.errors.ParserError, ValueError) as err:
        raise MimicFileError(f"{path}: malformed CSV after {rows} rows ({err})") from None
    if rows == 0:
        raise MimicFileError(f"{path}: table has a header but no rows")


def read_table(
    root: Path | str, spec: TableSpec, *, usecols: Sequence[str] | None = None
) -> pd.DataFrame:
    """Read a whole (small) table; see :func:`iter_table_chunks` for the big ones."""
    return pd.concat(list(iter_table_chunks(root, spec, usecols=usecols)), ignore_index=True)
