"""The ``hospitals-v1`` arm of the synthetic generator: informative availability and hospitals
that differ (bench/README.md, "Arm 2: hospitals", gives the sources of each structure).

The first arm (``mcar``) draws a report for 80% and an in-window film for 35% of stays at random,
and every care unit writes, images and measures the same way. In this arm each care-unit site is a
hospital of its own and:

1. **Availability is informative.** Whether a stay has an in-window report or film depends on its
   state and its unit: sicker patients are imaged more, units differ in ordering habits.
2. **Hospitals render the same state differently** (feature shift across sites, as in FedBN):
   each unit's reports have their own house style (section headings and order, vocabulary), its
   films their own equipment (brightness, contrast, resolution, AP or PA projection, and the AP
   magnification of the heart), its laboratory its own assays (creatinine and glucose offsets).
   None of this changes the latent state or the outcome.
3. **Case mix changes what a finding means.** After cardiac surgery (CVICU) effusions, tubes and
   lines are expected: the film shows them whatever the patient's risk, so the same film carries
   less risk there than in a medical ICU.

Every value is drawn only under this arm, so the ``mcar`` arm's random stream and files are
unchanged. The arm is frozen: a change is a new version (``hospitals-v2``), the old results stay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit

from shared_model.run_config import Arm

MCAR = Arm.MCAR.value
HOSPITALS = Arm.HOSPITALS.value
ARMS = tuple(a.value for a in Arm)

CVICU = "Cardiac Vascular Intensive Care Unit (CVICU)"


@dataclass(frozen=True)
class HouseStyle:
    """How one hospital (care-unit site) writes reports, takes films and runs its labs."""

    report_intercept: float  # ordering habit: log-odds of an in-window report at average state
    film_intercept: float  # ordering habit: log-odds of an in-window film at average state
    headings: tuple[str, str, str, str]  # EXAMINATION, INDICATION, FINDINGS, IMPRESSION
    impression_first: bool
    vocabulary: int  # index into _VOCABULARIES
    brightness: float  # added to every pixel (0-255 scale)
    contrast: float  # pixel values scaled around mid-grey
    resolution: float  # films rendered at this fraction of the size, then scaled back up
    pa_share: float  # share of in-window films taken PA (the rest AP: heart magnified)
    creatinine_offset: float  # mg/dL added by the unit's assay
    glucose_factor: float  # multiplies glucose


# One house style per care unit (population.CAREUNITS order). Ordering habits: CVICU films every
# post-operative patient, neuro units image the chest least; report styles and equipment differ.
STYLES: dict[str, HouseStyle] = {
    "Medical Intensive Care Unit (MICU)": HouseStyle(
        1.2, -0.9, ("EXAMINATION:", "INDICATION:", "FINDINGS:", "IMPRESSION:"), False, 0,
        0.0, 1.0, 1.0, 0.05, 0.0, 1.0),
    "Surgical Intensive Care Unit (SICU)": HouseStyle(
        1.5, -0.6, ("Exam:", "Clinical history:", "Findings:", "Impression:"), True, 1,
        18.0, 0.85, 0.6, 0.10, 0.15, 1.0),
    CVICU: HouseStyle(
        2.0, 1.6, ("PROCEDURE:", "HISTORY:", "REPORT:", "CONCLUSION:"), False, 2,
        -12.0, 1.25, 0.8, 0.0, 0.0, 1.06),
    "Medical/Surgical Intensive Care Unit (MICU/SICU)": HouseStyle(
        1.3, -0.7, ("EXAMINATION:", "INDICATION:", "FINDINGS:", "IMPRESSION:"), True, 0,
        8.0, 0.9, 1.0, 0.30, -0.1, 1.0),
    "Trauma SICU (TSICU)": HouseStyle(
        1.8, -0.2, ("STUDY:", "REASON:", "OBSERVATIONS:", "SUMMARY:"), False, 1,
        -20.0, 1.15, 0.5, 0.0, 0.2, 0.95),
    "Coronary Care Unit (CCU)": HouseStyle(
        1.0, -0.5, ("Exam:", "Indication:", "Findings:", "Impression:"), False, 2,
        5.0, 1.1, 0.7, 0.40, 0.0, 1.04),
    "Neuro Surgical Intensive Care Unit (Neuro SICU)": HouseStyle(
        1.6, -1.6, ("EXAMINATION:", "INDICATION:", "FINDINGS:", "IMPRESSION:"), True, 1,
        -5.0, 0.95, 0.9, 0.20, 0.1, 1.0),
}

# Vocabularies: the same finding in another house's words (replacements applied in order).
_VOCABULARIES: tuple[tuple[tuple[str, str], ...], ...] = (
    (),
    (("pleural effusion", "pleural fluid collection"), ("consolidation", "airspace disease"),
     ("No ", "Negative for "), ("pneumothorax", "PTX"), ("Moderate", "Intermediate")),
    (("effusions", "fluid collections"), ("effusion", "fluid"), ("opacities", "densities"),
     ("No ", "Absent: "), ("Large", "Marked"), ("Small", "Slight")),
)

# Informative availability: log-odds slopes on the latent state (sicker stays get more studies).
REPORT_SLOPES = {"z_note": 0.8, "z_ehr": 0.5}
FILM_SLOPES = {"z_img": 1.2, "z_ehr": 0.8}
# After cardiac surgery: effusion and tubes/lines on the film whatever the risk.
POSTOP_EFFUSION = 0.18
POSTOP_DEVICE_SHARE = 0.8
AP_HEART_MAGNIFICATION = 1.15  # a portable AP film magnifies the cardiac silhouette


def style_of(unit: str) -> HouseStyle:
    return STYLES[unit]


def availability(rng: np.random.Generator, stays: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(has_report, has_film): informative, from each stay's state and its unit's habits (two
    uniform draws per stay, as the ``mcar`` arm makes)."""
    n = len(stays)
    units = stays["first_careunit"]
    report_logit = units.map(lambda u: STYLES[u].report_intercept).to_numpy(float) + sum(
        w * stays[k].to_numpy() for k, w in REPORT_SLOPES.items())
    film_logit = units.map(lambda u: STYLES[u].film_intercept).to_numpy(float) + sum(
        w * stays[k].to_numpy() for k, w in FILM_SLOPES.items())
    return rng.random(n) < expit(report_logit), rng.random(n) < expit(film_logit)


def postoperative_findings(rng: np.random.Generator, stays: pd.DataFrame,
                           findings: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CVICU films show an effusion and tubes/lines expected after surgery, not from risk."""
    postop = (stays["first_careunit"] == CVICU).to_numpy()
    device_drawn = rng.random(len(stays)) < POSTOP_DEVICE_SHARE
    out = dict(findings)
    out["effusion"] = np.where(postop, np.clip(findings["effusion"] + POSTOP_EFFUSION, 0, 1),
                               findings["effusion"])
    out["device"] = np.where(postop & device_drawn, 1.0, findings["device"])
    return out


def styled_report(style: HouseStyle, exam: str, findings: str, impression: str) -> str:
    """A report in the house style: its headings, section order and vocabulary."""
    for old, new in _VOCABULARIES[style.vocabulary]:
        findings, impression = findings.replace(old, new), impression.replace(old, new)
    exam_h, indication_h, findings_h, impression_h = style.headings
    head = f"{exam_h}  {exam}\n\n{indication_h}  ___ with ___, evaluate.\n\n"
    body = [f"{findings_h}  {findings}", f"{impression_h}  {impression}"]
    return head + "\n\n".join(reversed(body) if style.impression_first else body)


def styled_film(style: HouseStyle, pixels: np.ndarray) -> np.ndarray:
    """A rendered film through the unit's equipment: brightness, contrast (resolution and
    projection are applied while drawing)."""
    out = (pixels.astype(np.float64) - 128.0) * style.contrast + 128.0 + style.brightness
    return np.clip(out, 0, 255)


def lab_assay(unit: str, itemid: int, values: np.ndarray) -> np.ndarray:
    """The unit's laboratory: creatinine offset (e.g. Jaffe vs enzymatic), glucose calibration."""
    style = STYLES[unit]
    if itemid == 50912:  # creatinine
        return np.maximum(0.2, values + style.creatinine_offset)
    if itemid == 50931:  # glucose
        return values * style.glucose_factor
    return values
