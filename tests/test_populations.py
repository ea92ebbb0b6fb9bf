"""Both populations generated side by side write exactly what one after the other writes."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
import torch

from simulation import prepare  # not its test_population_cohort by name: pytest would collect it
from simulation.image_pretraining import synthetic_pacs
from simulation.populations import build_populations
from simulation.prepare import FederationData


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "synth.json" and p.suffix != ".parquet"}


def _frames(root: Path) -> dict[str, pd.DataFrame]:
    # cxr_path is absolute, so it names the cache folder: compared relative to it
    return {str(p.relative_to(root)): pd.read_parquet(p).assign(
        cxr_path=lambda f, r=str(root): f["cxr_path"].str.replace(r, "", regex=False))
        for p in sorted(root.rglob("*.parquet"))}


@pytest.mark.slow
def test_side_by_side_generation_equals_one_after_the_other(tmp_path: Path, caplog,
                                                             monkeypatch) -> None:
    # Prepare
    monkeypatch.setenv("MOEHEALTH_CACHE", str(tmp_path / "cache"))  # no pre-trained weights yet
    config = {"patients": 120, "test_patients": 80, "arm": "hospitals-v1", "num_sites": 3,
              "image_encoder": "synthetic-pacs", "image_size": 32}
    side = FederationData(data_dir=tmp_path / "side", **config)
    serial = FederationData(data_dir=tmp_path / "serial", **config)
    # Execute
    with caplog.at_level(logging.INFO, logger="simulation.populations"):
        archive = build_populations(side, draw_pacs=True)
    prepare.partition_sites(serial)
    prepare.test_population_cohort(serial)
    index, films, targets = synthetic_pacs(side.pacs_to_pretrain())  # drawn in this process
    # Assert
    assert "side by side" in caplog.text
    written, expected = _files(side.data_dir), _files(serial.data_dir)
    assert written.keys() == expected.keys() and len(written) > 50
    assert [name for name in written if written[name] != expected[name]] == []
    frames, expected_frames = _frames(side.data_dir), _frames(serial.data_dir)
    assert frames.keys() == expected_frames.keys()
    for name, frame in frames.items():
        pd.testing.assert_frame_equal(frame, expected_frames[name], obj=name)
    assert archive is not None and archive[0].equals(index)
    assert torch.equal(archive[1], films) and torch.equal(archive[2], targets)
    # once built, nothing is generated again
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert build_populations(side, draw_pacs=True) is None
    assert "generating" not in caplog.text
