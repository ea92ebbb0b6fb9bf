"""Radiology reports and discharge summaries in MIMIC-IV-Note format.

Radiology wording follows ``z_note`` (and, for chest films, ``z_img``); reports written after the
prediction window and discharge summaries mention the outcome, so any leak shows up in AUROC.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_EXAMS = ("CT HEAD W/O CONTRAST", "CT ABD & PELVIS WITH CONTRAST", "CTA CHEST",
          "US ABD LIMIT, SINGLE ORGAN", "MR HEAD W & W/O CONTRAST")
_MILD = ("No acute intracranial process.", "No acute abnormality in the abdomen or pelvis.",
         "Unremarkable study.", "Stable postoperative appearance.")
_MODERATE = ("Small bilateral pleural effusions with adjacent atelectasis.",
             "Mild bowel wall thickening, possibly inflammatory.",
             "Interval increase in moderate ascites.", "Patchy ground-glass opacities.")
_SEVERE = ("Large territory acute infarct with mass effect.",
           "Free intraperitoneal air concerning for perforation.",
           "Extensive bilateral pulmonary emboli with right heart strain.",
           "Diffuse cerebral edema with effacement of the basal cisterns.")
_CHRONIC = ("Chronic small vessel ischemic disease.", "Cardiomegaly, unchanged.",
            "Emphysematous changes.", "Cirrhotic liver morphology.")
_CXR_FINDINGS = {
    "clear": "Lungs are clear. No pleural effusion or pneumothorax.",
    "mild": "Mild pulmonary vascular congestion. Small left pleural effusion.",
    "severe": "Worsening bilateral airspace opacities and moderate bilateral effusions, "
              "concerning for ARDS or multifocal pneumonia.",
}


def radiology_text(rng: np.random.Generator, z_note: float, frailty: float, exam: str,
                   z_img: float | None = None) -> str:
    """A report with EXAMINATION / INDICATION / FINDINGS / IMPRESSION sections.

    Two findings and the impression come from the severity level of ``z_note``; the wording, not
    the template, carries the signal.
    """
    level = z_note + rng.normal(0, 0.3)
    pool = _SEVERE if level > 0.8 else _MODERATE if level > -0.4 else _MILD
    findings = [str(x) for x in rng.choice(pool, 2, replace=False)]
    if frailty + rng.normal(0, 0.5) > 0.8:
        findings.append(str(rng.choice(_CHRONIC)))
    if z_img is not None:
        img = z_img + rng.normal(0, 0.6)
        findings.append(_CXR_FINDINGS["severe" if img > 1.0 else "mild" if img > 0 else "clear"])
    impression = {id(_SEVERE): "Critical findings, discussed with the ICU team.",
                  id(_MODERATE): "Findings as above, clinical correlation advised.",
                  id(_MILD): "No acute process."}[id(pool)]
    return (f"EXAMINATION:  {exam}\n\nINDICATION:  ___ with ___, evaluate.\n\n"
            f"FINDINGS:  {' '.join(findings)}\n\nIMPRESSION:  {findings[0]} {impression}")


def radiology_notes(rng: np.random.Generator, stays: pd.DataFrame, cxr_times: pd.Series
                    ) -> pd.DataFrame:
    """About 80% of stays get a report inside the window; some get later ones (after 48 h)."""
    rows = []
    for i, st in enumerate(stays.itertuples()):
        times = []
        if rng.random() < 0.8:
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
                text = radiology_text(rng, st.z_note, st.frailty, exam,
                                      st.z_img if has_film else None)
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
