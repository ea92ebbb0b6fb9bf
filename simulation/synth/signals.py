"""What each modality writes about a stay's latent state: the rendered signals.

Every signal a report or film shows is drawn here, once per stay, before anything is written, so
the writers render exactly these values and the reachable ceiling (``ceiling.py``) is fitted on
the same quantities:

- a radiology report inside the prediction window (``NOTE_SHARE`` of stays) states
  ``NOTE_FINDINGS`` findings, each graded 0 (negated: "No pleural effusion.") to 5 (critical) from
  its own noisy reading of ``z_note``;
- a chest film inside the window (``CXR_SHARE`` of stays) shows an effusion and patchy opacities
  that grow with ``z_img``, a heart whose width grows with ``frailty``, and a tube when the patient
  is ventilated; the report of a chest film also grades the film (0-3).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simulation.synth.hospitals import CVICU, MCAR, availability, postoperative_findings

NOTE_SHARE = 0.8
CXR_SHARE = 0.35
NOTE_FINDINGS = 4
NOTE_GRADES = 6  # 0 = negated finding ... 5 = critical
_NOTE_NOISE = 0.45
CXR_REPORT_GRADES = 4
FILM_FINDINGS = ("cardio", "effusion", "opacity", "device")


def note_grades(rng: np.random.Generator, z_note: np.ndarray) -> np.ndarray:
    """Grades [n, NOTE_FINDINGS] of the findings a report states, each a noisy reading of z_note."""
    noisy = z_note[:, None] + rng.normal(0, _NOTE_NOISE, (z_note.size, NOTE_FINDINGS))
    return np.clip(np.round(noisy + (NOTE_GRADES - 1) / 2), 0, NOTE_GRADES - 1).astype(int)


def cxr_report_grade(rng: np.random.Generator, z_img: np.ndarray) -> np.ndarray:
    """How a chest-film report grades the film: 0 clear, 1 mild, 2 moderate, 3 severe."""
    noisy = z_img + rng.normal(0, 0.6, z_img.size)
    return np.digitize(noisy, [-0.5, 0.5, 1.3]).astype(int)


def film_findings(rng: np.random.Generator, z_img: np.ndarray, frailty: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """True findings of frontal films (each 0..1; device 0/1), what a radiologist would grade."""
    n = z_img.size
    return {
        "cardio": np.clip(0.5 + 0.3 * frailty + rng.normal(0, 0.15, n), 0.2, 1.0),
        "effusion": np.clip(0.45 + 0.22 * z_img + rng.normal(0, 0.07, n), 0.0, 1.0),
        "opacity": np.clip(0.45 + 0.22 * z_img + rng.normal(0, 0.07, n), 0.0, 1.0),
        "device": (z_img + rng.normal(0, 0.8, n) > 1.0).astype(float),
    }


def draw_signals(rng: np.random.Generator, stays: pd.DataFrame, arm: str = MCAR) -> pd.DataFrame:
    """Availability and rendered signals of every stay, as columns to add to ``stays``: at random
    (``mcar``) or informative, with post-operative films in the CVICU (``hospitals`` arm,
    ``hospitals.py``)."""
    n = len(stays)
    z_note, z_img = stays["z_note"].to_numpy(), stays["z_img"].to_numpy()
    out = pd.DataFrame(index=stays.index)
    if arm == MCAR:
        out["has_report"] = rng.random(n) < NOTE_SHARE
        out["has_film"] = rng.random(n) < CXR_SHARE
    else:
        out["has_report"], out["has_film"] = availability(rng, stays)
    grades = note_grades(rng, z_note)
    for i in range(NOTE_FINDINGS):
        out[f"note_grade_{i}"] = grades[:, i]
    out["cxr_report_grade"] = cxr_report_grade(rng, z_img)
    findings = film_findings(rng, z_img, stays["frailty"].to_numpy())
    if arm != MCAR:
        findings = postoperative_findings(rng, stays, findings)
        postop = (stays["first_careunit"] == CVICU).to_numpy()
        out["cxr_report_grade"] = np.where(postop, np.minimum(out["cxr_report_grade"] + 1,
                                                              CXR_REPORT_GRADES - 1),
                                           out["cxr_report_grade"])
    for name, values in findings.items():
        out[f"film_{name}"] = values
    return out
