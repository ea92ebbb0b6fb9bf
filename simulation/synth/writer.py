"""Write a synthetic population as MIMIC-format releases plus ``oracle.csv``.

Layout under ``out``: ``mimic-iv/{hosp,icu}/*.csv.gz``, ``mimic-iv-note/note/*.csv.gz``,
``mimic-cxr-jpg/*.csv.gz`` + ``files/``, and ``oracle.csv`` (for evaluation only; no training code
reads it): per task the true outcome probability (``mortality``, ``los``, ``readmission``) and the
reachable ceiling, the best probability given what the written data shows (``<task>_reachable``,
``<task>_reachable_ehr``; see ``ceiling.py``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from client.mimic.tables import TABLES
from simulation.synth.ceiling import reachable_probabilities
from simulation.synth.events import D_LABITEMS, chart_events, lab_events
from simulation.synth.hospitals import ARMS, MCAR
from simulation.synth.images import plan_studies, write_studies
from simulation.synth.notes import discharge_notes, radiology_notes
from simulation.synth.population import Population, build_population
from simulation.synth.tables import admissions_table, d_items_table, transfers_table

log = logging.getLogger(__name__)
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class SynthSummary:
    """What was written, for the CLI and for cache validation."""

    out: str
    patients: int
    seed: int
    id_block: int
    arm: str
    admissions: int
    icu_stays: int
    chart_rows: int
    seconds: float


def _write(frame: pd.DataFrame, path: Path, columns: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = frame[list(columns)].copy()
    for col in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[col]):
            frame[col] = frame[col].dt.strftime(_DATE_FORMAT)
    frame.to_csv(path, index=False, compression={"method": "gzip", "compresslevel": 1, "mtime": 0})


def _write_table(frame: pd.DataFrame, root: Path, name: str) -> None:
    spec = TABLES[name]
    _write(frame, root / f"{spec.stem}.csv.gz", spec.columns)


def _oracle(pop: Population, arm: str) -> pd.DataFrame:
    st = pop.stays
    truth = pd.DataFrame({"stay_id": st.stay_id, "subject_id": st.subject_id,
                          "hadm_id": st.hadm_id, "mortality": st.p_mortality, "los": st.p_los,
                          "readmission": st.p_readmission})
    return pd.concat([truth, reachable_probabilities(st, arm)], axis=1)


def generate_synthetic_mimic(out: Path, patients: int = 2000, seed: int = 0, id_block: int = 0,
                             arm: str = MCAR) -> SynthSummary:
    """Generate the three releases under ``out`` (replacing any earlier synthetic set there).

    ``id_block`` picks the population's identifier range: populations written with different
    blocks never share a patient, admission, stay or study, and (for blocks other than 0) draw
    from their own random stream even with the same ``seed``. ``arm``: ``mcar`` (modalities
    missing at random, one way of writing) or ``hospitals-v1`` (``hospitals.py``).
    """
    if arm not in ARMS:
        raise ValueError(f"unknown generator arm {arm!r} (one of {', '.join(ARMS)})")
    started = time.perf_counter()
    rng = np.random.default_rng(seed if id_block == 0 else [seed, id_block])
    pop = build_population(rng, patients, id_block, arm)
    out = Path(out)
    for sub in ("mimic-iv", "mimic-iv-note", "mimic-cxr-jpg"):
        shutil.rmtree(out / sub, ignore_errors=True)
    iv, note, cxr = out / "mimic-iv", out / "mimic-iv-note", out / "mimic-cxr-jpg"

    _write_table(pop.patients.assign(dod=_dod(pop)), iv, "patients")
    _write_table(admissions_table(rng, pop.admissions), iv, "admissions")
    _write_table(transfers_table(rng, pop.admissions, pop.stays), iv, "transfers")
    _write_table(lab_events(rng, pop.admissions, arm), iv, "labevents")
    _write_table(D_LABITEMS, iv, "d_labitems")
    stays = pop.stays.assign(last_careunit=pop.stays.first_careunit, los=pop.stays.icu_los)
    _write_table(stays, iv, "icustays")
    charts = chart_events(rng, pop.stays)
    _write_table(charts, iv, "chartevents")
    _write_table(d_items_table(), iv, "d_items")

    plan = plan_studies(rng, pop.stays, id_block, arm)
    tables = write_studies(rng, plan, cxr, arm)
    for name, frame in tables.items():
        _write(frame, cxr / f"{TABLES[name].stem}.csv.gz", TABLES[name].columns)
    offset = plan.time - plan.stay_id.map(pop.stays.set_index("stay_id").intime)
    in_window = plan[(plan.view == "AP") & (offset >= pd.Timedelta(0))
                     & (offset <= pd.Timedelta(hours=48))]
    cxr_times = pop.stays.stay_id.map(in_window.groupby("stay_id").time.max())
    _write_table(radiology_notes(rng, pop.stays, cxr_times, arm), note, "radiology")
    _write_table(discharge_notes(pop.admissions), note, "discharge")

    _oracle(pop, arm).to_csv(out / "oracle.csv", index=False)
    summary = SynthSummary(str(out), patients, seed, id_block, arm, len(pop.admissions),
                           len(pop.stays),
                           len(charts), round(time.perf_counter() - started, 2))
    (out / "synth.json").write_text(json.dumps(asdict(summary), indent=2))
    log.info("synthetic MIMIC written to %s in %.1f s", out, summary.seconds)
    return summary


def _dod(pop: Population) -> pd.Series:
    death = pop.admissions[pop.admissions.died].groupby("subject_id").deathtime.min()
    return pop.patients.subject_id.map(death).dt.strftime("%Y-%m-%d")
