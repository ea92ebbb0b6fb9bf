"""Who sent a reply. In deployment the coordinator keeps a site registry (authenticated node id ->
site name, written when the hospital's key is registered: ``moehealth coordinator register``);
records are keyed by the registered name, and a node that claims another name is rejected. In
simulation (no registry) the name a node declares is used.

Registry file (JSON): ``{"sites": {"<node id>": "<site name>"}}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from flwr.app import Message

from server.flower_io import declared_site
from shared_model.errors import MoeHealthInputError


def read_registry(path: Path) -> dict[int, str]:
    """node id -> site name; a missing or malformed file is an input error naming it."""
    try:
        raw = json.loads(Path(path).read_text())
        return {int(node): str(site) for node, site in raw["sites"].items()}
    except FileNotFoundError:
        raise MoeHealthInputError(f"{path}: site registry not found") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise MoeHealthInputError(f"{path}: not a site registry ({err})") from None


def register_site(path: Path, node_id: int, site: str) -> None:
    """Add (or move) ``site`` to ``node_id``; one node per site name (atomic write)."""
    path = Path(path)
    sites = read_registry(path) if path.exists() else {}
    sites = {n: s for n, s in sites.items() if s != site}  # a re-registered site moves
    sites[int(node_id)] = site
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"sites": {str(n): s for n, s in sorted(sites.items())}}, indent=2))
    os.replace(tmp, path)


class SiteIdentity:
    """Names the sender of each reply (see the module docstring)."""

    def __init__(self, registry: dict[int, str] | None = None) -> None:
        self.registry = registry
        self.seen: dict[int, str] = {}  # node id -> name, from replies (names silent nodes)

    @classmethod
    def from_setting(cls, registry_path: str) -> SiteIdentity:
        return cls(read_registry(Path(registry_path)) if registry_path else None)

    def identify(self, msg: Message) -> tuple[str, str | None]:
        """(site name, why the reply is refused or None)."""
        node, declared = msg.metadata.src_node_id, declared_site(msg)
        if self.registry is None:
            self.seen[node] = declared
            return declared, None
        registered = self.registry.get(node)
        if registered is None:
            return f"node-{node}", f"node {node} is not in the coordinator's site registry"
        self.seen[node] = registered
        if declared not in (registered, f"node-{node}"):
            return registered, (f"node {node} is registered as '{registered}' but claims to be "
                                f"'{declared}'")
        return registered, None

    def name(self, node_id: int) -> str:
        registered = (self.registry or {}).get(node_id)
        return registered or self.seen.get(node_id, f"node-{node_id}")
