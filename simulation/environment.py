"""What a simulated run adds to the coordinator: virtual sites prepared and described in a sites
manifest (one deployment-shaped node config per site), and the pooled test evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from client.data.dataset import SiteData, concat_sites
from client.privacy.settings import DPSettings
from client.rounds.evaluation import evaluate_predictions
from client.rounds.training import predict, resolve_device
from client.site.manifest import MANIFEST_NAME, write_manifest
from server.app import PooledEvaluate, SimulatedSites
from shared_model import ModelConfig, build_model
from shared_model.config import model_config_from_run_config
from shared_model.params import load_arrays
from shared_model.protocol import ConfigValue, NodeConfigKey, pooled_key
from shared_model.run_config import DP_PREFIX, TASK
from simulation.prepare import FederationData, prepare_sites

DP_SITES = "dp.sites"  # simulation only: "all" or a comma list of the sites that run DP


def simulated_dp(run_config: dict[str, Any], site: str) -> DPSettings:
    """In simulation the run-config stands in for each hospital's own DP settings:
    ``dp.enabled`` applies to the sites listed in ``dp.sites`` ("all" or "site-0,site-2")."""
    settings = DPSettings.from_mapping(run_config, prefix=DP_PREFIX)
    chosen = str(run_config.get(DP_SITES, "all") or "all")
    if settings.enabled and chosen != "all" and site not in chosen.split(","):
        return DPSettings(enabled=False)
    return settings


def site_node_config(site: str, samples_dir: Path, feature_dir: Path, run_dir: Path,
                     dp: DPSettings) -> dict[str, ConfigValue]:
    """What a hospital's node config would say for this virtual site."""
    return {NodeConfigKey.SITE_ID: site, NodeConfigKey.DATA_DIR: str(samples_dir),
            NodeConfigKey.FEATURE_DIR: str(feature_dir),
            NodeConfigKey.PRIVACY_DIR: str(run_dir / "sites" / site),  # a resume continues it
            **dp.node_config()}


def pooled_evaluator(sites: dict[str, Path], task: str, model_config: ModelConfig
                     ) -> PooledEvaluate:
    """AUROC/AUPRC/F1/loss of a global model on the pooled test split of all virtual sites."""
    pooled = concat_sites([SiteData.load(d, task, s) for s, d in sites.items()])
    test = pooled.subset("test")
    device = resolve_device()

    def evaluate(arrays: dict[str, np.ndarray]) -> dict[str, float]:
        model = build_model(model_config)
        load_arrays(model, arrays)
        result = evaluate_predictions(predict(model.to(device), test, device))
        return {pooled_key(k): float(result[k]) for k in ("auroc", "auprc", "f1", "loss", "n")}

    return evaluate


def simulated_sites(run_config: dict[str, Any], run_dir: Path) -> SimulatedSites:
    """Prepare (or reuse) the virtual sites, write the sites manifest into the run directory."""
    data = FederationData.from_run_config(run_config)
    features = prepare_sites(data)
    nodes = [site_node_config(site, data.sites_dir() / site, path, run_dir,
                              simulated_dp(run_config, site)) for site, path in features.items()]
    manifest = write_manifest(run_dir / MANIFEST_NAME, nodes)
    evaluate = pooled_evaluator(features, str(run_config[TASK]),
                                model_config_from_run_config(run_config))
    return SimulatedSites(str(manifest), evaluate)
