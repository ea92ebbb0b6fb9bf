"""The coordinator's hospital-facing proxy (nginx from Debian's packages), with real processes on
loopback: only the Fleet API passes, so someone holding ca.crt cannot list nodes, register a key or
start a run; with mutual TLS, a hospital without a client certificate is refused; Fleet calls meet
the SuperLink's node authentication behind it.
(A registered SuperNode training to the end through the proxy: tests/test_deployment.py.)"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from pathlib import Path

import psutil
import pytest

from client.errors import MoeHealthInputError
from client.site.config import SiteConfig
from client.site.registration import check_node_registration
from tests.test_deployment import REPO, reh

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not reh.proxy_available(),
                                 reason="nginx with its stream module is not installed (.ci/run "
                                        "installs nginx-light libnginx-mod-stream)")]


def _tls(port: int, ca: Path, cert: tuple[Path, Path] | None = None,
         source: str = "127.0.0.1") -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca))
    if cert:
        context.load_cert_chain(*map(str, cert))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return context.wrap_socket(raw, server_hostname="localhost")


def _head(path: str, method: str = "POST", length: int | None = 0,
          headers: dict[str, str] | None = None) -> bytes:
    fields = {"Host": "localhost", "Content-Type": "application/protobuf",
              **({"Content-Length": str(length)} if length is not None
                 else {"Transfer-Encoding": "chunked"}), **(headers or {})}
    return (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
            + "\r\n").encode()


def _status(tls: ssl.SSLSocket) -> int:
    return int(tls.recv(4096).split(b" ", 2)[1])


def _post(port: int, path: str, ca: Path, cert: tuple[Path, Path] | None = None,
          method: str = "POST", headers: dict[str, str] | None = None) -> int:
    """HTTP status of one raw request (the path sent exactly as written, no normalization)."""
    with _tls(port, ca, cert) as tls:
        tls.sendall(_head(path, method, 0, {"Connection": "close", **(headers or {})}))
        return _status(tls)


def _node_key(public_key: Path) -> str:
    from server.identity import node_key_header

    return node_key_header(public_key)


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
        unknown = r.hospital("hospital-x", hospital_data[0], register=False)  # signed certificate
        with pytest.raises(MoeHealthInputError, match="proxy refused node key .*hospital-x.key"):
            check_node_registration(SiteConfig.load(unknown))
        keys, ca = tmp_path / "hospitals" / "hospital-0", tmp_path / "ca" / "ca.crt"
        cert = (keys / "hospital-0.crt", keys / "hospital-0.tls.key")
        port = r.proxies["proxy"]
        for path in ("/v1/control/list-nodes", "/v1/fleet/../control/list-nodes",
                     "/v1/fleet/%2e%2e/control/list-nodes", "/v1/fleet/pull-messages?x=1",
                     "/v1/runtime/get-run", "/"):
            assert _post(port, path, ca, cert) in (400, 403), path  # a hospital's certificate
        assert _post(port, "/v1/fleet/pull-messages", ca, cert, method="GET") == 403
        # a Fleet call with the certificate's registered node key passes the proxy and meets the
        # SuperLink's node authentication (unsigned: 401); without that key the proxy refuses it
        key = {"flwr-public-key": _node_key(keys / "hospital-0.key.pub")}
        assert _post(port, "/v1/fleet/activate-node", ca, cert, headers=key) == 401
        assert _post(port, "/v1/fleet/activate-node", ca, cert) == 403
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


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def test_one_address_cannot_starve_the_hospitals_nor_one_body_the_superlink(
        tmp_path: Path, hospital_data) -> None:
    """Slowloris: an address with no certificate holds 600 connections (more than nginx 1.22's
    default 512 worker connections); the proxy keeps 32 of them, and a registered hospital's
    signed call still gets through. Bodies: a compromised hospital (its own certificate and
    registered key, no valid signature) sends 64 MiB, declared or chunked: refused at 8 MiB, the
    SuperLink's memory does not grow by the body; its concurrent requests are capped at 8."""
    with reh.rehearsal(tmp_path) as r:
        r.coordinator(proxy=True, mtls=True)
        config = SiteConfig.load(r.hospital("hospital-0", hospital_data[0]))
        keys, ca = tmp_path / "hospitals" / "hospital-0", tmp_path / "ca" / "ca.crt"
        cert = (keys / "hospital-0.crt", keys / "hospital-0.tls.key")
        port = r.proxies["proxy"]

        held: list[socket.socket] = []
        try:
            for _ in range(600):  # TCP connections that never start TLS, from 127.0.0.2
                held.append(socket.create_connection(("127.0.0.1", port), timeout=10,
                                                     source_address=("127.0.0.2", 0)))
            time.sleep(1)
            open_ = 0
            for conn in held:  # the proxy closed every one beyond the per-address limit
                conn.settimeout(0.05)
                try:
                    open_ += conn.recv(1) != b""
                except TimeoutError:
                    open_ += 1
                except OSError:
                    pass
            assert open_ <= 32, open_
            assert "is registered" in check_node_registration(config)  # the hospital gets in
        finally:
            for conn in held:
                conn.close()

        superlink = r.procs["superlink"].pid
        key = {"flwr-public-key": _node_key(keys / "hospital-0.key.pub")}
        with _tls(port, ca, cert) as tls:  # a declared 64 MiB body: refused before any byte
            tls.sendall(_head("/v1/fleet/push-object", length=64 << 20, headers=key))
            assert _status(tls) == 413
        before = _rss(superlink)
        with _tls(port, ca, cert) as tls:  # chunked: cut at the limit
            tls.sendall(_head("/v1/fleet/push-object", length=None, headers=key))
            chunk = b"%x\r\n" % (1 << 20) + b"\0" * (1 << 20) + b"\r\n"
            try:
                for _ in range(64):
                    tls.sendall(chunk)
            except OSError:
                pass  # the proxy closed the connection
        time.sleep(2)
        assert _rss(superlink) - before < 32 << 20, (before, _rss(superlink))

        waiting: list[ssl.SSLSocket] = []
        try:  # requests whose bodies never come: the 9th concurrent one of a hospital is refused
            for _ in range(8):
                waiting.append(_tls(port, ca, cert))
                waiting[-1].sendall(_head("/v1/fleet/push-object", length=100, headers=key))
            time.sleep(1)
            with _tls(port, ca, cert) as tls:
                tls.sendall(_head("/v1/fleet/push-object", length=100, headers=key))
                assert _status(tls) == 429
        finally:
            for conn in waiting:
                conn.close()
    tcp_log = (tmp_path / "proxy-state" / "nginx-tcp.log").read_text()
    assert "127.0.0.2" in tcp_log


def test_certificate_bound_to_node_key_and_revocation(tmp_path: Path, hospital_data) -> None:
    """Hospital-1's certificate with hospital-0's registered node key is refused at the proxy;
    after the coordinator revokes hospital-0's certificate (runbook: revoke-hospital-cert.sh,
    reload-proxy.sh) hospital-0 fails the TLS handshake while hospital-1 still gets in."""
    with reh.rehearsal(tmp_path) as r:
        r.coordinator(proxy=True, mtls=True)
        configs = [r.hospital(f"hospital-{i}", hospital_data[i]) for i in range(2)]
        assert "is registered" in check_node_registration(SiteConfig.load(configs[0]))
        swapped = json.loads(configs[1].read_text())
        swapped["superlink"]["auth_private_key"] = json.loads(
            configs[0].read_text())["superlink"]["auth_private_key"]
        configs[1].with_name("swapped.yaml").write_text(json.dumps(swapped))
        with pytest.raises(MoeHealthInputError, match="proxy refused node key .*hospital-0.key"):
            check_node_registration(SiteConfig.load(configs[1].with_name("swapped.yaml")))

        keys = tmp_path / "hospitals" / "hospital-0"
        r.sh(str(reh.SCRIPTS / "revoke-hospital-cert.sh"), str(tmp_path / "ca"),
             str(keys / "hospital-0.crt"), str(tmp_path / "certs"))
        r.reload_proxies()
        with pytest.raises(MoeHealthInputError, match="refused client certificate .*hospital-0"):
            check_node_registration(SiteConfig.load(configs[0]))
        assert "is registered" in check_node_registration(SiteConfig.load(configs[1]))
    access = (tmp_path / "proxy-state" / "nginx-access.log").read_text()
    assert "CN=hospital-0\" verify=FAILED:certificate revoked" in access, access
