"""The sites manifest: in simulation, the node config of each virtual site, by partition id.

Flower gives a simulated SuperNode only ``partition-id`` and ``num-partitions``. The ServerApp's
simulation environment prepares every virtual site and writes this manifest (one deployment-shaped
node config per site, see :class:`~shared_model.protocol.NodeConfigKey`); the ClientApp reads its
entry and from then on runs exactly as a deployed hospital does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from client.errors import SiteDataError
from shared_model.protocol import ConfigValue, NodeConfigKey

MANIFEST_NAME = "sites.json"


def write_manifest(path: Path, sites: Sequence[Mapping[str, ConfigValue]]) -> Path:
    """Write the node configs of the virtual sites (partition order), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"sites": [dict(s) for s in sites]}, indent=2))
    os.replace(tmp, path)
    return path


def read_manifest(path: str | Path) -> list[dict[str, ConfigValue]]:
    """The node configs of a sites manifest, in partition order."""
    if not str(path):
        raise SiteDataError("this simulated SuperNode was sent no sites manifest: the ServerApp "
                            "writes one before round 1 (is the run's `simulation` key false?)")
    try:
        sites = json.loads(Path(path).read_text())["sites"]
    except FileNotFoundError:
        raise SiteDataError(f"{path}: sites manifest not found (the ServerApp writes it before "
                            "round 1)") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SiteDataError(f"{path}: unreadable sites manifest ({err})") from None
    return sites


def simulated_node_config(node_config: Mapping[str, ConfigValue], manifest: str | Path
                          ) -> dict[str, ConfigValue]:
    """The node config of the virtual site that this simulated SuperNode plays."""
    sites = read_manifest(manifest)
    partitions = int(node_config[NodeConfigKey.NUM_PARTITIONS])
    if partitions != len(sites):
        raise SiteDataError(
            f"the simulation has {partitions} SuperNodes but data.num-sites = {len(sites)}: run "
            f"with --federation-config 'num-supernodes={len(sites)}' or set "
            f"-c 'data.num-sites={partitions}'")
    return dict(sites[int(node_config[NodeConfigKey.PARTITION_ID])])
