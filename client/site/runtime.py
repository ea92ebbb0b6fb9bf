"""Who this site is and where its features are, from the node config only.

Deployment: node config ``site-id`` and ``data-dir`` (a folder with the site's
``samples.parquet``), optional ``feature-dir``, ``cache-dir``, ``privacy-dir``, ``state-dir``
(site-local logs; deployment: the site's work_dir, so its input folders stay read-only), ``text-model``,
``image-weights`` (keys: :class:`NodeConfigKey`) and the site's own ``dp-*`` settings
(client/privacy/settings.py).
Simulation: ``partition-id`` picks the site's entry of the sites manifest, which has the same keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from client.errors import SiteDataError, closest_key_hint
from client.privacy.settings import NODE_CONFIG, DPSettings, node_config_keys
from client.site.manifest import simulated_node_config
from shared_model.modalities import MODALITIES, Modality
from shared_model.protocol import MIN_CELL_SIZE, ConfigValue, NodeConfigKey


@dataclass(frozen=True)
class SiteRuntime:
    """A site's identity, features and its own DP settings (with where its budget is kept)."""

    site_id: str
    feature_dir: Path
    privacy_dir: Path
    dp: DPSettings = DPSettings()
    modalities: tuple[str, ...] = tuple(m.value for m in MODALITIES)  # as the site declares
    min_cell_size: int = MIN_CELL_SIZE  # no value derived from fewer patients leaves the site
    data_dir: Path | None = None  # the site's samples folder (an input: never written)
    state_dir: Path | None = None  # where site-local logs go (deployment: the site's work_dir)


def resolve_site(node_config: Mapping[str, ConfigValue], sites_manifest: str = "") -> SiteRuntime:
    """Identify the site and make sure its feature cache exists."""
    if NodeConfigKey.PARTITION_ID in node_config:
        node_config = simulated_node_config(node_config, sites_manifest)
    valid = [k.value for k in NodeConfigKey] + list(node_config_keys())
    for key in node_config:
        if key not in valid:
            raise SiteDataError(f"node config: unknown key '{key}'" + closest_key_hint(str(key), valid))
    if NodeConfigKey.SITE_ID not in node_config:
        raise SiteDataError(f"node config lacks '{NodeConfigKey.SITE_ID}' (keys: "
                            f"{', '.join(sorted(node_config)) or 'none'})")
    site = str(node_config[NodeConfigKey.SITE_ID])
    data_dir = Path(str(node_config.get(NodeConfigKey.DATA_DIR, "")))
    if not data_dir.is_dir():
        raise SiteDataError(f"site '{site}': {NodeConfigKey.DATA_DIR} '{data_dir}' is not a directory")
    declared = str(node_config.get(NodeConfigKey.MODALITIES) or ",".join(m.value for m in MODALITIES))
    try:
        modalities = tuple(Modality.parse(m).value for m in declared.split(","))
    except ValueError as err:
        raise SiteDataError(f"site '{site}': node config '{NodeConfigKey.MODALITIES}': {err}") from None
    min_cell = node_config.get(NodeConfigKey.MIN_CELL_SIZE, MIN_CELL_SIZE)
    if isinstance(min_cell, bool) or not isinstance(min_cell, int) or min_cell < 1:
        raise SiteDataError(f"site '{site}': node config '{NodeConfigKey.MIN_CELL_SIZE}' must be an "
                            f"integer >= 1, got {min_cell!r}")
    return SiteRuntime(site, _feature_dir(site, data_dir, node_config),
                       Path(str(node_config.get(NodeConfigKey.PRIVACY_DIR) or data_dir / "privacy")),
                       DPSettings.from_mapping(node_config, NODE_CONFIG), modalities,
                       min_cell, data_dir,
                       state_dir(node_config))


def state_dir(node_config: Mapping[str, ConfigValue]) -> Path:
    """The site's writable folder: ``state-dir``, by default its ``data-dir``."""
    return Path(str(node_config.get(NodeConfigKey.STATE_DIR)
                    or node_config.get(NodeConfigKey.DATA_DIR, "")))


def _feature_dir(site: str, data_dir: Path, node_config: Mapping[str, ConfigValue]) -> Path:
    prepared = Path(str(node_config.get(NodeConfigKey.FEATURE_DIR, "")))
    if node_config.get(NodeConfigKey.FEATURE_DIR) and (prepared / "manifest.json").is_file():
        return prepared  # validated when the site was prepared
    from client.data.sites import read_site_samples  # pandas: only when features are missing
    from client.features.cache import EncoderConfig, build_site_features

    encoders = EncoderConfig(text_model_path=node_config.get(NodeConfigKey.TEXT_MODEL) or None,
                             image_weights=node_config.get(NodeConfigKey.IMAGE_WEIGHTS) or None)
    cache = node_config.get(NodeConfigKey.CACHE_DIR)
    return build_site_features(read_site_samples(data_dir), site, encoders,
                               Path(str(cache)) if cache else None, progress=False)
