"""Two processes encode exactly the note vectors a serial build encodes, each note once."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from client.data.sites import read_site_samples
from client.features.cache import EncoderConfig, build_site_features
from simulation.parallel_encoding import encode_side_by_side, plan_jobs
from simulation.prepare import FederationData, partition_sites


def _features(sites, config: EncoderConfig, cache: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for site, samples in sites:
        with np.load(build_site_features(samples, site, config, cache, progress=False) /
                     "features.npz") as data:
            out[site] = {name: data[name] for name in ("notes", "cxr", "stay_id")}
    return out


@pytest.mark.slow
def test_side_by_side_encoding_gives_the_serial_vectors(tmp_path: Path, caplog) -> None:
    # Prepare: three sites; site-1 also holds one of site-0's notes word for word, which the
    # serial build encodes once, with site-0's batch
    data = FederationData(data_dir=tmp_path / "data", patients=150, num_sites=3)
    sites = [(s, read_site_samples(f)) for s, f in partition_sites(data).items()]
    shared = sites[0][1].loc[sites[0][1]["has_notes"], "note_text"].iloc[0]
    first = sites[1][1].index[sites[1][1]["has_notes"]][0]
    sites[1][1].loc[first, "note_text"] = shared
    config = EncoderConfig(image_size=32)
    # Execute
    serial = _features(sites, config, tmp_path / "serial")
    jobs = plan_jobs(sites, config, tmp_path / "side")
    with caplog.at_level(logging.INFO):
        assert encode_side_by_side(sites, config, tmp_path / "side", min_notes=0)
        caplog.clear()
        side = _features(sites, config, tmp_path / "side")
    # Assert: the shared note is encoded by site-0's job only, no note is left to encode, and
    # every vector is bit for bit the serial one
    assert [job.site for job in jobs] == [s for s, _ in sites]
    notes = [int(s["has_notes"].sum()) for _, s in sites]
    assert [job.notes for job in jobs][:2] == [notes[0], notes[1] - 1]
    films = [int(s["has_cxr"].sum()) for _, s in sites]
    for (site, _), n_films in zip(sites, films, strict=True):  # the films, serially, as before
        assert f"site {site}: " in caplog.text
        assert f"of which 0 and {n_films} newly encoded" in caplog.text
    for site, arrays in serial.items():
        for name, values in arrays.items():
            assert np.array_equal(side[site][name], values), (site, name)
    assert not plan_jobs(sites, config, tmp_path / "side")  # a second build encodes nothing
