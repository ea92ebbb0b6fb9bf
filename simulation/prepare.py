"""One call from nothing to per-site feature caches: synth -> cohort -> partition -> encode.

Each step is skipped when its output exists for the same parameters, so the first run of a
simulation generates the data and later runs reuse it. Real MIMIC roots can replace the synthetic
set (``mimic_iv`` etc.); the rest of the chain is the same.

Optionally (``test_patients`` > 0, the benchmark preset) an independent synthetic test population
that nobody trains on is built the same way (its own seed and identifier block) and encoded as the
pseudo-site ``test-population``: pooled evaluation then scores it instead of the sites' test splits.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from client.data.sites import SplitConfig, read_site_samples
from client.features.cache import EncoderConfig, build_site_features
from client.mimic.cohort import MimicRoots, build_cohort, read_cohort, write_cohort
from client.mimic.config import CohortConfig
from shared_model.paths import default_cache_dir
from shared_model.run_config import CLI_NUM_SITES, DATA_PREFIX, Scheme
from simulation.partition import DEFAULT_PROFILE, PartitionConfig, load_site_profiles, partition_cohort
from simulation.synth import generate_synthetic_mimic
from simulation.synth.hospitals import ARMS, HOSPITALS, MCAR

if TYPE_CHECKING:  # torch is imported only where an image encoder is pre-trained
    from simulation.image_pretraining import PacsArchive, PacsPretraining

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FederationData:
    """Where the data comes from and how it is cut into sites."""

    data_dir: Path = field(default_factory=lambda: default_cache_dir() / "synthetic")
    patients: int = 2000
    seed: int = 0
    num_sites: int = CLI_NUM_SITES
    scheme: str = "careunit"
    alpha: float = 0.5
    profile: Path | None = DEFAULT_PROFILE
    mimic_iv: Path | None = None
    mimic_note: Path | None = None
    mimic_cxr: Path | None = None
    test_patients: int = 0
    image_encoder: str = "random"
    image_size: int = 224
    arm: str = MCAR  # synthetic generator arm: "mcar" or "hospitals-v1" (synth/hospitals.py)

    def key(self) -> str:
        """Identity of the cohort and its partition (not of the encoders or the test population;
        the ``mcar`` arm keeps the keys it had before arms existed)."""
        ignored = ("data_dir", "profile", "test_patients", "image_encoder", "image_size",
                   *(("arm",) if self.arm == MCAR else ()))
        blob = {k: str(v) for k, v in asdict(self).items() if k not in ignored}
        if self.profile:
            blob["profile_text"] = Path(self.profile).read_text()
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]

    def describe(self) -> str:
        """What the data is, for the run's records: real MIMIC roots or the synthetic set."""
        if self.mimic_iv:
            return f"real MIMIC-IV at {self.mimic_iv}, {self.num_sites} sites"
        test = f", a {self.test_patients}-patient test population" if self.test_patients else ""
        return (f"synthetic MIMIC-format, {self.patients} patients (seed {self.seed}), "
                f"{self.num_sites} sites{test}, generator arm {self.arm}")

    def federation_dir(self) -> Path:
        """Cohort and site partition of this data configuration."""
        return Path(self.data_dir) / f"federation-{self.key()}"

    def sites_dir(self) -> Path:
        """One folder per virtual site, each with its ``samples.parquet``."""
        return self.federation_dir() / "sites"

    def synth_dir(self) -> Path | None:
        """Where the synthetic releases live (None when real MIMIC roots are configured)."""
        return None if self.mimic_iv else Path(self.data_dir) / (
            f"synth-{self.patients}-seed{self.seed}{self._arm_suffix()}")

    def _arm_suffix(self) -> str:
        return "" if self.arm == MCAR else f"-{self.arm}"

    def oracle_csv(self) -> Path | None:
        """The synthetic set's true outcome probabilities (evaluation only)."""
        synth = self.synth_dir()
        return synth / "oracle.csv" if synth else None

    def test_population_dir(self) -> Path | None:
        """The independent test population's synthetic set (None when there is none)."""
        if self.test_patients <= 0:
            return None
        return Path(self.data_dir) / (f"test-population-{self.test_patients}-seed{self.seed}"
                                      f"-block{TEST_POPULATION_ID_BLOCK}{self._arm_suffix()}")

    def test_oracle_csv(self) -> Path | None:
        """The test population's true and reachable probabilities (None without one)."""
        root = self.test_population_dir()
        return root / "synth" / "oracle.csv" if root else None

    def encoder_config(self, pacs_archive: PacsArchive | None = None) -> EncoderConfig:
        """Frozen encoders of this federation: bundled MiniLM; the image backbone named by
        ``image_encoder`` ("random", "synthetic-pacs" or a state-dict path) at ``image_size``
        (``pacs_archive``: the synthetic PACS drawn beforehand, see :meth:`pacs_to_pretrain`)."""
        if self.image_encoder == "random":
            weights = None
        elif self.image_encoder == SYNTHETIC_PACS:
            from simulation.image_pretraining import pretrain_image_encoder

            weights = str(pretrain_image_encoder(self._pacs(), archive=pacs_archive))
        else:
            weights = self.image_encoder
        return EncoderConfig(image_weights=weights, image_size=self.image_size)

    def pacs_to_pretrain(self) -> PacsPretraining | None:
        """The synthetic-PACS pre-training still to run before encoding,
        or None (another image encoder, or its weights are cached)."""
        if self.image_encoder != SYNTHETIC_PACS:
            return None
        config = self._pacs()
        return None if config.weights_path().is_file() else config

    def _pacs(self) -> PacsPretraining:
        from simulation.image_pretraining import PacsPretraining

        return PacsPretraining(image_size=self.image_size)


    KEYS: ClassVar[dict[str, str]] = {
        "patients": "patients", "seed": "seed", "num-sites": "num_sites", "scheme": "scheme",
        "alpha": "alpha", "mimic-iv": "mimic_iv", "mimic-note": "mimic_note",
        "mimic-cxr": "mimic_cxr", "dir": "data_dir", "test-patients": "test_patients",
        "image-encoder": "image_encoder", "image-size": "image_size", "arm": "arm",
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
        if self.test_patients < 0:
            raise ValueError(f"data.test-patients must be at least 0, got {self.test_patients}")
        if self.test_patients and self.mimic_iv:
            raise ValueError("data.test-patients draws a synthetic test population; it cannot be "
                             "combined with real MIMIC roots (data.mimic-iv)")
        if self.image_encoder not in ("random", SYNTHETIC_PACS) and not Path(
                self.image_encoder).is_file():
            raise ValueError(f"data.image-encoder must be 'random', '{SYNTHETIC_PACS}' or a "
                             f"DenseNet-121 state dict file, got {self.image_encoder!r}")
        if self.image_size < 32:
            raise ValueError(f"data.image-size must be at least 32, got {self.image_size}")
        if self.arm not in ARMS:
            raise ValueError(f"data.arm must be one of {', '.join(ARMS)}, got {self.arm!r}")
        if self.arm != MCAR and self.mimic_iv:
            raise ValueError("data.arm chooses a synthetic generator; real MIMIC roots have none")

    def run_config(self) -> dict[str, Any]:
        """The ``data.*`` run-config keys that reproduce this data configuration in `flwr run`
        (the inverse of :meth:`from_run_config`)."""
        def plain(value: Any) -> Any:
            if value is None:
                return ""
            return value.value if isinstance(value, Enum) else str(value) \
                if isinstance(value, Path) else value

        out = {DATA_PREFIX + key: plain(getattr(self, field_)) for key, field_ in self.KEYS.items()}
        out[DATA_PREFIX + "profile"] = ("none" if self.profile is None else "default"
                                        if self.profile == DEFAULT_PROFILE else str(self.profile))
        return out

    @classmethod
    def from_run_config(cls, run_config: dict) -> FederationData:
        """``data.*`` keys of the Flower run-config; empty strings mean "default", and so does
        ``data.num-sites = 0`` (one site per SuperNode: the ServerApp sets the count first)."""
        kwargs: dict[str, Any] = {field_: run_config[DATA_PREFIX + key] for key, field_ in cls.KEYS.items()
                                  if run_config.get(DATA_PREFIX + key) not in (None, "")}
        if kwargs.get("num_sites") == 0:
            del kwargs["num_sites"]
        for name in ("mimic_iv", "mimic_note", "mimic_cxr", "data_dir"):
            if name in kwargs:
                kwargs[name] = Path(str(kwargs[name]))
        profile = str(run_config.get(DATA_PREFIX + "profile") or "default")
        real = "mimic_iv" in kwargs
        # the default profile shapes synthetic sites; real data keeps the modalities it has
        kwargs["profile"] = (None if profile == "none" or (profile == "default" and real)
                             else DEFAULT_PROFILE if profile == "default" else Path(profile))
        if real and "data_dir" not in kwargs:  # real data is cached apart from synthetic
            kwargs["data_dir"] = default_cache_dir() / "mimic"
        preset = str(run_config.get(PRESET_KEY) or "")
        if preset:
            kwargs |= preset_values(preset)
        return cls(**kwargs)


PRESET_KEY = DATA_PREFIX + "preset"
SYNTHETIC_PACS = "synthetic-pacs"
TEST_POPULATION_ID_BLOCK = 1
TEST_POPULATION_SITE = "test-population"
PRESETS: dict[str, dict[str, Any]] = {
    # ~16,000 training stays over 5 care-unit sites, an independent test population of
    # ~10,000 stays, and an image backbone pre-trained on a disjoint synthetic PACS.
    "benchmark": {"patients": 20_000, "test_patients": 12_500, "num_sites": 5,
                  "scheme": "careunit", "image_encoder": SYNTHETIC_PACS, "image_size": 128},
    # the same, from the hospitals-v1 arm: informative availability, hospitals that differ,
    # case mix that changes what a finding means (bench/README.md, "Arm 2: hospitals")
    "benchmark-hospitals": {"patients": 20_000, "test_patients": 12_500, "num_sites": 5,
                            "scheme": "careunit", "image_encoder": SYNTHETIC_PACS,
                            "image_size": 128, "arm": HOSPITALS},
}


def preset_values(name: str) -> dict[str, Any]:
    """The FederationData fields a named preset fixes (``data.preset``, ``--preset``)."""
    if name not in PRESETS:
        raise ValueError(f"data.preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return dict(PRESETS[name])


def _synthetic_roots(synth: Path, patients: int, seed: int, id_block: int, arm: str = MCAR
                     ) -> MimicRoots:
    if not (synth / "synth.json").is_file():
        log.info("generating synthetic MIMIC (%d patients, arm %s) in %s", patients, arm, synth)
        generate_synthetic_mimic(synth, patients=patients, seed=seed, id_block=id_block, arm=arm)
    return MimicRoots(synth / "mimic-iv", synth / "mimic-iv-note", synth / "mimic-cxr-jpg")


def _roots(data: FederationData) -> MimicRoots:
    synth = data.synth_dir()
    if synth is None:
        return MimicRoots(Path(data.mimic_iv), data.mimic_note and Path(data.mimic_note),
                          data.mimic_cxr and Path(data.mimic_cxr))
    return _synthetic_roots(synth, data.patients, data.seed, id_block=0, arm=data.arm)


def test_population_cohort(data: FederationData, progress: bool = False) -> Path | None:
    """The independent test population's cohort file (generated and built where missing; nothing
    encoded), or None without one."""
    root = data.test_population_dir()
    if root is None:
        return None
    cohort_path = root / "cohort.parquet"
    if not cohort_path.is_file():
        roots = _synthetic_roots(root / "synth", data.test_patients, data.seed,
                                 TEST_POPULATION_ID_BLOCK, data.arm)
        write_cohort(build_cohort(roots, CohortConfig(progress=progress)), cohort_path)
    return cohort_path


def prepare_test_population(data: FederationData, encoders: EncoderConfig | None = None,
                            cache_dir: Path | None = None, progress: bool = False) -> Path | None:
    """Feature cache of the independent test population (every stay in split "test"), or None."""
    cohort_path = test_population_cohort(data, progress)
    if cohort_path is None:
        return None
    samples = read_cohort(cohort_path).assign(split="test")
    return build_site_features(samples, TEST_POPULATION_SITE, encoders or data.encoder_config(),
                               cache_dir, progress=progress)


def prepare_sites(data: FederationData, encoders: EncoderConfig | None = None,
                  cache_dir: Path | None = None, progress: bool = False) -> dict[str, Path]:
    """Return ``site id -> feature cache dir`` for every site, building what is missing."""
    return encode_sites(partition_sites(data, progress), data, encoders, cache_dir, progress)


def partition_sites(data: FederationData, progress: bool = False) -> dict[str, Path]:
    """Return ``site id -> samples folder`` for every site: the cohort (generated or read from
    the MIMIC roots) cut into sites, building what is missing (nothing encoded yet)."""
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
    return {site: sites_dir / site for site in sites}


def encode_sites(samples: dict[str, Path], data: FederationData,
                 encoders: EncoderConfig | None = None, cache_dir: Path | None = None,
                 progress: bool = False) -> dict[str, Path]:
    """Return ``site id -> feature cache dir``, encoding the sites' samples where needed."""
    encoders = encoders or data.encoder_config()
    return {site: build_site_features(read_site_samples(folder), site, encoders, cache_dir,
                                      progress=progress)
            for site, folder in samples.items()}
