"""The synthetic MIMIC set has the real layouts, quirks and signal, and is deterministic."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from client.mimic.tables import TABLES
from simulation.synth import generate_synthetic_mimic

DEMO_TABLES = ["patients", "admissions", "transfers", "labevents", "d_labitems", "icustays",
               "chartevents", "d_items"]


def _header(path: Path) -> list[str]:
    with gzip.open(path, "rt") as fh:
        return fh.readline().strip().split(",")


@pytest.mark.parametrize("name", DEMO_TABLES)
def test_headers_equal_the_real_demo(synth_root: Path, demo_root: Path, name: str) -> None:
    stem = TABLES[name].stem
    assert _header(synth_root / "mimic-iv" / f"{stem}.csv.gz") == _header(demo_root / f"{stem}.csv.gz")


@pytest.mark.parametrize("name", ["radiology", "discharge", "cxr_metadata", "cxr_split",
                                  "cxr_chexpert"])
def test_note_and_cxr_headers(synth_root: Path, name: str) -> None:
    release = "mimic-iv-note" if name in ("radiology", "discharge") else "mimic-cxr-jpg"
    path = synth_root / release / f"{TABLES[name].stem}.csv.gz"
    assert tuple(_header(path)) == TABLES[name].columns


def test_images_follow_mimic_cxr_layout(synth_root: Path) -> None:
    meta = pd.read_csv(synth_root / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-metadata.csv.gz")
    row = meta.iloc[0]
    sid = str(row.subject_id)
    path = (synth_root / "mimic-cxr-jpg" / "files" / f"p{sid[:2]}" / f"p{sid}"
            / f"s{row.study_id}" / f"{row.dicom_id}.jpg")
    assert path.is_file()
    assert set(meta.ViewPosition) >= {"AP", "LL"}


def test_quirks_are_present(synth_root: Path) -> None:
    iv = synth_root / "mimic-iv"
    labs = pd.read_csv(iv / "hosp" / "labevents.csv.gz", dtype={"hadm_id": "Int64"})
    assert labs.hadm_id.isna().any()
    assert (labs.valuenum.isna() & labs.value.isin(["NEG", "___"])).any()
    assert labs.groupby("itemid").valueuom.nunique().max() > 1
    stays = pd.read_csv(iv / "icu" / "icustays.csv.gz")
    assert (stays.los < 2).mean() > 0.2
    adm = pd.read_csv(iv / "hosp" / "admissions.csv.gz")
    assert (adm.deathtime.notna() == (adm.hospital_expire_flag == 1)).all()
    assert adm.hospital_expire_flag.sum() > 0
    chart = pd.read_csv(iv / "icu" / "chartevents.csv.gz", usecols=["itemid", "valuenum"])
    assert ((chart.itemid == 220045) & (chart.valuenum == 0)).any()
    assert chart.duplicated().any()


def test_availability_and_oracle(synth_root: Path, synth_cohort) -> None:
    assert not any((synth_root / d / "oracle.csv").exists()
                   for d in ("mimic-iv", "mimic-iv-note", "mimic-cxr-jpg"))
    assert synth_cohort.has_ehr.all()
    assert 0.65 < synth_cohort.has_notes.mean() < 0.95
    assert 0.2 < synth_cohort.has_cxr.mean() < 0.5
    oracle = pd.read_csv(synth_root / "oracle.csv").set_index("stay_id").loc[synth_cohort.stay_id]
    for task in ("mortality", "los", "readmission"):
        known = synth_cohort[task].notna().to_numpy()
        auc = roc_auc_score(synth_cohort[task][known], oracle[task].to_numpy()[known])
        assert auc > 0.7, task


def test_no_leaky_text_or_late_images_in_cohort(synth_cohort) -> None:
    text = " ".join(synth_cohort.note_text.fillna(""))
    assert "comfort measures" not in text  # written after 48 h
    assert "Discharge Disposition" not in text  # discharge summaries are never read
    assert "Lungs are clear" in text or "opacities" in text


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = generate_synthetic_mimic(tmp_path / "a", patients=40, seed=3)
    b = generate_synthetic_mimic(tmp_path / "b", patients=40, seed=3)
    assert a.icu_stays == b.icu_stays
    for rel in ("mimic-iv/icu/chartevents.csv.gz", "mimic-iv-note/note/radiology.csv.gz",
                "mimic-cxr-jpg/mimic-cxr-2.0.0-metadata.csv.gz"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    c = pd.read_csv(tmp_path / "a" / "oracle.csv")
    assert np.isfinite(c[["mortality", "los", "readmission"]].to_numpy()).all()
    assert c.equals(pd.read_csv(tmp_path / "b" / "oracle.csv"))


def test_reachable_ceiling_sits_between_ehr_and_truth(synth_root: Path, synth_cohort) -> None:
    """The reachable ceiling (what the written data shows) is below the true probability and
    above what the EHR alone shows, on every task."""
    oracle = pd.read_csv(synth_root / "oracle.csv").set_index("stay_id").loc[synth_cohort.stay_id]
    for task in ("mortality", "los", "readmission"):
        known = synth_cohort[task].notna().to_numpy()
        labels = synth_cohort[task][known]
        auroc = {col: roc_auc_score(labels, oracle[col].to_numpy()[known])
                 for col in (task, f"{task}_reachable", f"{task}_reachable_ehr")}
        assert auroc[f"{task}_reachable_ehr"] < auroc[f"{task}_reachable"] <= auroc[task] + 0.02, (
            task, auroc)
    assert ((oracle.filter(like="_reachable") > 0) & (oracle.filter(like="_reachable") < 1)).all().all()


def test_populations_in_different_id_blocks_share_no_identifier(tmp_path: Path) -> None:
    a = generate_synthetic_mimic(tmp_path / "a", patients=60, seed=1, id_block=0)
    b = generate_synthetic_mimic(tmp_path / "b", patients=60, seed=1, id_block=1)
    assert a.id_block == 0 and b.id_block == 1
    for table, column in (("mimic-iv/hosp/patients.csv.gz", "subject_id"),
                          ("mimic-iv/hosp/admissions.csv.gz", "hadm_id"),
                          ("mimic-iv/icu/icustays.csv.gz", "stay_id"),
                          ("mimic-cxr-jpg/mimic-cxr-2.0.0-metadata.csv.gz", "study_id")):
        ids_a = set(pd.read_csv(tmp_path / "a" / table)[column])
        ids_b = set(pd.read_csv(tmp_path / "b" / table)[column])
        assert ids_a and ids_b and not ids_a & ids_b, table


@pytest.mark.parametrize("name", ["radiology", "discharge"])
def test_notes_with_line_breaks_read_across_any_block_boundary(synth_root: Path, name: str,
                                                               monkeypatch) -> None:
    """Arrow reads in blocks; a block boundary inside a quoted multi-line note must not split it
    (at 20,000 patients it fell inside one and the benchmark's cohort build stopped)."""
    from client.mimic import tables

    monkeypatch.setattr(tables, "_BLOCK_BYTES", 4096)  # many boundaries, some inside notes
    root = synth_root / "mimic-iv-note"
    chunks = list(tables.iter_table_chunks(root, TABLES[name], usecols=("note_id", "text")))
    read = pd.concat(chunks)
    expected = pd.read_csv(root / f"{TABLES[name].stem}.csv.gz", usecols=["note_id", "text"])
    assert len(chunks) > 1 and read["text"].str.contains("\n").any()
    assert read["note_id"].tolist() == expected["note_id"].tolist()
    assert read["text"].tolist() == expected["text"].tolist()


def test_hospitals_arm_informative_availability_house_styles_and_postop_films(tmp_path: Path
                                                                               ) -> None:
    """The hospitals-v1 arm: availability follows the latent state, each unit writes its
    reports in its own style, CVICU films show post-operative effusion and lines, and the
    written release still builds a cohort; the latent state and the outcomes are those of the
    mcar arm's model (only what is written and which studies exist differ)."""
    from client.mimic.cohort import MimicRoots, build_cohort
    from client.mimic.config import CohortConfig
    from simulation.synth.hospitals import CVICU, HOSPITALS, STYLES
    from simulation.synth.population import build_population

    stays = build_population(np.random.default_rng(5), 3000, arm=HOSPITALS).stays
    sick = stays.z_img > 0.5
    assert stays.has_film[sick].mean() > stays.has_film[~sick].mean() + 0.1  # informative
    by_unit = stays.groupby("first_careunit").has_film.mean()
    assert by_unit[CVICU] > 0.6 > by_unit["Neuro Surgical Intensive Care Unit (Neuro SICU)"]
    postop = stays.first_careunit == CVICU
    assert stays.film_effusion[postop].mean() > stays.film_effusion[~postop].mean() + 0.1
    assert stays.film_device[postop].mean() > 0.7

    summary = generate_synthetic_mimic(tmp_path / "h", patients=150, seed=2, arm=HOSPITALS)
    assert summary.arm == HOSPITALS
    notes = pd.read_csv(tmp_path / "h" / "mimic-iv-note" / "note" / "radiology.csv.gz")
    headings = {style.headings[2] for style in STYLES.values()}
    used = {h for h in headings if notes.text.str.contains(h, regex=False).any()}
    assert len(used) >= 3, used  # several house styles in one release
    cohort = build_cohort(MimicRoots(tmp_path / "h" / "mimic-iv", tmp_path / "h" / "mimic-iv-note",
                                     tmp_path / "h" / "mimic-cxr-jpg"), CohortConfig(progress=False))
    oracle = pd.read_csv(tmp_path / "h" / "oracle.csv")
    assert {"mortality_reachable", "mortality_reachable_ehr"} <= set(oracle.columns)
    assert set(cohort.stay_id) <= set(oracle.stay_id) and cohort.has_cxr.any()
    with pytest.raises(ValueError, match="unknown generator arm"):
        generate_synthetic_mimic(tmp_path / "x", patients=5, arm="hospitals")
