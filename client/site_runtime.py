"""Who this site is and where its features are, from the node config only.

Deployment: node config ``site-id`` and ``data-dir`` (a folder with the site's
``samples.parquet``), optional ``cache-dir``, ``text-model``, ``image-weights``.
Simulation: ``partition-id`` picks the n-th virtual site of the run-config's ``data.*`` set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.errors import SiteDataError
from client.features.cache import EncoderConfig, build_site_features
from client.privacy import DPSettings
from client.sites import read_site_samples


@dataclass(frozen=True)
class SiteRuntime:
    """A site's identity, features and its own DP settings (with where its budget is kept)."""

    site_id: str
    feature_dir: Path
    dp: DPSettings = DPSettings()
    privacy_dir: Path | None = None  # deployment: durable accountant + ledger; None: context


def _simulated_dp(run_config: dict[str, Any], site: str) -> DPSettings:
    """In simulation the run-config stands in for each hospital's own DP file:
    ``dp.enabled`` applies to the sites listed in ``dp.sites`` ("all" or "site-0,site-2")."""
    settings = DPSettings.from_mapping(run_config)
    chosen = str(run_config.get("dp.sites", "all") or "all")
    if settings.enabled and chosen != "all" and site not in chosen.split(","):
        return DPSettings(enabled=False)
    return settings


def resolve_site(node_config: dict[str, Any], run_config: dict[str, Any]) -> SiteRuntime:
    """Identify the site and make sure its feature cache exists."""
    if "site-id" in node_config:
        site = str(node_config["site-id"])
        data_dir = Path(str(node_config.get("data-dir", "")))
        if not data_dir.is_dir():
            raise SiteDataError(f"site '{site}': data-dir '{data_dir}' is not a directory")
        prepared = Path(str(node_config.get("feature-dir", "")))
        if node_config.get("feature-dir") and (prepared / "manifest.json").is_file():
            feature_dir = prepared  # validated by `moehealth site run` when the node started
        else:
            encoders = EncoderConfig(text_model_path=node_config.get("text-model") or None,
                                     image_weights=node_config.get("image-weights") or None)
            cache = node_config.get("cache-dir")
            feature_dir = build_site_features(read_site_samples(data_dir), site, encoders,
                                              Path(cache) if cache else None, progress=False)
        privacy_dir = Path(str(node_config.get("privacy-dir") or data_dir / "privacy"))
        return SiteRuntime(site, feature_dir, DPSettings.from_mapping(node_config, prefix="dp-"),
                           privacy_dir)
    from simulation.prepare import FederationData, prepared_sites

    data = FederationData.from_run_config(run_config)
    partitions = int(node_config["num-partitions"])
    if partitions != data.num_sites:
        raise SiteDataError(
            f"the simulation has {partitions} SuperNodes but data.num-sites = {data.num_sites}: "
            f"run with --federation-config 'num-supernodes={data.num_sites}' or set "
            f"-c 'data.num-sites={partitions}'")
    sites = prepared_sites(data)
    site = list(sites)[int(node_config["partition-id"])]
    return SiteRuntime(site, sites[site], _simulated_dp(run_config, site))
