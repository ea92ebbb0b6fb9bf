"""Split a pooled cohort into virtual hospital sites, at patient level, with flwr-datasets.

Schemes: ``careunit`` (natural: each patient goes to the site of their first stay's care unit;
the largest units get their own site, the rest share the last one), ``dirichlet`` (label skew on
mortality with concentration ``alpha``) and ``iid``. A site profile (YAML) can then remove
modalities from a site to model hospitals without a PACS link or a notes feed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, NaturalIdPartitioner

from client.data.sites import SplitConfig, assign_splits, drop_modalities, write_site_samples
from client.errors import MoeHealthInputError, SiteDataError
from shared_model.run_config import Scheme

__all__ = ["DEFAULT_PROFILE", "Scheme", "PartitionConfig", "SiteProfile", "load_site_profiles",
           "partition_patients", "partition_cohort"]

log = logging.getLogger(__name__)
DEFAULT_PROFILE = Path(__file__).parent / "profiles" / "default.yaml"


@dataclass(frozen=True)
class PartitionConfig:
    """How many sites, which scheme, and the patient-level split inside each site."""

    num_sites: int = 5
    scheme: Scheme = Scheme.CAREUNIT
    alpha: float = 0.5
    seed: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)

    def __post_init__(self) -> None:
        if self.num_sites < 1:
            raise MoeHealthInputError(f"num_sites must be at least 1, got {self.num_sites}")
        object.__setattr__(self, "scheme", Scheme(self.scheme))


@dataclass(frozen=True)
class SiteProfile:
    """What a site lacks: e.g. ``drop_modalities: [cxr]`` for a hospital whose PACS is not linked."""

    drop_modalities: tuple[str, ...] = ()


def load_site_profiles(path: Path | None) -> dict[str, SiteProfile]:
    """Read ``sites: {site-id: {drop_modalities: [...]}}`` from YAML (empty if ``path`` is None)."""
    if path is None:
        return {}
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise MoeHealthInputError(f"{path}: cannot read site profile ({err})") from None
    sites = raw.get("sites", {})
    if not isinstance(sites, dict):
        raise MoeHealthInputError(f"{path}: 'sites' must be a mapping of site id to profile")
    return {str(k): SiteProfile(tuple((v or {}).get("drop_modalities", ())))
            for k, v in sites.items()}


def _patients(cohort: pd.DataFrame, num_sites: int) -> pd.DataFrame:
    first = cohort.sort_values("intime").groupby("subject_id", sort=True).first()
    table = pd.DataFrame({"subject_id": first.index.to_numpy(),
                          "careunit": first["first_careunit"].astype(str).to_numpy()})
    table["label"] = cohort.groupby("subject_id")["mortality"].max().fillna(0).astype(int).to_numpy()
    ranked = table["careunit"].value_counts().index.tolist()
    own = ranked[: max(num_sites - 1, 0)] if len(ranked) > num_sites else ranked
    table["site_group"] = np.where(table["careunit"].isin(own), table["careunit"], "other units")
    return table


def partition_patients(cohort: pd.DataFrame, config: PartitionConfig) -> pd.DataFrame:
    """Return ``subject_id -> site`` (``site-0`` ...) with a short description per site."""
    table = _patients(cohort, config.num_sites)
    if config.scheme is Scheme.CAREUNIT:
        partitioner = NaturalIdPartitioner(partition_by="site_group")
    elif config.scheme is Scheme.DIRICHLET:
        partitioner = DirichletPartitioner(num_partitions=config.num_sites, partition_by="label",
                                           alpha=config.alpha, min_partition_size=2,
                                           self_balancing=True, seed=config.seed)
    else:
        table = table.sample(frac=1.0, random_state=config.seed)
        partitioner = IidPartitioner(num_partitions=config.num_sites)
    partitioner.dataset = Dataset.from_pandas(table, preserve_index=False)
    parts = []
    for pid in range(partitioner.num_partitions):
        part = partitioner.load_partition(pid).to_pandas()
        part["site"] = f"site-{pid}"
        parts.append(part[["subject_id", "site", "site_group"]])
    return pd.concat(parts, ignore_index=True)


def partition_cohort(cohort: pd.DataFrame, out: Path, config: PartitionConfig,
                     profiles: dict[str, SiteProfile] | None = None,
                     ignore_unknown_sites: bool = False) -> dict[str, dict]:
    """Write ``out/<site>/samples.parquet`` for every site and ``out/sites.yaml``; return the summary.

    A profile naming a site that does not exist is an error, unless ``ignore_unknown_sites``
    (used for the built-in default profile, written for 5 sites, with fewer sites).
    """
    profiles = profiles or {}
    assignment = partition_patients(cohort, config)
    unknown = set(profiles) - set(assignment["site"])
    if unknown and ignore_unknown_sites:
        log.info("site profile: ignoring entries for absent site(s) %s", ", ".join(sorted(unknown)))
    elif unknown:
        raise MoeHealthInputError(f"site profile names unknown site(s): {', '.join(sorted(unknown))}")
    merged = cohort.merge(assignment, on="subject_id", how="inner")
    summary: dict[str, dict] = {}
    for site, rows in merged.groupby("site", sort=True):
        rows = rows.drop(columns=["site", "site_group"])
        rows.attrs = cohort.attrs
        if rows.empty:
            raise SiteDataError(f"site '{site}' has zero samples; use fewer sites")
        samples = assign_splits(rows, config.split, site=str(site))
        samples = drop_modalities(samples, list(profiles.get(str(site), SiteProfile()).drop_modalities))
        samples.attrs = cohort.attrs
        write_site_samples(samples, Path(out) / str(site))
        group = assignment.loc[assignment["site"] == site, "site_group"]
        summary[str(site)] = {
            "stays": len(samples), "patients": int(samples["subject_id"].nunique()),
            "description": ", ".join(sorted(group.unique()))[:200] if config.scheme is Scheme.CAREUNIT
            else f"{config.scheme.value} partition",
            "modalities": [m for m in ("ehr", "notes", "cxr") if samples[f"has_{m}"].any()],
            "mortality_rate": round(float(samples["mortality"].mean()), 4),
            "splits": samples["split"].value_counts().to_dict(),
        }
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "sites.yaml").write_text(yaml.safe_dump({"scheme": config.scheme.value,
                                                          "sites": summary}, sort_keys=False))
    return summary
