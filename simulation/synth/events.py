"""Chart, lab and transfer events of the synthetic stays, with MIMIC-IV's quirks.

Vitals and labs follow ``z_ehr`` (and weakly ``frailty``). Quirks kept on purpose: Fahrenheit and
Celsius temperature items, FiO2 recorded as 0-100, weight in lbs and kg, text-only capillary refill,
implausible values (heart rate 0, mean BP -23 or 801, Celsius item holding Fahrenheit), exact
duplicate rows, lab rows with text-only or no value, labs with no hadm_id, slow lab storetimes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from simulation.synth.hospitals import MCAR, STYLES, lab_assay

_HOURS_SIMULATED = 60.0
Draw = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]

# itemid: (interval in hours, share of stays charting it, unit, value from (z, frailty))
_CHART: dict[int, tuple[float, float, str, Draw]] = {
    220045: (1, 1.0, "bpm", lambda z, f, r: 85 + 13 * z + r.normal(0, 6, z.size)),
    220179: (2, 0.9, "mmHg", lambda z, f, r: 122 - 11 * z + r.normal(0, 9, z.size)),
    220180: (2, 0.9, "mmHg", lambda z, f, r: 66 - 6 * z + r.normal(0, 7, z.size)),
    220181: (2, 0.9, "mmHg", lambda z, f, r: 82 - 8 * z + r.normal(0, 7, z.size)),
    220050: (1, 0.35, "mmHg", lambda z, f, r: 118 - 12 * z + r.normal(0, 8, z.size)),
    220051: (1, 0.35, "mmHg", lambda z, f, r: 62 - 6 * z + r.normal(0, 6, z.size)),
    220052: (1, 0.35, "mmHg", lambda z, f, r: 78 - 8 * z + r.normal(0, 6, z.size)),
    220210: (1, 1.0, "insp/min", lambda z, f, r: 18 + 3.5 * z + r.normal(0, 2.5, z.size)),
    220277: (1, 1.0, "%", lambda z, f, r: np.minimum(100, 97 - 1.8 * z + r.normal(0, 1.2, z.size))),
    223761: (4, 0.85, "°F", lambda z, f, r: 98.6 + 0.9 * z + r.normal(0, 0.6, z.size)),
    223762: (4, 0.15, "°C", lambda z, f, r: 37.0 + 0.5 * z + r.normal(0, 0.3, z.size)),
    220739: (4, 1.0, "", lambda z, f, r: np.clip(np.round(4 - 0.7 * np.maximum(z, 0)
                                                         + r.normal(0, 0.4, z.size)), 1, 4)),
    223901: (4, 1.0, "", lambda z, f, r: np.clip(np.round(6 - 1.1 * np.maximum(z, 0)
                                                         + r.normal(0, 0.5, z.size)), 1, 6)),
    223900: (4, 1.0, "", lambda z, f, r: np.clip(np.round(5 - 1.0 * np.maximum(z, 0)
                                                         + r.normal(0, 0.5, z.size)), 1, 5)),
    223835: (4, 0.45, "", lambda z, f, r: np.clip(np.round(35 + 15 * z + r.normal(0, 8, z.size)),
                                                  21, 100)),
    225664: (6, 0.8, "", lambda z, f, r: 130 + 25 * z + 15 * f + r.normal(0, 20, z.size)),
    223830: (8, 0.35, "", lambda z, f, r: 7.40 - 0.05 * z + r.normal(0, 0.03, z.size)),
    226512: (1000, 0.8, "kg", lambda z, f, r: 80 + 6 * f + r.normal(0, 14, z.size)),
    226531: (1000, 0.2, "", lambda z, f, r: 176 + 13 * f + r.normal(0, 30, z.size)),
    226730: (1000, 0.4, "cm", lambda z, f, r: r.normal(170, 9, z.size)),
}
_CAPILLARY = 223951
_DECIMALS = {"bpm": 0, "mmHg": 0, "insp/min": 0, "%": 0, "°F": 1, "°C": 1, "kg": 1, "cm": 0}

# itemid: (unit, value from (z, frailty)); drawn every ~12 h of each admission.
_LABS: dict[int, tuple[str, Draw]] = {
    50931: ("mg/dL", lambda z, f, r: 125 + 25 * z + 15 * f + r.normal(0, 20, z.size)),
    50912: ("mg/dL", lambda z, f, r: np.maximum(0.3, 1.0 + 0.4 * z + 0.3 * f
                                                + r.normal(0, 0.2, z.size))),
    50813: ("mmol/L", lambda z, f, r: np.maximum(0.4, 1.4 + 0.9 * z + r.normal(0, 0.4, z.size))),
    50820: ("units", lambda z, f, r: 7.40 - 0.05 * z + r.normal(0, 0.03, z.size)),
    50817: ("%", lambda z, f, r: np.minimum(100, 96 - 2 * z + r.normal(0, 1.5, z.size))),
    51301: ("K/uL", lambda z, f, r: np.maximum(0.5, 10 + 3 * z + r.normal(0, 2, z.size))),
}
_TEXT_LABS = (51463, 51464)  # urine bacteria / bilirubin: "NEG", "MOD", "___", text only

D_LABITEMS = pd.DataFrame(
    [(50931, "Glucose", "Blood", "Chemistry"), (50912, "Creatinine", "Blood", "Chemistry"),
     (50813, "Lactate", "Blood", "Blood Gas"), (50820, "pH", "Blood", "Blood Gas"),
     (50817, "Oxygen Saturation", "Blood", "Blood Gas"),
     (51301, "White Blood Cells", "Blood", "Hematology"),
     (51463, "Bacteria", "Urine", "Hematology"), (51464, "Bilirubin", "Urine", "Hematology")],
    columns=["itemid", "label", "fluid", "category"])


def _schedule(rng: np.random.Generator, n_hours: np.ndarray, every: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """For each stay i, event offsets (hours) every ``every`` h up to ``n_hours[i]``, jittered."""
    counts = np.maximum(1, np.floor(n_hours / every).astype(int))
    owner = np.repeat(np.arange(n_hours.size), counts)
    step = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    offset = step * every + rng.uniform(0, min(every, 1.0) * 0.9, owner.size)
    return owner, np.minimum(offset, n_hours[owner])


def chart_events(rng: np.random.Generator, stays: pd.DataFrame) -> pd.DataFrame:
    """Chartevents for every stay over its first hours (at most 60 h)."""
    horizon = np.minimum(stays["icu_los"].to_numpy() * 24, _HOURS_SIMULATED)
    z = stays["z_ehr"].to_numpy()
    frailty = stays["frailty"].to_numpy()
    parts = []
    for itemid, (every, share, uom, draw) in _CHART.items():
        charted = rng.random(len(stays)) < share
        owner, offset = _schedule(rng, horizon[charted], every)
        idx = np.flatnonzero(charted)[owner]
        drift = rng.normal(0, 0.35, idx.size)
        values = np.round(draw(z[idx] + drift, frailty[idx], rng), _DECIMALS.get(uom, 2))
        parts.append(_chart_frame(stays, idx, offset, itemid, values, uom))
    owner, offset = _schedule(rng, horizon, 4)
    refill = np.where(z[owner] + rng.normal(0, 0.7, owner.size) > 1.2,
                      "Abnormal >3 Seconds", "Normal <3 Seconds")
    cap = _chart_frame(stays, owner, offset, _CAPILLARY, np.full(owner.size, np.nan), "")
    cap["value"] = refill
    events = pd.concat(parts + [cap], ignore_index=True)
    return _chart_quirks(rng, events)


def _chart_frame(stays: pd.DataFrame, idx: np.ndarray, offset: np.ndarray, itemid: int,
                 values: np.ndarray, uom: str) -> pd.DataFrame:
    charttime = (stays["intime"].to_numpy()[idx] + pd.to_timedelta(offset, unit="h")).floor("min")
    return pd.DataFrame({
        "subject_id": stays["subject_id"].to_numpy()[idx],
        "hadm_id": stays["hadm_id"].to_numpy()[idx],
        "stay_id": stays["stay_id"].to_numpy()[idx],
        "caregiver_id": pd.array(np.random.default_rng(itemid).integers(10000, 99999, idx.size),
                                 dtype="Int64"),
        "charttime": charttime,
        "storetime": charttime + pd.Timedelta(minutes=3),
        "itemid": itemid,
        "value": _as_text(values, nan=""),
        "valuenum": values,
        "valueuom": uom,
        "warning": pd.array(np.zeros(idx.size, dtype=int), dtype="Int64"),
    })


def _as_text(values: np.ndarray, nan: str = "nan") -> np.ndarray:
    """Each value as ``format(v, "g")`` writes it (``nan`` for NaN): a list comprehension over
    Python floats, ~5x faster than ``Series.map`` with the same strings."""
    return np.array([nan if v != v else format(v, "g") for v in values.tolist()], dtype=object)


def _chart_quirks(rng: np.random.Generator, events: pd.DataFrame) -> pd.DataFrame:
    """Implausible entries and duplicated rows, as seen in real chartevents."""
    item = events["itemid"].to_numpy()
    bad = rng.random(len(events)) < 0.002
    events.loc[bad & (item == 220045), ["value", "valuenum"]] = ["0", 0.0]
    events.loc[bad & (item == 220052), ["value", "valuenum"]] = ["801", 801.0]
    events.loc[bad & (item == 220181), ["value", "valuenum"]] = ["-23", -23.0]
    events.loc[bad & (item == 223762), ["value", "valuenum"]] = ["99", 99.0]
    dup = events.sample(frac=0.01, random_state=int(rng.integers(1 << 31)))
    return pd.concat([events, dup], ignore_index=True).sort_values(
        ["subject_id", "charttime"], kind="stable").reset_index(drop=True)


def lab_events(rng: np.random.Generator, admissions: pd.DataFrame, arm: str = MCAR
               ) -> pd.DataFrame:
    """Labevents every ~12 h of each admission (first 4 days), plus outpatient rows; in the
    ``hospitals`` arm each unit's laboratory has its own assay offsets (no extra draws)."""
    adm = admissions.reset_index(drop=True)
    hours = ((adm["dischtime"] - adm["admittime"]).dt.total_seconds() / 3600).to_numpy()
    owner, offset = _schedule(rng, np.minimum(hours, 96), 12)
    z = adm["z_ehr"].fillna(-0.5).to_numpy()[owner] + rng.normal(0, 0.3, owner.size)
    f = adm["frailty"].to_numpy()[owner]
    chart = (adm["admittime"].to_numpy()[owner] + pd.to_timedelta(offset, unit="h")).floor("min")
    delay = np.where(rng.random(owner.size) < 0.05, rng.uniform(30, 70, owner.size),
                     rng.uniform(0.3, 3, owner.size))
    parts = []
    for itemid, (uom, draw) in {**_LABS, **dict.fromkeys(_TEXT_LABS, ("", None))}.items():
        take = rng.random(owner.size) < (0.9 if draw is not None else 0.1)
        vals = draw(z[take], f[take], rng) if draw is not None else np.full(take.sum(), np.nan)
        if draw is not None and arm != MCAR:
            units = adm["first_careunit"].to_numpy()[owner][take]
            for unit in STYLES:
                at = units == unit
                vals[at] = lab_assay(unit, itemid, vals[at])
        vals = vals.round(2) if draw is not None else vals
        text = (_as_text(vals) if draw is not None
                else rng.choice(["NEG", "MOD", "___"], take.sum()))
        parts.append(pd.DataFrame({
            "subject_id": adm["subject_id"].to_numpy()[owner][take],
            "hadm_id": pd.array(adm["hadm_id"].to_numpy()[owner][take], dtype="Int64"),
            "specimen_id": owner[take] * 7 + 1_000_000, "itemid": itemid,
            "charttime": chart[take],
            "storetime": (chart[take] + pd.to_timedelta(delay[take], unit="h")).floor("min"),
            "value": text, "valuenum": vals, "valueuom": uom,
        }))
    labs = pd.concat(parts, ignore_index=True)
    labs.loc[labs["itemid"] == 51301, "valueuom"] = np.where(
        rng.random((labs["itemid"] == 51301).sum()) < 0.1, "#/uL", "K/uL")
    outpatient = labs.sample(frac=0.03, random_state=int(rng.integers(1 << 31))).copy()
    outpatient["hadm_id"] = pd.NA
    outpatient["charttime"] -= pd.Timedelta(days=200)
    outpatient["storetime"] -= pd.Timedelta(days=200)
    empty = labs.sample(frac=0.005, random_state=int(rng.integers(1 << 31))).copy()
    empty[["value", "valuenum", "valueuom"]] = [None, np.nan, None]
    labs = pd.concat([labs, outpatient, empty], ignore_index=True).sort_values("charttime")
    labs.insert(0, "labevent_id", np.arange(1, len(labs) + 1))
    labs["order_provider_id"] = None
    labs["ref_range_lower"] = np.nan
    labs["ref_range_upper"] = np.nan
    labs["flag"] = None
    labs["priority"] = rng.choice(["ROUTINE", "STAT"], len(labs))
    labs["comments"] = None
    return labs
