"""Prepare and check a hospital site from its YAML: cohort -> samples -> features -> SuperLink."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from client.data.sites import (
    SplitConfig,
    assign_splits,
    drop_modalities,
    read_site_samples,
    write_site_samples,
)
from client.errors import MoeHealthInputError
from client.features.cache import EncoderConfig, build_site_features
from client.mimic.cohort import MimicRoots, build_cohort
from client.mimic.config import CohortConfig
from client.site.config import SiteConfig
from client.site.registration import check_node_registration, describe_node_key


def prepare_site(config: SiteConfig, progress: bool = True) -> Path:
    """Build the site's samples (when from MIMIC roots) and feature cache; return the cache dir.
    The YAML's ``modalities`` hold for prepared samples (``samples_dir``) too: what the site does
    not declare is removed before encoding."""
    missing = [m for m in ("notes", "cxr") if m not in config.modalities]
    if config.samples_dir is None:
        path = config.site_dir / "samples.parquet"
        if not path.is_file():
            cohort = build_cohort(MimicRoots(config.mimic_iv, config.mimic_note, config.mimic_cxr),
                                  CohortConfig(progress=progress))
            samples = assign_splits(cohort, SplitConfig(), site=config.site_id)
            samples = drop_modalities(samples, missing)
            samples.attrs = cohort.attrs
            write_site_samples(samples, config.site_dir)
    encoders = EncoderConfig(text_model_path=str(config.text_model) if config.text_model else None,
                             image_weights=str(config.image_weights) if config.image_weights else None)
    samples = read_site_samples(config.site_dir)
    if missing:
        attrs = samples.attrs
        samples = drop_modalities(samples, missing)
        samples.attrs = attrs
    return build_site_features(samples, config.site_id, encoders, config.work_dir / "cache",
                               progress=progress)


def check_client_certificate(config: SiteConfig) -> str:
    """The mutual-TLS certificate and key load and belong together (one line if not)."""
    if not (config.client_certificate and config.client_key):
        return "none (the coordinator's proxy does not ask for one)"
    try:
        ssl.create_default_context().load_cert_chain(str(config.client_certificate),
                                                     str(config.client_key))
    except ssl.SSLError as err:
        raise MoeHealthInputError(f"{config.source}: superlink.client_certificate "
                                  f"{config.client_certificate} and superlink.client_key "
                                  f"{config.client_key} do not load as a pair: "
                                  f"{err.reason or err}") from None
    return f"{config.client_certificate} with its key"


def check_superlink(config: SiteConfig, timeout: float = 5.0) -> str:
    """Open a TLS connection to the SuperLink, verifying its certificate with the site's CA."""
    host, port = config.superlink_address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(config.root_certificates))
    if config.client_certificate and config.client_key:  # mutual TLS at the coordinator's proxy
        context.load_cert_chain(str(config.client_certificate), str(config.client_key))
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                return f"TLS {tls.version()} to {config.superlink_address}, certificate verified"
    except ssl.SSLError as err:
        raise MoeHealthInputError(f"{config.source}: TLS to {config.superlink_address} failed: "
                                  f"{err.reason or err}") from None
    except OSError as err:
        raise MoeHealthInputError(f"{config.source}: cannot reach SuperLink "
                                  f"{config.superlink_address}: {err}") from None


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    input_error: bool = False  # the site's own files (config, data) are wrong, not the network


def check_site(path: Path, connect: bool = True) -> list[CheckResult]:
    """Every check of ``moehealth site check``, stopping at the first failure."""
    results: list[CheckResult] = []

    def step(name: str, fn: Callable[[], str], input_check: bool = True) -> bool:
        try:
            results.append(CheckResult(name, True, fn()))
            return True
        except MoeHealthInputError as err:
            results.append(CheckResult(name, False, str(err), input_error=input_check))
            return False

    holder: dict[str, SiteConfig] = {}

    def load() -> str:
        holder["config"] = SiteConfig.load(path)
        c = holder["config"]
        dp = "on" if c.privacy.enabled else "off"
        return f"site {c.site_id}, modalities {'+'.join(c.modalities)}, DP {dp}"

    def features() -> str:
        cache = prepare_site(holder["config"], progress=False)
        samples = read_site_samples(holder["config"].site_dir)
        splits = ", ".join(f"{k} {v}" for k, v in samples["split"].value_counts().items())
        return f"{len(samples)} samples ({splits}); features in {cache}"

    # every file and key first: a wrong one must not wait behind minutes of feature encoding
    if step("config", load) and step("node key", lambda: describe_node_key(holder["config"])) and \
            step("TLS client certificate", lambda: check_client_certificate(holder["config"])) and \
            step("data, cohort and features", features) and connect and \
            step("SuperLink connection", lambda: check_superlink(holder["config"]), input_check=False):
        step("node key registered", lambda: check_node_registration(holder["config"]),
             input_check=False)
    return results
