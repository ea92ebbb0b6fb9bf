"""A hospital site described by one YAML file, checked on load and turned into node config.

Example (deploy/examples/hospital-a.yaml)::

    site_id: hospital-a
    work_dir: /var/lib/moehealth/hospital-a   # samples, feature cache, privacy ledger
    data:                                     # MIMIC-format roots (or samples_dir)
      mimic_iv: /data/mimic-iv
      mimic_note: /data/mimic-iv-note
      mimic_cxr: /data/mimic-cxr-jpg
    modalities: [ehr, notes, cxr]
    encoders: {text_model: /models/clinicalbert, image_weights: /models/densenet121.pt}
    privacy: {enabled: true, target_epsilon: 8.0, max_grad_norm: 1.0}
    superlink:
      address: coordinator.example.org:9092
      root_certificates: /etc/moehealth/ca.crt
      auth_private_key: /etc/moehealth/hospital-a.key
      client_certificate: /etc/moehealth/hospital-a.crt   # mutual TLS at the proxy (optional)
      client_key: /etc/moehealth/hospital-a.tls.key
    runtime_port: 9094                        # the SuperNode's local API, loopback only
    min_cell_size: 10                         # no value derived from fewer patients is sent
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from client.errors import MoeHealthInputError, closest_key_hint
from client.privacy.settings import SETTINGS as DP_SETTINGS
from client.privacy.settings import SITE_YAML, DPSettings
from shared_model.modalities import Modality
from shared_model.protocol import MIN_CELL_SIZE, ConfigValue
from shared_model.protocol import NodeConfigKey as K

_SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _readable(path: str | None, what: str, source: Path, directory: bool = False) -> Path | None:
    if not path:
        return None
    p = Path(os.path.expanduser(str(path)))
    ok = p.is_dir() if directory else p.is_file()
    if not ok or not os.access(p, os.R_OK):
        kind = "directory" if directory else "file"
        raise MoeHealthInputError(f"{source}: {what} '{p}' is not a readable {kind}")
    return p


@dataclass(frozen=True)
class SiteConfig:
    """Validated site configuration (see module docstring)."""

    source: Path
    site_id: str
    work_dir: Path
    mimic_iv: Path | None
    mimic_note: Path | None
    mimic_cxr: Path | None
    samples_dir: Path | None
    modalities: tuple[str, ...]
    text_model: Path | None
    image_weights: Path | None
    privacy: DPSettings
    superlink_address: str
    root_certificates: Path
    auth_private_key: Path
    runtime_port: int
    min_cell_size: int = MIN_CELL_SIZE
    client_certificate: Path | None = None  # TLS client certificate (mutual TLS at the proxy)
    client_key: Path | None = None

    @property
    def site_dir(self) -> Path:
        """Where the SuperNode's ClientApp finds ``samples.parquet`` (prepared or given)."""
        return self.samples_dir or self.work_dir / "site"

    @classmethod
    def load(cls, path: Path) -> SiteConfig:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as err:
            raise MoeHealthInputError(f"{path}: cannot read site config ({err})") from None
        except yaml.YAMLError as err:
            raise MoeHealthInputError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(raw, dict):
            raise MoeHealthInputError(f"{path}: a site config must be a mapping")
        return cls.from_mapping(raw, path)

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], source: Path) -> SiteConfig:
        _check_keys(raw, source)
        site_id = str(raw.get("site_id", ""))
        if not _SITE_ID.match(site_id):
            raise MoeHealthInputError(f"{source}: site_id '{site_id}' must be 1-63 letters, digits, "
                                      "'-', '_' or '.'")
        data = raw.get("data") or {}
        samples_dir = _readable(data.get("samples_dir"), "data.samples_dir", source, directory=True)
        mimic_iv = _readable(data.get("mimic_iv"), "data.mimic_iv", source, directory=True)
        if not (samples_dir or mimic_iv):
            raise MoeHealthInputError(f"{source}: set data.mimic_iv (MIMIC-format root) or "
                                      "data.samples_dir (prepared samples)")
        try:
            modalities = tuple(Modality.parse(str(m)).value
                               for m in raw.get("modalities", ["ehr", "notes", "cxr"]))
        except ValueError as err:
            raise MoeHealthInputError(f"{source}: modalities: {err}") from None
        if "ehr" not in modalities:
            raise MoeHealthInputError(f"{source}: modalities must include 'ehr'")
        try:
            dp = DPSettings.from_mapping(raw.get("privacy") or {}, SITE_YAML)
        except MoeHealthInputError as err:
            raise MoeHealthInputError(f"{source}: {err}") from None
        if dp.without_noise:
            raise MoeHealthInputError(f"{source}: privacy.target_epsilon: inf trains without noise "
                                      "(no privacy guarantee); it is for simulation measurements "
                                      "only, set a finite budget")
        link = raw.get("superlink") or {}
        address = str(link.get("address", ""))
        if not re.match(r"^[^:\s]+:\d{1,5}$", address):
            raise MoeHealthInputError(f"{source}: superlink.address must be HOST:PORT, got '{address}'")
        work_dir = Path(os.path.expanduser(str(raw.get("work_dir", ""))))
        if not str(raw.get("work_dir", "")):
            raise MoeHealthInputError(f"{source}: work_dir is required")
        return cls(
            source=source, site_id=site_id, work_dir=work_dir, mimic_iv=mimic_iv,
            mimic_note=_readable(data.get("mimic_note"), "data.mimic_note", source, True),
            mimic_cxr=_readable(data.get("mimic_cxr"), "data.mimic_cxr", source, True),
            samples_dir=samples_dir, modalities=modalities,
            text_model=_readable((raw.get("encoders") or {}).get("text_model"),
                                 "encoders.text_model", source, True),
            image_weights=_readable((raw.get("encoders") or {}).get("image_weights"),
                                    "encoders.image_weights", source),
            privacy=dp, superlink_address=address,
            root_certificates=_readable(link.get("root_certificates"), "superlink.root_certificates",
                                        source) or _missing(source, "superlink.root_certificates"),
            auth_private_key=_readable(link.get("auth_private_key"), "superlink.auth_private_key",
                                       source) or _missing(source, "superlink.auth_private_key"),
            runtime_port=_port(raw.get("runtime_port", 9094), source),
            min_cell_size=_min_cell_size(raw.get("min_cell_size", MIN_CELL_SIZE), source),
            **_client_certificate(link, source))

    def node_config(self, feature_dir: Path | None = None) -> dict[str, ConfigValue]:
        """What the ClientApp reads from ``context.node_config`` (``feature-dir``: the cache that
        ``moehealth site run`` prepared, so each round skips re-validating it)."""
        out: dict[str, ConfigValue] = {
            K.SITE_ID: self.site_id, K.DATA_DIR: str(self.site_dir),
            K.CACHE_DIR: str(self.work_dir / "cache"),
            K.PRIVACY_DIR: str(self.work_dir / "privacy"), K.STATE_DIR: str(self.work_dir),
            K.MODALITIES: ",".join(self.modalities), K.MIN_CELL_SIZE: self.min_cell_size,
            **self.privacy.node_config(),
        }
        if feature_dir:
            out[K.FEATURE_DIR] = str(feature_dir)
        if self.text_model:
            out[K.TEXT_MODEL] = str(self.text_model)
        if self.image_weights:
            out[K.IMAGE_WEIGHTS] = str(self.image_weights)
        return out

    def node_config_toml(self, feature_dir: Path | None = None) -> str:
        """``--node-config`` argument of flower-supernode (TOML values)."""
        def value(v):
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, int | float):
                return repr(v)
            return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
        return " ".join(f"{k}={value(v)}" for k, v in self.node_config(feature_dir).items())

    def supernode_command(self, executable: str = "flower-supernode",
                          feature_dir: Path | None = None) -> list[str]:
        """The SuperNode process: outbound TLS to the SuperLink, local API on loopback only; with a
        client certificate, through the mutual-TLS launcher (client/site/supernode.py)."""
        launcher = ([sys.executable, "-m", "client.site.supernode", str(self.client_certificate),
                     str(self.client_key), "--"] if self.client_certificate else [executable])
        return [*launcher, "--superlink", self.superlink_address,
                "--root-certificates", str(self.root_certificates),
                "--auth-supernode-private-key", str(self.auth_private_key),
                "--node-config", self.node_config_toml(feature_dir),
                "--host", "127.0.0.1", "--port", str(self.runtime_port)]


_SECTIONS: dict[str, tuple[str, ...] | None] = {  # key -> its sub-keys (None: a plain value)
    "site_id": None, "work_dir": None, "modalities": None, "runtime_port": None,
    "min_cell_size": None,
    "data": ("mimic_iv", "mimic_note", "mimic_cxr", "samples_dir"),
    "encoders": ("text_model", "image_weights"),
    "privacy": tuple(SITE_YAML.key(s.name) for s in DP_SETTINGS),
    "superlink": ("address", "root_certificates", "auth_private_key", "client_certificate",
                  "client_key"),
}


def _check_keys(raw: dict[str, Any], source: Path) -> None:
    """Unknown keys are an error naming the key and the closest valid one (a typo such as
    ``privacy: {enabeld: true}`` must not silently run without DP)."""
    def refuse(key: str, valid: tuple[str, ...], where: str = "") -> None:
        raise MoeHealthInputError(f"{source}: unknown key '{where}{key}'"
                                  + closest_key_hint(key, valid, where))

    for key, value in raw.items():
        if key not in _SECTIONS:
            refuse(str(key), tuple(_SECTIONS))
        sub = _SECTIONS[key]
        if sub is None or value is None:
            continue
        if not isinstance(value, dict):
            raise MoeHealthInputError(f"{source}: '{key}' must be a mapping of {', '.join(sub)}")
        for inner in value:
            if inner not in sub:
                refuse(str(inner), sub, f"{key}.")


def _client_certificate(link: dict[str, Any], source: Path) -> dict[str, Path | None]:
    cert = _readable(link.get("client_certificate"), "superlink.client_certificate", source)
    key = _readable(link.get("client_key"), "superlink.client_key", source)
    if bool(cert) != bool(key):
        raise MoeHealthInputError(f"{source}: superlink.client_certificate and superlink.client_key "
                                  "go together (mutual TLS): set both or neither")
    return {"client_certificate": cert, "client_key": key}


def _missing(source: Path, key: str):
    raise MoeHealthInputError(f"{source}: {key} is required")


def _port(value: Any, source: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise MoeHealthInputError(f"{source}: runtime_port must be a port number (1-65535), got "
                                  f"{value!r}")
    return value


def _min_cell_size(value: Any, source: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MoeHealthInputError(f"{source}: min_cell_size must be an integer >= 1 (default "
                                  f"{MIN_CELL_SIZE}), got {value!r}")
    return value
