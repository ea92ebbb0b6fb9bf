"""Synthetic patients, admissions and ICU stays driven by one latent state per stay.

Each stay has three latent severity components, each mainly visible in one modality (``z_ehr`` in
vitals and labs, ``z_note`` in radiology wording, ``z_img`` in X-ray findings), and each patient a
frailty ``frailty`` seen in several. All three outcomes are drawn from these, weighted so that the
EHR alone reaches an AUROC near 0.7 on mortality and all modalities together well above 0.85: every
modality carries signal and they complement each other. The true probabilities go to
``oracle.csv``; what each modality shows of the latent state is drawn in ``signals.py``.

Identifiers come from an ``id_block`` (0: the training population, 1: an independent test
population, 2: the public-like image archive), so populations never share a patient.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd
from scipy.special import expit, ndtr

from shared_model.progress_bars import Progress
from simulation.synth.hospitals import MCAR
from simulation.synth.signals import draw_signals

log = logging.getLogger(__name__)

CAREUNITS: dict[str, float] = {
    "Medical Intensive Care Unit (MICU)": 0.22,
    "Surgical Intensive Care Unit (SICU)": 0.17,
    "Cardiac Vascular Intensive Care Unit (CVICU)": 0.18,
    "Medical/Surgical Intensive Care Unit (MICU/SICU)": 0.16,
    "Trauma SICU (TSICU)": 0.11,
    "Coronary Care Unit (CCU)": 0.11,
    "Neuro Surgical Intensive Care Unit (Neuro SICU)": 0.05,
}
# Per care unit, a shift of the mean acute severity: sites differ in case mix.
_UNIT_SEVERITY = np.array([0.35, -0.1, -0.35, 0.15, 0.0, 0.2, -0.1])
YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")
SHORT_STAY_SHARE = 0.4
_LOS_LOG_SD = 0.7


@dataclass(frozen=True)
class Population:
    """The synthetic world before it is written out as MIMIC tables."""

    patients: pd.DataFrame
    admissions: pd.DataFrame
    stays: pd.DataFrame  # one row per ICU stay, with latent state and true outcome probabilities


_ID_BLOCK_SIZE = 1_000_000


def draw_ids(rng: np.random.Generator, base: int, id_block: int, n: int) -> np.ndarray:
    """``n`` distinct MIMIC-like identifiers from the population's own block."""
    if n >= _ID_BLOCK_SIZE:
        raise ValueError(f"at most {_ID_BLOCK_SIZE - 1} identifiers per population, asked {n}")
    start = base + id_block * _ID_BLOCK_SIZE
    return start + rng.choice(np.arange(1, _ID_BLOCK_SIZE), n, replace=False)


def _patients(rng: np.random.Generator, n: int, id_block: int) -> pd.DataFrame:
    age = np.clip(rng.normal(64, 16, n).round(), 18, 95).astype(int)
    return pd.DataFrame({
        "subject_id": draw_ids(rng, 10_000_000, id_block, n),
        "gender": rng.choice(["F", "M"], n, p=[0.44, 0.56]),
        "anchor_age": np.where(age > 89, 91, age),
        "anchor_year": rng.integers(2110, 2190, n),
        "anchor_year_group": rng.choice(YEAR_GROUPS, n),
        "frailty": rng.normal(0, 1, n),
    })


def _outcome_probs(z: SimpleNamespace, age: float) -> dict[str, float]:
    """True probabilities of the three outcomes given a stay's latent state."""
    mort = expit(-4.2 + 1.0 * z.z_ehr + 2.0 * z.z_note + 1.5 * z.z_img + 0.3 * z.frailty
                 + 0.02 * (age - 65))
    los_mu = np.log(2.2) + 0.3 * z.z_ehr + 0.5 * z.z_note + 0.45 * z.z_img
    # P(ICU > 7 d | ICU >= 2 d); ndtr is what norm.cdf computes, without its per-call
    # argument handling (~90 us a stay)
    p_long = 1 - ndtr((np.log(5.0) - los_mu) / _LOS_LOG_SD)
    readmit = expit(-2.6 + 0.6 * z.frailty + 1.0 * z.z_note + 0.3 * z.z_ehr + 0.5 * z.z_img)
    return {"p_mortality": float(mort), "p_los": float(p_long), "p_readmission": float(readmit),
            "los_mu": float(los_mu)}


def _stay_latent(rng: np.random.Generator, unit: int) -> dict:
    return {"first_careunit": list(CAREUNITS)[unit],
            "z_ehr": rng.normal(_UNIT_SEVERITY[unit], 1.0), "z_note": rng.normal(),
            "z_img": rng.normal()}


def _admissions_of(rng: np.random.Generator, pat, start: pd.Timestamp) -> list[dict]:
    """Admissions of one patient in time order, cut at in-hospital death.

    Ordinary admissions start at least 40 days after the previous discharge; a 30-day readmission
    (no ICU stay) follows an ICU admission with the stay's true readmission probability.
    """
    out: list[dict] = []
    t = start
    units = rng.choice(len(CAREUNITS), 3, p=list(CAREUNITS.values()))
    for k in range(int(rng.choice([1, 2, 3], p=[0.65, 0.25, 0.10]))):
        row = {"subject_id": pat.subject_id, "admittime": t, "has_icu": k == 0 or rng.random() < 0.75,
               "died": False, "frailty": pat.frailty}
        if not row["has_icu"]:
            row["dischtime"] = t + pd.Timedelta(days=float(rng.uniform(1, 8)))
            out.append(row)
            t = row["dischtime"] + pd.Timedelta(days=float(rng.uniform(40, 700)))
            continue
        row.update(_stay_latent(rng, units[k]))
        age = pat.anchor_age + (t.year - pat.anchor_year)
        row["age"] = age
        row.update(_outcome_probs(SimpleNamespace(**row), age))
        short = rng.random() < SHORT_STAY_SHARE
        los = rng.uniform(0.3, 1.95) if short else 2.0 + np.exp(
            row["los_mu"] + _LOS_LOG_SD * rng.normal())
        row["died"] = bool(rng.random() < row["p_mortality"])
        row["intime"] = t + pd.Timedelta(hours=float(rng.uniform(0.5, 20)))
        row["outtime"] = row["intime"] + pd.Timedelta(days=float(los))
        after = rng.uniform(0, 10) if row["died"] else rng.uniform(20, 150)
        row["dischtime"] = row["outtime"] + pd.Timedelta(hours=float(after))
        row["icu_los"] = los
        out.append(row)
        if row["died"]:
            break
        t = row["dischtime"] + pd.Timedelta(days=float(rng.uniform(40, 700)))
        if rng.random() < row["p_readmission"]:
            back = row["dischtime"] + pd.Timedelta(days=float(rng.uniform(0.5, 29.5)))
            out.append({"subject_id": pat.subject_id, "admittime": back, "has_icu": False,
                        "died": False, "frailty": pat.frailty,
                        "dischtime": back + pd.Timedelta(days=float(rng.uniform(1, 6)))})
            t = out[-1]["dischtime"] + pd.Timedelta(days=float(rng.uniform(40, 700)))
    return out


def build_population(rng: np.random.Generator, n_patients: int, id_block: int = 0,
                     arm: str = MCAR) -> Population:
    """Draw patients, their admissions and ICU stays, latent states, outcomes and what each
    modality shows of them (``arm``: ``mcar`` or ``hospitals-v1``, see ``hospitals.py``)."""
    patients = _patients(rng, n_patients, id_block)
    rows = []
    shown = Progress(len(patients), "synthetic MIMIC: drawing", "patients", log)
    for pat in patients.itertuples():
        start = pd.Timestamp(year=int(pat.anchor_year), month=1, day=1) + pd.Timedelta(
            days=float(rng.uniform(0, 900)), minutes=int(rng.integers(0, 1440)))
        rows.extend(_admissions_of(rng, pat, start))
        shown.update(1)
    shown.close()
    adm = pd.DataFrame(rows)
    adm["hadm_id"] = draw_ids(rng, 20_000_000, id_block, len(adm))
    adm["deathtime"] = adm["dischtime"].where(adm["died"])
    stays = adm[adm["has_icu"]].copy().reset_index(drop=True)
    stays["stay_id"] = draw_ids(rng, 30_000_000, id_block, len(stays))
    stays = pd.concat([stays, draw_signals(rng, stays, arm)], axis=1)
    return Population(patients, adm, stays)
