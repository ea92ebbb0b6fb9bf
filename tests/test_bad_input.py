"""Bad input gives one clear line naming the file, column or site, and exit status 2."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from client.data.sites import SplitConfig, assign_splits
from client.errors import SiteDataError
from client.mimic.cohort import ehr_array, read_cohort
from moehealth.cli import main


def _copy_demo(demo_root: Path, dst: Path) -> Path:
    for sub in ("hosp", "icu"):
        (dst / sub).mkdir(parents=True)
        for name in ("patients", "admissions", "labevents", "icustays", "chartevents"):
            src = demo_root / sub / f"{name}.csv.gz"
            if src.exists():
                (dst / sub / src.name).symlink_to(src)
    return dst


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def _cohort(root: Path, tmp_path: Path) -> list[str]:
    return ["cohort", "--mimic-iv", str(root), "--out", str(tmp_path / "c.parquet"), "--quiet"]


def test_missing_file(demo_root: Path, tmp_path: Path, capsys) -> None:
    root = _copy_demo(demo_root, tmp_path / "iv")
    (root / "hosp" / "patients.csv.gz").unlink()
    code, line = _run(capsys, *_cohort(root, tmp_path))
    assert code == 2 and "hosp/patients.csv.gz: file not found" in line


def test_missing_column(demo_root: Path, tmp_path: Path, capsys) -> None:
    root = _copy_demo(demo_root, tmp_path / "iv")
    stays = pd.read_csv(demo_root / "icu" / "icustays.csv.gz").rename(columns={"los": "length"})
    (root / "icu" / "icustays.csv.gz").unlink()
    stays.to_csv(root / "icu" / "icustays.csv.gz", index=False)
    code, line = _run(capsys, *_cohort(root, tmp_path))
    assert code == 2 and "icustays.csv.gz: missing column 'los'" in line


def test_truncated_gzip(demo_root: Path, tmp_path: Path, capsys) -> None:
    root = _copy_demo(demo_root, tmp_path / "iv")
    target = root / "icu" / "chartevents.csv.gz"
    data = target.read_bytes()
    target.unlink()
    target.write_bytes(data[: len(data) // 3])
    code, line = _run(capsys, *_cohort(root, tmp_path))
    assert code == 2 and "chartevents.csv.gz: truncated or corrupt gzip" in line


def test_empty_table(demo_root: Path, tmp_path: Path, capsys) -> None:
    root = _copy_demo(demo_root, tmp_path / "iv")
    (root / "hosp" / "admissions.csv.gz").unlink()
    with gzip.open(root / "hosp" / "admissions.csv.gz", "wt") as fh:
        fh.write(gzip.open(demo_root / "hosp" / "admissions.csv.gz", "rt").readline())
    code, line = _run(capsys, *_cohort(root, tmp_path))
    assert code == 2 and "admissions.csv.gz: table has a header but no rows" in line


def _header_only(root: Path, demo_root: Path, table: str) -> None:
    target = root / table
    target.unlink()
    with gzip.open(target, "wt") as fh:
        fh.write(gzip.open(demo_root / table, "rt").readline())


def test_empty_optional_table_warns_and_gives_missing_values(demo_root: Path, tmp_path: Path,
                                                             capsys, caplog) -> None:
    root = _copy_demo(demo_root, tmp_path / "iv")
    _header_only(root, demo_root, "hosp/labevents.csv.gz")  # the lab feed is not connected
    code, _ = _run(capsys, *_cohort(root, tmp_path))
    assert code == 0
    assert "labevents.csv.gz: table has a header but no rows" in caplog.text
    with_labs = tmp_path / "with-labs.parquet"
    assert main(["cohort", "--mimic-iv", str(_copy_demo(demo_root, tmp_path / "iv2")),
                 "--out", str(with_labs), "--quiet"]) == 0
    no_lab, lab = (ehr_array(read_cohort(p)) for p in (tmp_path / "c.parquet", with_labs))
    assert no_lab.shape == lab.shape  # the same stays
    assert np.isfinite(no_lab).sum() < np.isfinite(lab).sum()  # lab values are missing now


def _with_value(demo_root: Path, root: Path, table: str, row: int, column: str, value: str) -> None:
    """Replace the table in ``root`` by the demo's with one cell changed."""
    frame = pd.read_csv(demo_root / table, dtype=str)
    frame.loc[row, column] = value
    (root / table).unlink()
    frame.to_csv(root / table, index=False)


def test_non_numeric_value_names_file_column_line_and_value(demo_root: Path, tmp_path: Path,
                                                            capsys) -> None:
    root = _copy_demo(demo_root, tmp_path / "iv")
    _with_value(demo_root, root, "icu/chartevents.csv.gz", 41, "valuenum", "ninety")
    code, line = _run(capsys, *_cohort(root, tmp_path))
    assert code == 2
    assert "chartevents.csv.gz: column 'valuenum', line 43: 'ninety' is not a number" in line


def test_bad_timestamp_names_file_column_line_and_value(demo_root: Path, tmp_path: Path,
                                                        capsys) -> None:
    root = _copy_demo(demo_root, tmp_path / "iv")
    _with_value(demo_root, root, "icu/icustays.csv.gz", 3, "intime", "yesterday")
    code, line = _run(capsys, *_cohort(root, tmp_path))
    assert code == 2 and "icustays.csv.gz: column 'intime', line 5: 'yesterday' is not a date-time" in line


def test_plain_csv_is_read_too(demo_root: Path, tmp_path: Path, capsys) -> None:
    root = _copy_demo(demo_root, tmp_path / "iv")
    (root / "icu" / "icustays.csv.gz").unlink()
    shutil.copyfileobj(gzip.open(demo_root / "icu" / "icustays.csv.gz"),
                       open(root / "icu" / "icustays.csv", "wb"))
    code, _ = _run(capsys, *_cohort(root, tmp_path))
    assert code == 0 and (tmp_path / "c.parquet").is_file()


def test_site_with_zero_samples(synth_cohort) -> None:
    with pytest.raises(SiteDataError, match="site 'hospital-x' has zero samples"):
        assign_splits(synth_cohort.iloc[:0], SplitConfig(), site="hospital-x")


def test_encode_with_no_sites(tmp_path: Path, capsys) -> None:
    code, line = _run(capsys, "encode", "--sites-dir", str(tmp_path))
    assert code == 2 and "no site directories" in line


def test_not_a_cohort_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "x.parquet"
    bad.write_text("not parquet")
    code, line = _run(capsys, "partition", "--cohort", str(bad), "--out", str(tmp_path / "o"))
    assert code == 2 and "x.parquet: not a readable cohort parquet" in line
