"""Is this hospital's node key registered at the SuperLink? One signed Fleet call, no side effect.

Flower 1.42 has no "am I registered" call. ``ActivateNode`` is the one Fleet call a SuperNode makes
before it knows its node id: the SuperLink checks the signature (401 when it does not verify),
then looks the public key up (412 "Failed to activate SuperNode." when it is not registered), and
only then validates the heartbeat interval (400 "Invalid heartbeat interval."). The probe sends a
heartbeat interval of 0, which no SuperLink accepts, so a registered key gets the 400 and nothing
changes: the node is not activated, and a SuperNode already running stays online. The SuperLink
logs the refused call as one ERROR line.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from pathlib import Path

from client.errors import MoeHealthInputError
from client.site.config import SiteConfig

_INVALID_HEARTBEAT = 400  # the key is registered (the call got past the key lookup)
_NOT_REGISTERED = 412
_BAD_SIGNATURE = 401
_PROXY_REFUSED = 403  # the coordinator's proxy: certificate and node key not of one site


def _tls_context(config: SiteConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(config.root_certificates))
    if config.client_certificate and config.client_key:  # mutual TLS at the coordinator's proxy
        context.load_cert_chain(str(config.client_certificate), str(config.client_key))
    return context


def _load_node_key(path: Path, source: Path):  # -> ec.EllipticCurvePrivateKey
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    try:
        key = load_ssh_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise MoeHealthInputError(f"{source}: superlink.auth_private_key {path}: {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise MoeHealthInputError(f"{source}: superlink.auth_private_key {path} is not an EC key "
                                  "(make it with deploy/scripts/make-node-key.sh)")
    return key


def describe_node_key(config: SiteConfig) -> str:
    """Load the node's private key (an input error when it is not an EC key); its fingerprint."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = _load_node_key(config.auth_private_key, config.source)
    public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    digest = hashlib.sha256(base64.b64decode(public.split()[1])).digest()
    fingerprint = base64.b64encode(digest).decode().rstrip("=")
    return f"EC {key.curve.name} key, SHA256:{fingerprint} (ssh-keygen -lf on the .pub shows the same)"


def check_node_registration(config: SiteConfig, timeout: float = 10.0) -> str:
    """One signed ``ActivateNode`` probe; raise a one-line error unless the key is registered."""
    import httpx
    from flwr.proto.fleet_pb2 import ActivateNodeRequest  # pylint: disable=no-name-in-module
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes
    from flwr.supernode.fleet_http_client import FleetHttpClient
    from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

    key = _load_node_key(config.auth_private_key, config.source)
    public_key = key.public_key()
    client = FleetHttpClient(f"https://{config.superlink_address}", verify=_tls_context(config),
                             timeout=timeout,
                             interceptors=[NodeAuthHttpInterceptor(key, public_key)])
    request = ActivateNodeRequest(public_key=public_key_to_bytes(public_key), heartbeat_interval=0)
    where = f"{config.source}: SuperLink {config.superlink_address}"
    try:
        client.ActivateNode(request)
    except httpx.HTTPStatusError as err:
        status, body = err.response.status_code, err.response.text[:200]
    except httpx.HTTPError as err:
        raise MoeHealthInputError(f"{where}: {type(err).__name__}: {err}") from None
    else:  # a SuperLink that activated a node with heartbeat interval 0 is not Flower 1.42's
        raise MoeHealthInputError(f"{where} accepted a heartbeat interval of 0: unexpected "
                                  "SuperLink version")
    if status == _INVALID_HEARTBEAT and "heartbeat" in body.lower():
        return f"node key {config.auth_private_key.name} is registered (signed Fleet call accepted)"
    if status == _NOT_REGISTERED:
        raise MoeHealthInputError(f"{where} does not know node key {config.auth_private_key}: ask "
                                  "the coordinator to register its .pub file (deploy/README.md)")
    if status == _PROXY_REFUSED and "registered site" in body:
        raise MoeHealthInputError(f"{where}: the coordinator's proxy refused node key "
                                  f"{config.auth_private_key} with client certificate "
                                  f"{config.client_certificate} (403): the key is not registered, "
                                  "or is registered for another site than the certificate's name")
    if status == _INVALID_HEARTBEAT and "ssl certificate error" in body.lower():
        raise MoeHealthInputError(f"{where}: the coordinator's proxy refused client certificate "
                                  f"{config.client_certificate} (revoked, expired or not signed "
                                  "by the federation CA)")
    if status == _BAD_SIGNATURE:
        raise MoeHealthInputError(f"{where} refused the node's signature (401): is this machine's "
                                  "clock more than 5 s ahead of the SuperLink's?")
    raise MoeHealthInputError(f"{where} answered {status}: {body}")
