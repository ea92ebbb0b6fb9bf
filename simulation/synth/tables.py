"""Admission-level tables (admissions, transfers) and the chart item dictionary, MIMIC-IV style."""

from __future__ import annotations

import numpy as np
import pandas as pd

_ADMISSION_TYPES = ("EW EMER.", "URGENT", "ELECTIVE", "OBSERVATION ADMIT", "SURGICAL SAME DAY ADMISSION")
_LOCATIONS = ("EMERGENCY ROOM", "TRANSFER FROM HOSPITAL", "PHYSICIAN REFERRAL", "WALK-IN/SELF REFERRAL")
_RACES = ("WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO - PUERTO RICAN", "ASIAN", "UNKNOWN")


def admissions_table(rng: np.random.Generator, adm: pd.DataFrame) -> pd.DataFrame:
    """hosp/admissions rows; deathtime and hospital_expire_flag set exactly for in-hospital deaths."""
    n = len(adm)
    ed = rng.random(n) < 0.6
    edreg = adm.admittime - pd.to_timedelta(rng.uniform(1, 8, n), unit="h")
    return pd.DataFrame({
        "subject_id": adm.subject_id, "hadm_id": adm.hadm_id, "admittime": adm.admittime.dt.floor("min"),
        "dischtime": adm.dischtime.dt.floor("min"), "deathtime": adm.deathtime.dt.floor("min"),
        "admission_type": rng.choice(_ADMISSION_TYPES, n),
        "admit_provider_id": [f"P{x:05X}" for x in rng.integers(0, 1 << 20, n)],
        "admission_location": rng.choice(_LOCATIONS, n),
        "discharge_location": np.where(adm.died, "DIED", rng.choice(
            ["HOME", "HOME HEALTH CARE", "SKILLED NURSING FACILITY", "REHAB"], n)),
        "insurance": rng.choice(["Medicare", "Medicaid", "Other"], n),
        "language": rng.choice(["ENGLISH", "?"], n, p=[0.9, 0.1]),
        "marital_status": rng.choice(["MARRIED", "SINGLE", "WIDOWED", ""], n),
        "race": rng.choice(_RACES, n),
        "edregtime": edreg.where(ed).dt.floor("min"), "edouttime": adm.admittime.where(ed).dt.floor("min"),
        "hospital_expire_flag": adm.died.astype(int),
    })


def transfers_table(rng: np.random.Generator, adm: pd.DataFrame, stays: pd.DataFrame) -> pd.DataFrame:
    """ED, ward, ICU and discharge events; ED visits without admission have an empty hadm_id."""
    ward = pd.DataFrame({"subject_id": adm.subject_id, "hadm_id": adm.hadm_id, "eventtype": "admit",
                         "careunit": "Medicine", "intime": adm.admittime, "outtime": adm.dischtime})
    icu = pd.DataFrame({"subject_id": stays.subject_id, "hadm_id": stays.hadm_id,
                        "eventtype": "transfer", "careunit": stays.first_careunit,
                        "intime": stays.intime, "outtime": stays.outtime})
    out = pd.DataFrame({"subject_id": adm.subject_id, "hadm_id": adm.hadm_id,
                        "eventtype": "discharge", "careunit": None, "intime": adm.dischtime,
                        "outtime": pd.NaT})
    ed_only = adm.sample(frac=0.1, random_state=int(rng.integers(1 << 31)))
    ed = pd.DataFrame({"subject_id": ed_only.subject_id, "hadm_id": pd.NA, "eventtype": "ED",
                       "careunit": "Emergency Department",
                       "intime": ed_only.admittime - pd.Timedelta(days=90),
                       "outtime": ed_only.admittime - pd.Timedelta(days=90) + pd.Timedelta(hours=5)})
    frame = pd.concat([ward, icu, out, ed], ignore_index=True)
    frame["hadm_id"] = frame["hadm_id"].astype("Int64")
    frame["transfer_id"] = 30_000_000 + rng.choice(np.arange(1, 9_000_000), len(frame), replace=False)
    for col in ("intime", "outtime"):
        frame[col] = pd.to_datetime(frame[col]).dt.floor("s")
    return frame


_D_ITEMS = [
    (220045, "Heart Rate", "HR", "Routine Vital Signs", "bpm", "Numeric"),
    (220050, "Arterial Blood Pressure systolic", "ABPs", "Routine Vital Signs", "mmHg", "Numeric"),
    (220051, "Arterial Blood Pressure diastolic", "ABPd", "Routine Vital Signs", "mmHg", "Numeric"),
    (220052, "Arterial Blood Pressure mean", "ABPm", "Routine Vital Signs", "mmHg", "Numeric"),
    (220179, "Non Invasive Blood Pressure systolic", "NBPs", "Routine Vital Signs", "mmHg", "Numeric"),
    (220180, "Non Invasive Blood Pressure diastolic", "NBPd", "Routine Vital Signs", "mmHg", "Numeric"),
    (220181, "Non Invasive Blood Pressure mean", "NBPm", "Routine Vital Signs", "mmHg", "Numeric"),
    (220210, "Respiratory Rate", "RR", "Respiratory", "insp/min", "Numeric"),
    (220277, "O2 saturation pulseoxymetry", "SpO2", "Respiratory", "%", "Numeric"),
    (223761, "Temperature Fahrenheit", "Temperature F", "Routine Vital Signs", "°F", "Numeric"),
    (223762, "Temperature Celsius", "Temperature C", "Routine Vital Signs", "°C", "Numeric"),
    (220739, "GCS - Eye Opening", "Eye Opening", "Neurological", None, "Text"),
    (223901, "GCS - Motor Response", "Motor Response", "Neurological", None, "Text"),
    (223900, "GCS - Verbal Response", "Verbal Response", "Neurological", None, "Text"),
    (223835, "Inspired O2 Fraction", "FiO2", "Respiratory", None, "Numeric"),
    (225664, "Glucose finger stick (range 70-100)", "Glucose FS (range 70 -100)", "Labs", None,
     "Numeric"),
    (223830, "PH (Arterial)", "PH (Arterial)", "Labs", None, "Numeric"),
    (226512, "Admission Weight (Kg)", "Admission Weight (Kg)", "General", "kg", "Numeric"),
    (226531, "Admission Weight (lbs.)", "Admission Weight (lbs.)", "General", None, "Numeric"),
    (226730, "Height (cm)", "Height (cm)", "General", "cm", "Numeric"),
    (223951, "Capillary Refill R", "Capillary Refill R", "Cardiovascular (Pulses)", None, "Text"),
]


def d_items_table() -> pd.DataFrame:
    """icu/d_items rows for every item the generator charts."""
    frame = pd.DataFrame(_D_ITEMS, columns=["itemid", "label", "abbreviation", "category",
                                            "unitname", "param_type"])
    frame["linksto"] = "chartevents"
    frame["lownormalvalue"] = np.nan
    frame["highnormalvalue"] = np.nan
    return frame
