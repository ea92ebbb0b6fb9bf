"""Dress rehearsal of a real deployment on one machine, with plain processes (no containers).

Coordinator: private CA + server certificate, `flower-superlink` on 127.0.0.1 with TLS and
SuperNode authentication, and (``--proxy``) the hospital-facing nginx proxy that forwards only the
Fleet API, with mutual TLS (``--mtls``). Hospitals: one key pair each (registered with the
SuperLink), a TLS client certificate (mutual TLS), one YAML each, `moehealth site run` ->
`flower-supernode` connecting outward over TLS. Then `flwr run` of the app with
`simulation=false`, and every process is stopped at the end (also on failure).

    python deploy/rehearsal.py --workdir /tmp/moehealth-rehearsal --sites 3 --rounds 2 --proxy --mtls

Site data: a synthetic MIMIC set split into the sites (each hospital gets its own folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "deploy" / "scripts"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from simulation.local_superlink import free_port, wait_for_port  # noqa: E402


def proxy_available() -> bool:
    """nginx with its stream module (Debian: nginx-light + libnginx-mod-stream) is installed."""
    if shutil.which("nginx") is None:
        return False
    built = subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr
    return (f"{built} ".count("--with-stream ") > 0
            or Path("/usr/lib/nginx/modules/ngx_stream_module.so").exists())


@dataclass
class Rehearsal:
    """Paths and processes of one rehearsal; ``stop()`` ends every process group it started."""

    workdir: Path
    port: int = field(default_factory=free_port)  # the SuperLink, on 127.0.0.1
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    proxies: dict[str, int] = field(default_factory=dict)  # proxy name -> hospital-facing port

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "FLWR_HOME": str(self.workdir / "flwr-home"),
                "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    def sh(self, *cmd: str) -> str:
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
        return out.stdout

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.workdir / "logs" / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self.procs[name]

    def kill(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        for s in (sig, signal.SIGKILL):
            try:
                os.killpg(proc.pid, s)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired, ChildProcessError):
                pass

    def stop(self) -> None:
        """SuperNodes first, then the proxies, then the SuperLink."""
        last = [*self.proxies, "superlink"]
        for name in [n for n in self.procs if n not in last] + last:
            self.kill(name)

    def coordinator(self, proxy: bool = False, mtls: bool = False) -> None:
        """CA, certificates, the SuperLink on loopback, and (``proxy``) the hospital-facing proxy
        "proxy" (with mutual TLS when ``mtls``) that the hospitals then connect to."""
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.sh(str(SCRIPTS / "make-ca.sh"), str(self.workdir / "ca"), str(self.workdir / "certs"))
        home = self.workdir / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "coordinator"\n\n[superlink.coordinator]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{self.workdir}/certs/ca.crt"\n')
        self.start("superlink", [str(SCRIPTS / "start-superlink.sh"), str(self.workdir / "certs"),
                                 str(self.workdir / "superlink-state"), "127.0.0.1", str(self.port)])
        wait_for_port(self.port, self.procs["superlink"], 60)
        if proxy:
            self.start_proxy("proxy", mtls)

    def start_proxy(self, name: str, mtls: bool) -> int:
        """A hospital-facing nginx proxy in front of the SuperLink; returns its port."""
        port = free_port()
        if mtls and not self.registry.exists():
            self.registry.write_text('{"sites": {}, "public_keys": {}}')
        self.start(name, [str(SCRIPTS / "start-proxy.sh"), str(self.workdir / "certs"),
                          str(self.workdir / f"{name}-state"), f"127.0.0.1:{port}", str(self.port),
                          *(["--mtls", str(self.registry)] if mtls else [])])
        wait_for_port(port, self.procs[name], 30)
        self.proxies[name] = port
        return port

    def reload_proxies(self) -> None:
        """After a registration or a revocation: every proxy re-reads its node-key map and CRL."""
        for name in self.proxies:
            self.sh(str(SCRIPTS / "reload-proxy.sh"), str(self.workdir / f"{name}-state"))
        time.sleep(1)  # nginx's new worker takes over

    @property
    def registry(self) -> Path:
        """The coordinator's site registry (node id -> site name)."""
        return self.workdir / "site-registry.json"

    @property
    def hospital_address(self) -> str:
        """Where hospitals connect: the proxy when there is one, else the SuperLink itself."""
        return f"127.0.0.1:{self.proxies.get('proxy', self.port)}"

    def hospital(self, site: str, samples_dir: Path, register: bool = True,
                 privacy: dict | None = None, client_certificate: bool = True) -> Path:
        """Credentials (+ registration and a signed TLS client certificate from the
        coordinator) and the site's YAML file."""
        keys = self.workdir / "hospitals" / site
        self.sh(str(SCRIPTS / "make-node-key.sh"), str(keys), site)
        if register:  # flwr supernode register + node id -> name in the site registry
            self.sh(str(BIN / "moehealth"), "coordinator", "register", str(keys / f"{site}.key.pub"),
                    site, "--registry", str(self.registry))
            self.reload_proxies()
        tls = {}
        if client_certificate:
            self.sh(str(SCRIPTS / "sign-hospital-cert.sh"), str(self.workdir / "ca"),
                    str(keys / f"{site}.csr"))
            tls = {"client_certificate": str(keys / f"{site}.crt"),
                   "client_key": str(keys / f"{site}.tls.key")}
        config = {
            "site_id": site, "work_dir": str(keys / "work"),
            "data": {"samples_dir": str(samples_dir)}, "modalities": ["ehr", "notes", "cxr"],
            "privacy": privacy or {"enabled": False},
            "superlink": {"address": self.hospital_address,
                          "root_certificates": str(self.workdir / "ca" / "ca.crt"),
                          "auth_private_key": str(keys / f"{site}.key"), **tls},
            "runtime_port": free_port()}
        path = keys / f"{site}.yaml"
        path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
        return path

    def supernode(self, site: str, config: Path, retries: int = 10) -> subprocess.Popen:
        return self.start(site, [str(BIN / "moehealth"), "site", "run", "--quiet", "--retries",
                                 str(retries), str(config)])

    def rogue(self, *args: str, proxy: str = "proxy") -> subprocess.CompletedProcess:
        """A `flwr` command by someone holding only ca.crt and network reach, against the
        hospital-facing address of ``proxy`` (its own Flower home)."""
        home = self.workdir / f"rogue-home-{proxy}"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "rogue"\n\n[superlink.rogue]\n'
            f'address = "127.0.0.1:{self.proxies[proxy]}"\n'
            f'root-certificates = "{self.workdir}/ca/ca.crt"\n')
        return subprocess.run(["flwr", *args], env={**self.env, "FLWR_HOME": str(home)},
                              capture_output=True, text=True, timeout=120)

    def nodes(self) -> list[dict]:
        """The SuperNodes the SuperLink knows (``flwr supernode list``), with their status."""
        listing = json.loads(self.sh("flwr", "supernode", "list", "coordinator", "--format", "json"))
        return list(listing.get("nodes", []))

    def online_since(self) -> dict[str, str]:
        """Node id -> when the SuperLink last marked it online, for the nodes online now."""
        return {n["node-id"]: n.get("online-at") for n in self.nodes() if n.get("status") == "online"}

    def wait_for_nodes(self, count: int, timeout: float = 180,
                       reactivated_since: dict[str, str] | None = None) -> None:
        """Until ``count`` SuperNodes are online at the SuperLink; with ``reactivated_since`` (an
        earlier :meth:`online_since`), also until one of them was marked online again since then
        (a restarted SuperNode admitted after its crashed session went offline)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            online = self.online_since()
            again = reactivated_since is None or any(
                reactivated_since.get(node) not in (None, at) for node, at in online.items())
            if len(online) >= count and again:
                return
            time.sleep(2)
        raise TimeoutError(f"fewer than {count} SuperNodes online"
                           + (" with one re-admitted" if reactivated_since else "")
                           + f" after {timeout} s")

    def run_app(self, run_config: dict[str, object], timeout: float = 900) -> tuple[str, str]:
        """`flwr run` on the coordinator connection; returns (status, log)."""
        overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in
                             {"simulation": False, "centralized-eval": False,
                              "site-registry": str(self.registry), **run_config}.items())
        out = subprocess.run(["flwr", "run", str(REPO), "coordinator", "--stream", "--run-config",
                              overrides], env=self.env, capture_output=True, text=True, timeout=timeout)
        log = out.stdout + out.stderr
        run_id = next((w for line in log.splitlines() if "Successfully started run" in line
                       for w in line.split() if w.isdigit()), None)
        if run_id is None:
            return f"not started (exit {out.returncode})", log
        listing = json.loads(self.sh("flwr", "ls", "coordinator", "--run-id", run_id, "--format",
                                     "json"))
        return str(listing["runs"][0]["status"]), log


def synthetic_sites(workdir: Path, sites: int, patients: int) -> list[Path]:
    """A synthetic MIMIC set, cohort and one samples folder per hospital."""
    from client.mimic.cohort import read_cohort
    from simulation.partition import PartitionConfig, partition_cohort
    from simulation.prepare import FederationData, prepare_sites

    data = FederationData(data_dir=workdir / "data", patients=patients, num_sites=sites,
                          scheme="iid", profile=None)
    prepare_sites(data)
    cohort = read_cohort(next((workdir / "data").glob("federation-*/cohort.parquet")))
    out = workdir / "hospital-data"
    if not out.is_dir():
        partition_cohort(cohort, out, PartitionConfig(num_sites=sites, scheme="iid"))
    return [out / f"site-{i}" for i in range(sites)]


@contextmanager
def rehearsal(workdir: Path):
    r = Rehearsal(Path(workdir))
    try:
        yield r
    finally:
        r.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/moehealth-rehearsal"))
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--patients", type=int, default=600)
    parser.add_argument("--proxy", action="store_true", help="hospitals connect through nginx")
    parser.add_argument("--mtls", action="store_true", help="the proxy requires client certificates")
    args = parser.parse_args()
    started = time.perf_counter()
    samples = synthetic_sites(args.workdir, args.sites, args.patients)
    with rehearsal(args.workdir) as r:
        r.coordinator(proxy=args.proxy or args.mtls, mtls=args.mtls)
        for i, folder in enumerate(samples):
            r.supernode(f"hospital-{i}", r.hospital(f"hospital-{i}", folder))
        r.wait_for_nodes(args.sites)
        up = time.perf_counter() - started
        status, log = r.run_app({"num-server-rounds": args.rounds, "pretrain-rounds": 1,
                                 "min-sites": args.sites, "data.num-sites": args.sites,
                                 "run-dir": str(args.workdir / "run")})
        print(log[-2500:])
    print(f"status: {status}; start-up {up:.0f} s, total {time.perf_counter() - started:.0f} s; "
          f"run directory {args.workdir / 'run'}; logs in {args.workdir / 'logs'}")
    return 0 if status == "finished:completed" else 1


if __name__ == "__main__":
    sys.exit(main())
