"""The coordinator's hospital-facing proxy (nginx from Debian's packages), with real processes on
loopback: only the Fleet API passes, so someone holding ca.crt cannot list nodes, register a key or
start a run; with mutual TLS, a hospital without a client certificate is refused; Fleet calls meet
the SuperLink's node authentication behind it.
(A registered SuperNode training to the end through the proxy: tests/test_deployment.py.)"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import time
from pathlib import Path

import pytest

from client.errors import MoeHealthInputError
from client.site.config import SiteConfig
from client.site.registration import check_node_registration
from tests.test_deployment import REPO, reh

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("nginx") is None,
                                 reason="nginx is not installed (.ci/run installs nginx-light)")]


def _post(port: int, path: str, ca: Path, cert: tuple[Path, Path] | None = None,
          method: str = "POST") -> int:
    """HTTP status of one raw request (the path sent exactly as written, no normalization)."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert:
        context.load_cert_chain(*map(str, cert))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
                    "Content-Type: application/protobuf\r\n"
                    "Connection: close\r\n\r\n".encode())
        return int(tls.recv(4096).split(b" ", 2)[1])


def test_only_the_fleet_api_is_reachable_from_hospitals(tmp_path: Path, hospital_data) -> None:
    with reh.rehearsal(tmp_path) as r:
        r.coordinator(proxy=True, mtls=True)
        r.start_proxy("open-proxy", mtls=False)  # the same path filter, no client certificates
        rogue_keys = tmp_path / "rogue"
        r.sh(str(reh.SCRIPTS / "make-node-key.sh"), str(rogue_keys), "rogue")
        attempts = [("open-proxy", ["supernode", "list", "rogue"]), ("open-proxy", ["ls", "rogue"]),
                    ("open-proxy", ["supernode", "register", str(rogue_keys / "rogue.key.pub"),
                                    "rogue"]),
                    ("open-proxy", ["run", str(REPO), "rogue"]),
                    ("proxy", ["supernode", "list", "rogue"])]
        for proxy, args in attempts:  # the real flwr CLI, holding only ca.crt
            done = r.rogue(*args, proxy=proxy)
            assert done.returncode != 0, (proxy, args, done.stdout[-500:])
        assert r.nodes() == []  # checked by the operator on loopback: the rogue registered nothing

        registered = r.hospital("hospital-0", hospital_data[0])  # with a signed client certificate
        assert "is registered" in check_node_registration(SiteConfig.load(registered))
        unknown = r.hospital("hospital-x", hospital_data[0], register=False)
        with pytest.raises(MoeHealthInputError, match="does not know node key .*hospital-x.key"):
            check_node_registration(SiteConfig.load(unknown))
        keys, ca = tmp_path / "hospitals" / "hospital-0", tmp_path / "ca" / "ca.crt"
        cert = (keys / "hospital-0.crt", keys / "hospital-0.tls.key")
        port = r.proxies["proxy"]
        for path in ("/v1/control/list-nodes", "/v1/fleet/../control/list-nodes",
                     "/v1/fleet/%2e%2e/control/list-nodes", "/v1/fleet/pull-messages?x=1",
                     "/v1/runtime/get-run", "/"):
            assert _post(port, path, ca, cert) in (400, 403), path  # a hospital's certificate
        assert _post(port, "/v1/fleet/pull-messages", ca, cert, method="GET") == 403
        # a Fleet call passes the proxy and meets the SuperLink's node authentication (unsigned: 401)
        assert _post(port, "/v1/fleet/activate-node", ca, cert) == 401
        assert _post(port, "/v1/fleet/pull-messages", ca) == 400  # no client certificate

        no_cert = r.hospital("hospital-1", hospital_data[1], client_certificate=False)
        r.supernode("hospital-1", no_cert)  # registered, but without a client certificate
        access_log = tmp_path / "proxy-state" / "nginx-access.log"
        refused = re.compile(r'"POST /v1/fleet/(?!pull-messages )[a-z-]+ HTTP/1.1" 400 .*verify=NONE')
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not refused.search(access_log.read_text()):
            time.sleep(2)
        assert refused.search(access_log.read_text()), access_log.read_text()[-2000:]
        assert not [n for n in r.nodes() if n.get("status") == "online"]

    access = (tmp_path / "proxy-state" / "nginx-access.log").read_text()
    assert "/v1/control/" in access and "CN=hospital-0" in access  # the proxy's audit trail
