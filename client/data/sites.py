"""Per-site sample tables: patient-level train/validation/test splits and modality availability.

A site's samples are cohort rows plus a ``split`` column. Splits are drawn per patient, so no
patient is in two splits; the same function serves a real hospital (its whole cohort) and each
virtual site of a simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from client.errors import SiteDataError
from client.mimic.cohort import read_cohort, write_cohort
from shared_model.modalities import Modality

__all__ = ["SplitConfig", "assign_splits", "drop_modalities", "write_site_samples",
           "read_site_samples", "SAMPLES_FILE"]

SAMPLES_FILE = "samples.parquet"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    """Shares of patients in validation and test; the rest train."""

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise SiteDataError(f"bad split fractions: val {self.val_fraction}, "
                                f"test {self.test_fraction}")


def assign_splits(samples: pd.DataFrame, config: SplitConfig, site: str = "site") -> pd.DataFrame:
    """Return ``samples`` with a ``split`` column assigned per patient (deterministic for a seed)."""
    if samples.empty:
        raise SiteDataError(f"site '{site}' has zero samples")
    subjects = np.sort(samples["subject_id"].unique())
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(subjects.size)
    n_test = int(round(config.test_fraction * subjects.size))
    n_val = int(round(config.val_fraction * subjects.size))
    split = np.empty(subjects.size, dtype=object)
    split[order[:n_test]] = "test"
    split[order[n_test:n_test + n_val]] = "val"
    split[order[n_test + n_val:]] = "train"
    out = samples.copy()
    out["split"] = pd.Series(split, index=subjects).loc[out["subject_id"]].to_numpy()
    return out


def drop_modalities(samples: pd.DataFrame, missing: list[str]) -> pd.DataFrame:
    """Model a site that lacks some modalities (e.g. no PACS link): clear them for every sample."""
    out = samples.copy()
    for name in missing:
        modality = Modality.parse(name)
        if modality is Modality.EHR:
            raise SiteDataError("EHR cannot be removed: every site has the ICU time series")
        if modality is Modality.NOTES:
            out["note_text"] = ""
        else:
            out["cxr_path"] = pd.Series(pd.NA, index=out.index, dtype="string")
        out[f"has_{modality.value}"] = False
    return out


def write_site_samples(samples: pd.DataFrame, site_dir: Path) -> Path:
    """Write one site's samples next to nothing else of any other site."""
    path = Path(site_dir) / SAMPLES_FILE
    write_cohort(samples, path)
    return path


def read_site_samples(site_dir: Path) -> pd.DataFrame:
    """Read a site's samples, with a clear error naming the site directory."""
    path = Path(site_dir) / SAMPLES_FILE
    if not path.is_file():
        raise SiteDataError(f"{path}: no site samples (run 'moehealth partition' or "
                            f"'moehealth site prepare' first)")
    samples = read_cohort(path)
    if samples.empty:
        raise SiteDataError(f"{path}: site has zero samples")
    if "split" not in samples.columns:
        raise SiteDataError(f"{path}: missing column 'split'")
    return samples
