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

from client.features.cache import EncoderConfig, build_site_features, default_cache_dir
from client.mimic.cohort import MimicRoots, build_cohort, read_cohort, write_cohort
from client.mimic.config import CohortConfig
from client.sites import SplitConfig, read_site_samples
from simulation.partition import DEFAULT_PROFILE, PartitionConfig, load_site_profiles, partition_cohort
from simulation.synth import generate_synthetic_mimic

log = logging.getLogger(__name__)
POINTER = "feature_dir.txt"


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


    def synth_dir(self) -> Path | None:
        """Where the synthetic releases live (None when real MIMIC roots are configured)."""
        return None if self.mimic_iv else Path(self.data_dir) / f"synth-{self.patients}-seed{self.seed}"

    def oracle_csv(self) -> Path | None:
        """The synthetic set's true outcome probabilities (evaluation only)."""
        synth = self.synth_dir()
        return synth / "oracle.csv" if synth else None


    @classmethod
    def from_run_config(cls, run_config: dict) -> FederationData:
        """``data.*`` keys of the Flower run-config; empty strings mean "default"."""
        get = lambda key, default=None: run_config.get(f"data.{key}", default) or default  # noqa: E731
        profile = get("profile", "default")
        kwargs = {
            "patients": int(get("patients", 2000)), "seed": int(get("seed", 0)),
            "num_sites": int(get("num-sites", 5)), "scheme": str(get("scheme", "careunit")),
            "alpha": float(get("alpha", 0.5)),
            "profile": None if profile == "none" else DEFAULT_PROFILE if profile == "default"
            else Path(profile),
            "mimic_iv": get("mimic-iv"), "mimic_note": get("mimic-note"), "mimic_cxr": get("mimic-cxr"),
        }
        if get("dir"):
            kwargs["data_dir"] = Path(get("dir"))
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
    run_dir = Path(data.data_dir) / f"federation-{data.key()}"
    cohort_path = run_dir / "cohort.parquet"
    if not cohort_path.is_file():
        cohort = build_cohort(_roots(data), CohortConfig(progress=progress))
        write_cohort(cohort, cohort_path)
    sites_dir = run_dir / "sites"
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
        (sites_dir / site / POINTER).write_text(str(built[site]))
    return built


def prepared_sites(data: FederationData) -> dict[str, Path]:
    """Feature dirs recorded by the last :func:`prepare_sites` (the ServerApp runs it first);
    falls back to a full :func:`prepare_sites` when any is missing."""
    sites_dir = Path(data.data_dir) / f"federation-{data.key()}" / "sites"
    pointers = sorted(sites_dir.glob(f"*/{POINTER}"), key=lambda p: int(p.parent.name.split("-")[-1]))
    dirs = {p.parent.name: Path(p.read_text().strip()) for p in pointers}
    if dirs and all((d / "manifest.json").is_file() for d in dirs.values()):
        return dirs
    return prepare_sites(data)
