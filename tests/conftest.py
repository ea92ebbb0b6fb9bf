"""Shared fixtures: the real MIMIC-IV demo and a small synthetic MIMIC set (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOEHEALTH_SHARED", REPO.parent / "shared"))
DEMO = SHARED / "data" / "mimic-iv-demo-2.2"
CXR_SMOKE = SHARED / "data" / "cxr-smoke"


@pytest.fixture(scope="session")
def demo_root() -> Path:
    if not (DEMO / "icu" / "icustays.csv.gz").is_file():
        pytest.fail(f"MIMIC-IV demo not found at {DEMO}; set MOEHEALTH_SHARED")
    return DEMO


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simulation.synth import generate_synthetic_mimic

    out = tmp_path_factory.mktemp("synth")
    generate_synthetic_mimic(out, patients=400, seed=7)
    return out


@pytest.fixture(scope="session")
def synth_cohort(synth_root: Path):
    from client.mimic.cohort import MimicRoots, build_cohort
    from client.mimic.config import CohortConfig

    roots = MimicRoots(synth_root / "mimic-iv", synth_root / "mimic-iv-note",
                       synth_root / "mimic-cxr-jpg")
    return build_cohort(roots, CohortConfig(progress=False))


@pytest.fixture(scope="session")
def cxr_smoke() -> Path:
    if not CXR_SMOKE.is_dir():
        pytest.fail(f"cxr-smoke images not found at {CXR_SMOKE}; set MOEHEALTH_SHARED")
    return CXR_SMOKE


@pytest.fixture(scope="session")
def synth_samples(synth_cohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The samples folder behind :func:`synth_features` (same split), as a site holds it."""
    from client.data.sites import SplitConfig, assign_splits, write_site_samples

    samples = assign_splits(synth_cohort, SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=0))
    folder = tmp_path_factory.mktemp("samples")
    write_site_samples(samples, folder)
    return folder


@pytest.fixture(scope="session")
def synth_features(synth_cohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Feature cache of the whole synthetic cohort as one site (train/val/test by patient)."""
    from client.data.sites import SplitConfig, assign_splits
    from client.features.cache import EncoderConfig, build_site_features

    samples = assign_splits(synth_cohort, SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=0))
    return build_site_features(samples, "pooled", EncoderConfig(),
                               tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="session")
def hospital_data(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three hospitals' samples folders (synthetic), for the deployment tests."""
    from tests.test_deployment import reh

    return reh.synthetic_sites(tmp_path_factory.mktemp("deploydata"), sites=3, patients=300)
