"""Chest X-rays in MIMIC-CXR-JPG layout: JPEGs plus metadata, split and CheXpert tables.

A drawn frontal film renders the findings of ``signals.film_findings``: body, two lung fields, a
heart whose width is ``cardio`` (cardiomegaly), a basal effusion whose height is ``effusion``,
patchy opacities whose number and density follow ``opacity``, and a tube when ``device``. The
in-window film of a stay shows that stay's drawn findings; other films draw their own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from shared_model.progress_bars import Progress
from simulation.synth.hospitals import (
    AP_HEART_MAGNIFICATION,
    MCAR,
    HouseStyle,
    style_of,
    styled_film,
)
from simulation.synth.population import draw_ids
from simulation.synth.signals import FILM_FINDINGS, film_findings

log = logging.getLogger(__name__)

IMAGE_SIZE = 256
CHEXPERT = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
            "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion",
            "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices")


def draw_film(rng: np.random.Generator, findings: dict[str, float], size: int = IMAGE_SIZE,
              style: HouseStyle | None = None, view: str = "AP") -> Image.Image:
    """Render one frontal chest film showing ``findings`` (see ``signals.film_findings``);
    ``style`` (``hospitals`` arm): the unit's equipment (drawn at its resolution, then scaled
    up; brightness, contrast) and projection (an AP film magnifies the heart)."""
    full = size
    if style is not None:
        size = max(32, int(round(full * style.resolution)))
    img = Image.new("L", (size, size), 20)
    d = ImageDraw.Draw(img)
    s = size / 256
    d.rounded_rectangle([30 * s, 20 * s, 226 * s, 250 * s], radius=40 * s, fill=150)
    for x0 in (45, 135):
        d.ellipse([x0 * s, 35 * s, (x0 + 76) * s, 215 * s], fill=55)
    magnify = AP_HEART_MAGNIFICATION if style is not None and view == "AP" else 1.0
    w = (35 + 40 * findings["cardio"]) * s * magnify
    d.ellipse([128 * s - w * 0.6, 120 * s, 128 * s + w, 205 * s], fill=185)
    effusion = findings["effusion"]
    if effusion > 0.05:
        top = (215 - 110 * effusion) * s
        d.rectangle([45 * s, top, 211 * s, 215 * s], fill=int(110 + 80 * effusion))
    opacity = findings["opacity"]
    for _ in range(int(round(opacity * 16))):
        cx, cy, r = rng.uniform(55, 200) * s, rng.uniform(50, 170) * s, rng.uniform(8, 18) * s
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=int(100 + 90 * opacity))
    if findings["device"]:
        d.line([128 * s, 0, 128 * s, 130 * s], fill=240, width=max(1, int(3 * s)))
    img = img.filter(ImageFilter.GaussianBlur(2 * s))
    if style is not None and size != full:
        img = img.resize((full, full), Image.Resampling.BILINEAR)
    noise = rng.normal(0, 8, (full, full))
    arr = np.asarray(img, dtype=np.float64) + noise
    if style is not None:
        arr = styled_film(style, arr)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _dicom_id(rng: np.random.Generator) -> str:
    """Five dash-joined 8-hex-digit groups, like MIMIC-CXR's dicom_id."""
    return "-".join(f"{int(x):08x}" for x in rng.integers(0, 1 << 32, 5))


def _study_row(rng: np.random.Generator, st, when: pd.Timestamp, view: str,
               findings: dict[str, float]) -> dict:
    return {"dicom_id": _dicom_id(rng), "subject_id": st.subject_id, "stay_id": st.stay_id,
            "unit": st.first_careunit, "view": view, "time": when,
            **{f"film_{k}": v for k, v in findings.items()}}


def _stay_findings(st) -> dict[str, float]:
    return {name: float(getattr(st, f"film_{name}")) for name in FILM_FINDINGS}


def _fresh_findings(rng: np.random.Generator, st) -> dict[str, float]:
    drawn = film_findings(rng, np.array([st.z_img]), np.array([st.frailty]))
    return {name: float(values[0]) for name, values in drawn.items()}


def plan_studies(rng: np.random.Generator, stays: pd.DataFrame, id_block: int = 0,
                 arm: str = MCAR) -> pd.DataFrame:
    """Which films exist: stays with ``has_film`` get one in the window (showing the stay's drawn
    findings; in the ``hospitals`` arm taken PA at the unit's share, else AP), plus films outside
    it and lateral views."""
    rows = []
    for st in stays.itertuples():
        if st.has_film:
            hours = min(47.5, st.icu_los * 24)
            when = st.intime + pd.Timedelta(hours=float(rng.uniform(0.2, hours)))
            view = "AP" if arm == MCAR or rng.random() >= style_of(st.first_careunit).pa_share \
                else "PA"
            rows.append(_study_row(rng, st, when, view, _stay_findings(st)))
        if rng.random() < 0.15:
            rows.append(_study_row(rng, st, st.intime - pd.Timedelta(
                hours=float(rng.uniform(2, 30))), str(rng.choice(["PA", "AP"])),
                _fresh_findings(rng, st)))
        if st.icu_los > 2.2 and rng.random() < 0.2:
            rows.append(_study_row(rng, st, st.intime + pd.Timedelta(
                hours=float(rng.uniform(49, 60))), "AP", _fresh_findings(rng, st)))
    plan = pd.DataFrame(rows)
    plan["study_id"] = draw_ids(rng, 50_000_000, id_block, len(plan))
    lateral = plan.sample(frac=0.3, random_state=int(rng.integers(1 << 31))).copy()
    lateral["view"] = "LL"
    lateral["dicom_id"] = [_dicom_id(rng) for _ in range(len(lateral))]
    return pd.concat([plan, lateral], ignore_index=True)


def write_studies(rng: np.random.Generator, plan: pd.DataFrame, root: Path, arm: str = MCAR
                  ) -> dict[str, pd.DataFrame]:
    """Write the JPEGs (``hospitals`` arm: through each unit's equipment) and return the
    metadata, split and chexpert tables."""
    meta, findings = [], {}
    shown = Progress(len(plan), "synthetic MIMIC: writing", "films", log)
    for st in plan.itertuples():
        found = {name: float(getattr(st, f"film_{name}")) for name in FILM_FINDINGS}
        img = draw_film(rng, found, style=None if arm == MCAR else style_of(st.unit), view=st.view)
        sid = str(st.subject_id)
        path = root / "files" / f"p{sid[:2]}" / f"p{sid}" / f"s{st.study_id}" / f"{st.dicom_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=90)
        if st.view != "LL":
            findings[(st.subject_id, st.study_id)] = found
        meta.append({
            "dicom_id": st.dicom_id, "subject_id": st.subject_id, "study_id": st.study_id,
            "PerformedProcedureStepDescription": "CHEST (PORTABLE AP)" if st.view == "AP"
            else "CHEST (PA AND LAT)", "ViewPosition": st.view, "Rows": IMAGE_SIZE,
            "Columns": IMAGE_SIZE, "StudyDate": int(st.time.strftime("%Y%m%d")),
            "StudyTime": float(st.time.strftime("%H%M%S")) + st.time.microsecond / 1e6,
            "ProcedureCodeSequence_CodeMeaning": "CHEST (PORTABLE AP)",
            "ViewCodeSequence_CodeMeaning": {"AP": "antero-posterior", "PA": "postero-anterior",
                                             "LL": "left lateral"}[st.view],
            "PatientOrientationCodeSequence_CodeMeaning": "Erect"})
        shown.update(1)
    shown.close()
    metadata = pd.DataFrame(meta)
    split = metadata[["dicom_id", "study_id", "subject_id"]].copy()
    split["split"] = rng.choice(["train", "validate", "test"], len(split), p=[0.98, 0.01, 0.01])
    return {"cxr_metadata": metadata, "cxr_split": split, "cxr_chexpert": _chexpert(findings)}


def _chexpert(findings: dict[tuple[int, int], dict[str, float]]) -> pd.DataFrame:
    rows = []
    for (subject, study), f in findings.items():
        row = dict.fromkeys(CHEXPERT, np.nan)
        row.update({"subject_id": subject, "study_id": study})
        row["Cardiomegaly"] = 1.0 if f["cardio"] > 0.75 else (-1.0 if f["cardio"] > 0.65 else np.nan)
        row["Pleural Effusion"] = (1.0 if f["effusion"] > 0.6 else 0.0 if f["effusion"] < 0.35
                                   else -1.0)
        row["Lung Opacity"] = 1.0 if f["opacity"] > 0.6 else np.nan
        row["Support Devices"] = 1.0 if f["device"] else np.nan
        if not any(row[k] == 1.0 for k in CHEXPERT):
            row["No Finding"] = 1.0
        rows.append(row)
    return pd.DataFrame(rows, columns=["subject_id", "study_id", *CHEXPERT])
