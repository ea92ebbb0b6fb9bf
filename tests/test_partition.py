"""Virtual sites: patient-level, disjoint splits, profiles that remove modalities."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.data.sites import read_site_samples
from client.errors import MoeHealthInputError
from simulation.partition import (
    DEFAULT_PROFILE,
    PartitionConfig,
    SiteProfile,
    load_site_profiles,
    partition_cohort,
)


@pytest.mark.parametrize("scheme", ["careunit", "dirichlet", "iid"])
def test_no_patient_in_two_sites_or_splits(synth_cohort, tmp_path: Path, scheme: str) -> None:
    summary = partition_cohort(synth_cohort, tmp_path, PartitionConfig(num_sites=4, scheme=scheme))
    assert len(summary) == 4
    sites = {s: read_site_samples(tmp_path / s) for s in summary}
    seen: dict[int, str] = {}
    for site, samples in sites.items():
        for subject in samples.subject_id.unique():
            assert seen.setdefault(subject, site) == site
        assert (samples.groupby("subject_id").split.nunique() == 1).all()
        assert set(samples.split) == {"train", "val", "test"}
    assert sum(len(s) for s in sites.values()) == len(synth_cohort)


def test_profile_removes_modalities(synth_cohort, tmp_path: Path) -> None:
    profiles = load_site_profiles(DEFAULT_PROFILE)
    assert profiles["site-1"] == SiteProfile(("cxr",))
    summary = partition_cohort(synth_cohort, tmp_path, PartitionConfig(num_sites=5), profiles)
    assert "cxr" not in summary["site-1"]["modalities"]
    assert "notes" not in summary["site-3"]["modalities"]
    no_cxr = read_site_samples(tmp_path / "site-1")
    assert not no_cxr.has_cxr.any() and no_cxr.cxr_path.isna().all()
    assert summary["site-0"]["modalities"] == ["ehr", "notes", "cxr"]


def test_profile_naming_unknown_site_fails(synth_cohort, tmp_path: Path) -> None:
    with pytest.raises(MoeHealthInputError, match="site-9"):
        partition_cohort(synth_cohort, tmp_path, PartitionConfig(num_sites=2),
                         {"site-9": SiteProfile(("cxr",))})
