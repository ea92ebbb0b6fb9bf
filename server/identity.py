"""Who sent a reply. In deployment the coordinator keeps a site registry (authenticated node id ->
site name, written when the hospital's key is registered: ``moehealth coordinator register``);
records are keyed by the registered name, and a node that claims another name is rejected. In
simulation (no registry) the name a node declares is used.

Registry file (JSON): ``{"sites": {"<node id>": "<site name>"}, "public_keys": {"<site name>":
"<key>"}}``; ``<key>`` is the value of the ``flwr-public-key`` header the site's SuperNode signs
every Fleet call with (base64 of its public key, PEM), from which the coordinator's proxy binds a
hospital's TLS client certificate to its node key (:func:`proxy_node_key_map`).
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

from flwr.app import Message

from server.flower_io import declared_site
from shared_model.errors import MoeHealthInputError

SITE_NAME = re.compile(r"[A-Za-z0-9._-]+")  # also a TLS certificate's CN and an nginx map key


def _read(path: Path) -> tuple[dict[int, str], dict[str, str]]:
    """(node id -> site name, site name -> its node key as Flower's ``flwr-public-key`` header
    carries it); a missing or malformed file is an input error naming it."""
    try:
        raw = json.loads(Path(path).read_text())
        sites = {int(node): str(site) for node, site in raw["sites"].items()}
        keys = raw.get("public_keys", {})
    except FileNotFoundError:
        raise MoeHealthInputError(f"{path}: site registry not found") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise MoeHealthInputError(f"{path}: not a site registry ({err})") from None
    if not isinstance(keys, dict):
        raise MoeHealthInputError(f"{path}: not a site registry ('public_keys' is not a mapping)")
    return sites, {str(site): str(key) for site, key in keys.items()}


def read_registry(path: Path) -> dict[int, str]:
    """node id -> site name; a missing or malformed file is an input error naming it."""
    return _read(path)[0]


def node_key_header(public_key_file: Path) -> str:
    """The ``flwr-public-key`` header value of a SuperNode whose OpenSSH public key is given:
    base64 of the key's PEM (SubjectPublicKeyInfo), exactly as Flower 1.42's SuperNode sends it."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_ssh_public_key,
    )

    try:
        key = load_ssh_public_key(Path(public_key_file).read_bytes())
    except (OSError, ValueError, TypeError) as err:
        raise MoeHealthInputError(f"{public_key_file}: not an OpenSSH public key ({err})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise MoeHealthInputError(f"{public_key_file}: not an EC key (make-node-key.sh makes one)")
    pem = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(pem).decode("ascii")


def register_site(path: Path, node_id: int, site: str, public_key: str | None = None) -> None:
    """Add (or move) ``site`` to ``node_id`` with its node key header value; one node per site
    name (atomic write)."""
    if not SITE_NAME.fullmatch(site):
        raise MoeHealthInputError(f"site name '{site}': use letters, digits, '.', '_' and '-' "
                                  "(it is the CN of the hospital's TLS certificate)")
    path = Path(path)
    sites, keys = _read(path) if path.exists() else ({}, {})
    sites = {n: s for n, s in sites.items() if s != site}  # a re-registered site moves
    sites[int(node_id)] = site
    if public_key is not None:
        keys[site] = public_key
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"sites": {str(n): s for n, s in sorted(sites.items())},
                               "public_keys": dict(sorted(keys.items()))}, indent=2))
    os.replace(tmp, path)


def proxy_node_key_map(path: Path) -> str:
    """Entries of the proxy's nginx ``map`` from "<certificate CN> <flwr-public-key>" to 1: a
    Fleet call passes only when its node key is the one registered for the site named in its
    TLS client certificate (deploy/nginx/moehealth-proxy.conf.template)."""
    sites, keys = _read(path)
    lines = ["# rendered from the site registry by `moehealth coordinator proxy-map`"]
    for site in sorted(set(sites.values())):
        key = keys.get(site)
        if key is None:
            raise MoeHealthInputError(f"{path}: no node key recorded for site '{site}' (registered "
                                      "before keys were recorded): run `moehealth coordinator "
                                      "register` for it again")
        if not SITE_NAME.fullmatch(site) or not re.fullmatch(r"[A-Za-z0-9+/=]+", key):
            raise MoeHealthInputError(f"{path}: site '{site}' has a malformed name or key")
        lines.append(f'"{site} {key}" 1;')
    return "\n".join(lines) + "\n"


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

    def identify_all(self, replies: list[Message]) -> list[tuple[Message, str, str | None]]:
        """(reply, site name, why refused or None) for a round's replies. A name claimed by
        more than one node in the round is refused for all of them: without a registry the
        coordinator cannot tell which one is the site (with one, names are registered)."""
        named = [(msg, *self.identify(msg)) for msg in replies]
        nodes: dict[str, list[int]] = {}
        for msg, site, refused in named:
            if refused is None:
                nodes.setdefault(site, []).append(msg.metadata.src_node_id)
        out = []
        for msg, site, refused in named:
            claimants = nodes.get(site, [])
            if refused is None and len(claimants) > 1:
                refused = (f"site-id '{site}' is claimed by nodes {', '.join(map(str, claimants))} "
                           "in the same round; none is accepted (register the sites: "
                           "site-registry)")
            out.append((msg, site, refused))
        return out

    def name(self, node_id: int) -> str:
        registered = (self.registry or {}).get(node_id)
        return registered or self.seen.get(node_id, f"node-{node_id}")
