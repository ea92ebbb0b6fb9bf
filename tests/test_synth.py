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
