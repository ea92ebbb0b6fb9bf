"""One call from nothing to per-site feature caches: synth -> cohort -> partition -> encode.

Each step is skipped when its output exists for the same parameters, so the first run of a
simulation generates the data and later runs reuse it. Real MIMIC roots can replace the synthetic
set (``mimic_iv`` etc.); the rest of the chain is the same.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from client.data.sites import SplitConfig, read_site_samples
from client.features.cache import EncoderConfig, build_site_features
from client.mimic.cohort import MimicRoots, build_cohort, read_cohort, write_cohort
from client.mimic.config import CohortConfig
from shared_model.paths import default_cache_dir
from shared_model.run_config import DATA_PREFIX, Scheme
from simulation.partition import DEFAULT_PROFILE, PartitionConfig, load_site_profiles, partition_cohort
from simulation.synth import generate_synthetic_mimic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FederationData:
    """Where the data comes from and how it is cut into sites."""

    data_dir: Path = field(default_factory=lambda: default_cache_dir() / "synthetic")
    patients: int = 2000
    seed: int = 0
    num_sites: int = 5
    scheme: str = "careunit"
    alpha: float = 0.5
    profile: Path | None = DEFAULT_PROFILE
    mimic_iv: Path | None = None
    mimic_note: Path | None = None
    mimic_cxr: Path | None = None

    def key(self) -> str:
        blob = {k: str(v) for k, v in asdict(self).items() if k not in ("data_dir", "profile")}
        if self.profile:
            blob["profile_text"] = Path(self.profile).read_text()
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]

    def federation_dir(self) -> Path:
        """Cohort and site partition of this data configuration."""
        return Path(self.data_dir) / f"federation-{self.key()}"

    def sites_dir(self) -> Path:
        """One folder per virtual site, each with its ``samples.parquet``."""
        return self.federation_dir() / "sites"

    def synth_dir(self) -> Path | None:
        """Where the synthetic releases live (None when real MIMIC roots are configured)."""
        return None if self.mimic_iv else Path(self.data_dir) / f"synth-{self.patients}-seed{self.seed}"

    def oracle_csv(self) -> Path | None:
        """The synthetic set's true outcome probabilities (evaluation only)."""
        synth = self.synth_dir()
        return synth / "oracle.csv" if synth else None


    KEYS: ClassVar[dict[str, str]] = {
        "patients": "patients", "seed": "seed", "num-sites": "num_sites", "scheme": "scheme",
        "alpha": "alpha", "mimic-iv": "mimic_iv", "mimic-note": "mimic_note",
        "mimic-cxr": "mimic_cxr", "dir": "data_dir",
    }  # data.<key> of the run-config -> field

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "scheme", Scheme(self.scheme))
        except ValueError:
            raise ValueError(f"data.scheme must be one of {', '.join(s.value for s in Scheme)}, "
                             f"got {self.scheme!r}") from None
        if self.num_sites < 1 or self.patients < 1:
            raise ValueError("data.num-sites and data.patients must be at least 1")
        for key, path in (("data.mimic-iv", self.mimic_iv), ("data.mimic-note", self.mimic_note),
                          ("data.mimic-cxr", self.mimic_cxr)):
            if path is not None and not Path(path).is_dir():
                raise ValueError(f"{key}: '{path}' is not a directory")
        if self.profile is not None and not Path(self.profile).is_file():
            raise ValueError(f"data.profile: '{self.profile}' is not a file")

    @classmethod
    def from_run_config(cls, run_config: dict) -> FederationData:
        """``data.*`` keys of the Flower run-config; empty strings mean "default"."""
        kwargs: dict[str, Any] = {field_: run_config[DATA_PREFIX + key] for key, field_ in cls.KEYS.items()
                                  if run_config.get(DATA_PREFIX + key) not in (None, "")}
        for name in ("mimic_iv", "mimic_note", "mimic_cxr", "data_dir"):
            if name in kwargs:
                kwargs[name] = Path(str(kwargs[name]))
        profile = str(run_config.get(DATA_PREFIX + "profile") or "default")
        kwargs["profile"] = (None if profile == "none" else DEFAULT_PROFILE if profile == "default"
                             else Path(profile))
        return cls(**kwargs)


def _roots(data: FederationData) -> MimicRoots:
    synth = data.synth_dir()
    if synth is None:
        return MimicRoots(Path(data.mimic_iv), data.mimic_note and Path(data.mimic_note),
                          data.mimic_cxr and Path(data.mimic_cxr))
    if not (synth / "synth.json").is_file():
        log.info("generating synthetic MIMIC (%d patients) in %s", data.patients, synth)
        generate_synthetic_mimic(synth, patients=data.patients, seed=data.seed)
    return MimicRoots(synth / "mimic-iv", synth / "mimic-iv-note", synth / "mimic-cxr-jpg")


def prepare_sites(data: FederationData, encoders: EncoderConfig | None = None,
                  cache_dir: Path | None = None, progress: bool = False) -> dict[str, Path]:
    """Return ``site id -> feature cache dir`` for every site, building what is missing."""
    cohort_path = data.federation_dir() / "cohort.parquet"
    if not cohort_path.is_file():
        cohort = build_cohort(_roots(data), CohortConfig(progress=progress))
        write_cohort(cohort, cohort_path)
    sites_dir = data.sites_dir()
    if not (sites_dir / "sites.yaml").is_file():
        config = PartitionConfig(num_sites=data.num_sites, scheme=data.scheme, alpha=data.alpha,
                                 seed=data.seed, split=SplitConfig(seed=data.seed))
        partition_cohort(read_cohort(cohort_path), sites_dir, config,
                         load_site_profiles(data.profile),
                         ignore_unknown_sites=data.profile == DEFAULT_PROFILE)
    sites = sorted((p.name for p in sites_dir.iterdir() if p.is_dir()),
                   key=lambda s: int(s.split("-")[-1]))
    encoders = encoders or EncoderConfig()
    built = {}
    for site in sites:
        built[site] = build_site_features(read_site_samples(sites_dir / site), site, encoders,
                                          cache_dir, progress=progress)
    return built
