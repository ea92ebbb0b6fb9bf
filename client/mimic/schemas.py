"""Every MIMIC-IV / -Note / -CXR-JPG table this project reads, declared once as a pyarrow schema.

A schema gives the full header of the real release in order (the synthetic writer writes it), each
column's type and whether it may be empty. ``required`` is the subset the loaders read; a table
marked ``optional`` may be present but empty (a hospital whose lab feed is not connected ships a
header-only ``labevents``): the loaders then warn and treat its values as missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

__all__ = ["TableSpec", "TABLES"]

INT, FLOAT, TEXT, TIME = pa.int64(), pa.float64(), pa.string(), pa.timestamp("s")


def _schema(*columns: tuple[str, pa.DataType] | tuple[str, pa.DataType, bool]) -> pa.Schema:
    """Columns as (name, type) -- nullable -- or (name, type, False) for never-empty ones."""
    return pa.schema([pa.field(c[0], c[1], nullable=c[2] if len(c) > 2 else True) for c in columns])


@dataclass(frozen=True)
class TableSpec:
    """One MIMIC table: where it lives under its release root, its schema, what the loaders read."""

    stem: str
    schema: pa.Schema
    required: tuple[str, ...]
    optional: bool = False
    multiline: bool = False  # free text with line breaks inside quoted values (the notes)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.schema.names)

    @property
    def dates(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.schema if pa.types.is_timestamp(f.type))


_NOTE = _schema(("note_id", TEXT, False), ("subject_id", INT, False), ("hadm_id", INT),
                ("note_type", TEXT), ("note_seq", INT), ("charttime", TIME), ("storetime", TIME),
                ("text", TEXT))

TABLES: dict[str, TableSpec] = {
    "patients": TableSpec("hosp/patients", _schema(
        ("subject_id", INT, False), ("gender", TEXT), ("anchor_age", INT, False),
        ("anchor_year", INT, False), ("anchor_year_group", TEXT), ("dod", TIME)),
        ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group")),
    "admissions": TableSpec("hosp/admissions", _schema(
        ("subject_id", INT, False), ("hadm_id", INT, False), ("admittime", TIME, False),
        ("dischtime", TIME), ("deathtime", TIME), ("admission_type", TEXT),
        ("admit_provider_id", TEXT), ("admission_location", TEXT), ("discharge_location", TEXT),
        ("insurance", TEXT), ("language", TEXT), ("marital_status", TEXT), ("race", TEXT),
        ("edregtime", TIME), ("edouttime", TIME), ("hospital_expire_flag", INT, False)),
        ("subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "hospital_expire_flag")),
    "transfers": TableSpec("hosp/transfers", _schema(
        ("subject_id", INT, False), ("hadm_id", INT), ("transfer_id", INT), ("eventtype", TEXT),
        ("careunit", TEXT), ("intime", TIME), ("outtime", TIME)),
        ("subject_id", "hadm_id", "careunit", "intime")),
    "labevents": TableSpec("hosp/labevents", _schema(
        ("labevent_id", INT), ("subject_id", INT, False), ("hadm_id", INT), ("specimen_id", INT),
        ("itemid", INT, False), ("order_provider_id", TEXT), ("charttime", TIME),
        ("storetime", TIME), ("value", TEXT), ("valuenum", FLOAT), ("valueuom", TEXT),
        ("ref_range_lower", FLOAT), ("ref_range_upper", FLOAT), ("flag", TEXT),
        ("priority", TEXT), ("comments", TEXT)),
        ("subject_id", "itemid", "charttime", "storetime", "valuenum", "valueuom"), optional=True),
    "d_labitems": TableSpec("hosp/d_labitems", _schema(
        ("itemid", INT, False), ("label", TEXT), ("fluid", TEXT), ("category", TEXT)),
        ("itemid", "label"), optional=True),
    "icustays": TableSpec("icu/icustays", _schema(
        ("subject_id", INT, False), ("hadm_id", INT, False), ("stay_id", INT, False),
        ("first_careunit", TEXT), ("last_careunit", TEXT), ("intime", TIME, False),
        ("outtime", TIME), ("los", FLOAT)),
        ("subject_id", "hadm_id", "stay_id", "first_careunit", "intime", "outtime", "los")),
    "chartevents": TableSpec("icu/chartevents", _schema(
        ("subject_id", INT), ("hadm_id", INT), ("stay_id", INT, False), ("caregiver_id", INT),
        ("charttime", TIME), ("storetime", TIME), ("itemid", INT, False), ("value", TEXT),
        ("valuenum", FLOAT), ("valueuom", TEXT), ("warning", INT)),
        ("stay_id", "charttime", "storetime", "itemid", "value", "valuenum")),
    "d_items": TableSpec("icu/d_items", _schema(
        ("itemid", INT, False), ("label", TEXT), ("abbreviation", TEXT), ("linksto", TEXT),
        ("category", TEXT), ("unitname", TEXT), ("param_type", TEXT), ("lownormalvalue", FLOAT),
        ("highnormalvalue", FLOAT)),
        ("itemid", "label"), optional=True),
    "radiology": TableSpec("note/radiology", _NOTE,
                           ("note_id", "subject_id", "note_type", "charttime", "storetime", "text"),
                           optional=True, multiline=True),
    "discharge": TableSpec("note/discharge", _NOTE,
                           ("note_id", "subject_id", "hadm_id", "note_type", "charttime", "text"),
                           optional=True, multiline=True),
    "cxr_metadata": TableSpec("mimic-cxr-2.0.0-metadata", _schema(
        ("dicom_id", TEXT, False), ("subject_id", INT, False), ("study_id", INT, False),
        ("PerformedProcedureStepDescription", TEXT), ("ViewPosition", TEXT), ("Rows", INT),
        ("Columns", INT), ("StudyDate", TEXT), ("StudyTime", TEXT),
        ("ProcedureCodeSequence_CodeMeaning", TEXT), ("ViewCodeSequence_CodeMeaning", TEXT),
        ("PatientOrientationCodeSequence_CodeMeaning", TEXT)),
        ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime")),
    "cxr_split": TableSpec("mimic-cxr-2.0.0-split", _schema(
        ("dicom_id", TEXT, False), ("study_id", INT, False), ("subject_id", INT, False),
        ("split", TEXT)),
        ("dicom_id", "study_id", "subject_id", "split")),
    "cxr_chexpert": TableSpec("mimic-cxr-2.0.0-chexpert", _schema(
        ("subject_id", INT, False), ("study_id", INT, False),
        *((finding, FLOAT) for finding in (
            "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
            "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion",
            "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices"))),
        ("subject_id", "study_id")),
}
