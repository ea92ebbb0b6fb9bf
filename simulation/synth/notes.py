"""Radiology reports and discharge summaries in MIMIC-IV-Note format.

Radiology wording follows the graded findings drawn in ``signals.py`` (from ``z_note`` and, for
chest films, ``z_img``); reports written after the
prediction window and discharge summaries mention the outcome, so any leak shows up in AUROC.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulation.synth.hospitals import MCAR, HouseStyle, style_of, styled_report
from simulation.synth.signals import NOTE_FINDINGS

_EXAMS = ("CT HEAD W/O CONTRAST", "CT ABD & PELVIS WITH CONTRAST", "CTA CHEST",
          "US ABD LIMIT, SINGLE ORGAN", "MR HEAD W & W/O CONTRAST")
# Per finding, its wording at grades 0 (negated) .. 5 (critical), as radiologists write them.
_FINDINGS: tuple[tuple[str, ...], ...] = (
    ("No pleural effusion.", "Trace pleural fluid.", "Small pleural effusion.",
     "Moderate pleural effusions.", "Large bilateral pleural effusions.",
     "Massive pleural effusion with mediastinal shift."),
    ("No pneumothorax.", "Tiny apical pneumothorax, unchanged.", "Small pneumothorax.",
     "Moderate pneumothorax.", "Large pneumothorax.", "Tension pneumothorax."),
    ("No focal consolidation.", "Minimal bibasilar atelectasis.", "Mild patchy opacities.",
     "Moderate multifocal consolidation.", "Extensive bilateral consolidation.",
     "Diffuse airspace disease consistent with ARDS."),
    ("No free intraperitoneal air.", "Minimal free fluid in the pelvis.",
     "Mild bowel wall thickening.", "Moderate ascites.",
     "Pneumatosis with portal venous gas.", "Free intraperitoneal air concerning for perforation."),
    ("No acute intracranial hemorrhage.", "Minimal chronic microvascular change.",
     "Small focus of hypodensity.", "Moderate subdural collection.",
     "Large territory acute infarct with mass effect.",
     "Diffuse cerebral edema with effacement of the basal cisterns."),
    ("No pulmonary embolism.", "Minimal subsegmental atelectasis.",
     "Small subsegmental filling defect.", "Segmental pulmonary emboli.",
     "Extensive bilateral pulmonary emboli.",
     "Saddle embolus with right heart strain."),
)
_IMPRESSIONS = ("No acute process.", "No significant acute abnormality.",
                "Mild findings, clinical correlation advised.",
                "Moderate findings as above, discussed with the team.",
                "Severe findings, discussed with the ICU team.",
                "Critical findings, communicated to the ICU team by telephone.")
_CHRONIC = ("Chronic small vessel ischemic disease.", "Cardiomegaly, unchanged.",
            "Emphysematous changes.", "Cirrhotic liver morphology.")
_CXR_FINDINGS = (
    "Lungs are clear. No pleural effusion or pneumothorax.",
    "Mild pulmonary vascular congestion. Small left pleural effusion.",
    "Moderate bilateral effusions and patchy airspace opacities.",
    "Worsening bilateral airspace opacities and large bilateral effusions, "
    "concerning for ARDS or multifocal pneumonia.",
)


def radiology_text(rng: np.random.Generator, grades: np.ndarray, frailty: float, exam: str,
                   cxr_grade: int | None = None, style: HouseStyle | None = None) -> str:
    """A report with EXAMINATION / INDICATION / FINDINGS / IMPRESSION sections.

    Each finding is written at its grade (``signals.note_grades``) and the impression at their
    rounded mean; the wording, not the template, carries the signal. A chest film's report also
    describes the film at ``cxr_grade``. ``style``: the hospital's house style (``hospitals``
    arm), which changes headings, section order and words, not what the report states.
    """
    topics = rng.choice(len(_FINDINGS), len(grades), replace=False)
    findings = [_FINDINGS[t][g] for t, g in zip(topics, grades, strict=True)]
    if frailty + rng.normal(0, 0.5) > 0.8:
        findings.append(str(rng.choice(_CHRONIC)))
    if cxr_grade is not None:
        findings.append(_CXR_FINDINGS[cxr_grade])
    worst = findings[int(np.argmax(grades))]
    impression = _IMPRESSIONS[int(np.round(np.mean(grades)))]
    if style is not None:
        return styled_report(style, exam, " ".join(findings), f"{worst} {impression}")
    return (f"EXAMINATION:  {exam}\n\nINDICATION:  ___ with ___, evaluate.\n\n"
            f"FINDINGS:  {' '.join(findings)}\n\nIMPRESSION:  {worst} {impression}")


def radiology_notes(rng: np.random.Generator, stays: pd.DataFrame, cxr_times: pd.Series,
                    arm: str = MCAR) -> pd.DataFrame:
    """Stays with ``has_report`` get a report inside the window; some get later ones (after 48 h);
    in the ``hospitals`` arm in their unit's house style."""
    rows = []
    grade_columns = [f"note_grade_{i}" for i in range(NOTE_FINDINGS)]
    all_grades = stays[grade_columns].to_numpy()
    for i, st in enumerate(stays.itertuples()):
        times = []
        if st.has_report:
            times.append(("in", st.intime + pd.Timedelta(hours=float(rng.uniform(-20, 40)))))
        if st.icu_los > 2.5 and rng.random() < 0.5:
            times.append(("late", st.intime + pd.Timedelta(hours=float(rng.uniform(60, 90)))))
        for when, t in times:
            if when == "late" and st.died:
                text = ("EXAMINATION:  CHEST (PORTABLE AP)\n\nFINDINGS: \n\nDiffuse worsening; "
                        "patient transitioned to comfort measures.\n\nIMPRESSION: \n\nGrave.")
            else:
                has_film = pd.notna(cxr_times.iloc[i])
                exam = "CHEST (PORTABLE AP)" if has_film else str(rng.choice(_EXAMS))
                text = radiology_text(rng, all_grades[i], st.frailty, exam,
                                      int(st.cxr_report_grade) if has_film else None,
                                      None if arm == MCAR else style_of(st.first_careunit))
            store = t + pd.Timedelta(hours=float(rng.uniform(0.3, 6)))
            hadm = pd.NA if rng.random() < 0.1 else st.hadm_id
            rows.append((st.subject_id, hadm, "RR", t.floor("min"), store.floor("min"), text))
    return _with_note_ids(pd.DataFrame(rows, columns=["subject_id", "hadm_id", "note_type",
                                                      "charttime", "storetime", "text"]))


def discharge_notes(admissions: pd.DataFrame) -> pd.DataFrame:
    """One discharge summary per admission, charted at discharge; it states the outcome."""
    adm = admissions
    outcome = np.where(adm["died"], "Patient expired.", "Discharged home in stable condition.")
    text = [f"Name:  ___  Unit No:  ___\n\nAdmission Date:  ___  Discharge Date:   ___\n\n"
            f"Service: MEDICINE\n\nBrief Hospital Course:\n___ admitted for ___.\n\n"
            f"Discharge Disposition:\n{o}" for o in outcome]
    frame = pd.DataFrame({"subject_id": adm["subject_id"], "hadm_id": adm["hadm_id"],
                          "note_type": "DS", "charttime": adm["dischtime"].dt.floor("min"),
                          "storetime": adm["dischtime"].dt.floor("min") + pd.Timedelta(hours=2),
                          "text": text})
    return _with_note_ids(frame)


def _with_note_ids(notes: pd.DataFrame) -> pd.DataFrame:
    notes = notes.sort_values(["subject_id", "charttime"]).reset_index(drop=True)
    notes["note_seq"] = notes.groupby("subject_id").cumcount() + 1
    notes["note_id"] = (notes["subject_id"].astype(str) + "-" + notes["note_type"] + "-"
                        + notes["note_seq"].astype(str))
    return notes[["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                  "storetime", "text"]]
