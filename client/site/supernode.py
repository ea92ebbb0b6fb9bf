"""``flower-supernode`` with a TLS client certificate: mutual TLS to the coordinator's proxy.

Flower 1.42's SuperNode verifies the server but cannot present a client certificate. This
launcher gives the SuperNode's Fleet API client one (the standard library's ``load_cert_chain``
on the same SSL context Flower builds), then runs Flower's own ``flower-supernode`` entry point.
``moehealth site run`` uses it when the site YAML sets ``superlink.client_certificate``::

    python -m client.site.supernode CERT KEY -- <flower-supernode arguments>
"""

from __future__ import annotations

import ssl
import sys
from pathlib import Path
from typing import Any


def install_client_certificate(cert: Path, key: Path) -> None:
    """Make every Fleet API connection of this process present ``cert`` (signed by the CA)."""
    import flwr.supernode.fleet_http_connection as connection
    from flwr.supernode.fleet_http_client import FleetHttpClient

    class MutualTLSFleetClient(FleetHttpClient):
        def __init__(self, base_url: str, *, verify: ssl.SSLContext | bool | str = True,
                     **kwargs: Any) -> None:
            if isinstance(verify, ssl.SSLContext):
                context = verify
            else:  # a CA file path, or the system's trust store
                context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
            context.load_cert_chain(str(cert), str(key))
            super().__init__(base_url, verify=context, **kwargs)

    connection.FleetHttpClient = MutualTLSFleetClient


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[2] != "--":
        print("usage: python -m client.site.supernode CERT KEY -- <flower-supernode arguments>",
              file=sys.stderr)
        return 2
    cert, key, rest = Path(args[0]), Path(args[1]), args[3:]
    try:
        ssl.create_default_context().load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as err:
        print(f"moehealth supernode: error: client certificate {cert} / key {key}: {err}",
              file=sys.stderr)
        return 2
    install_client_certificate(cert, key)
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *rest]
    result = flower_supernode()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
