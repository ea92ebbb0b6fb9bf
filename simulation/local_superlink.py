"""Start a private simulation SuperLink and run the app on it (tests, benchmarks, experiments).

The SuperLink gets its own FLWR_HOME and port, runtime dependency installation off, and is
stopped (with every process it spawned) on exit, even when the run fails.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(value: object) -> str:
    """A run-config override's value as TOML: JSON's spelling, except infinity (TOML's ``inf``,
    which JSON cannot write)."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return json.dumps(value)


@dataclass
class RunOutcome:
    run_id: int
    status: str
    seconds: float
    log: str

    @property
    def ok(self) -> bool:
        return self.status == "finished:completed"


@dataclass
class LocalSimulation:
    """A running simulation SuperLink and the environment to talk to it."""

    env: dict[str, str]
    connection: str

    def run(self, run_config: dict[str, object], num_supernodes: int, timeout: float = 900,
            app: Path = REPO) -> RunOutcome:
        """``flwr run`` the app with run-config overrides; wait for the end; return the outcome."""
        overrides = " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())
        started = time.perf_counter()
        cmd = ["flwr", "run", str(app), self.connection, "--stream",
               "--federation-config", f"num-supernodes={num_supernodes}"]
        if overrides:
            cmd += ["--run-config", overrides]
        cmd[0] = shutil.which("flwr", path=self.env["PATH"]) or "flwr"
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        log = proc.stdout + proc.stderr
        run_id = next((int(w.strip("`.")) for line in log.splitlines() if "run_id" in line
                       or "Successfully started run" in line for w in line.split()
                       if w.strip("`.").isdigit()), -1)
        status = self.status(run_id) if run_id >= 0 else f"not started (exit {proc.returncode})"
        return RunOutcome(run_id, status, time.perf_counter() - started, log)

    def status(self, run_id: int) -> str:
        flwr = shutil.which("flwr", path=self.env["PATH"]) or "flwr"
        out = subprocess.run([flwr, "ls", self.connection, "--run-id", str(run_id), "--format", "json"],
                             env=self.env, capture_output=True, text=True, timeout=60)
        runs = json.loads(out.stdout).get("runs", [])
        return str(runs[0].get("status", "unknown")) if runs else "unknown"


@contextmanager
def local_simulation(home: Path, env: dict[str, str] | None = None) -> Iterator[LocalSimulation]:
    """Start ``flower-superlink --simulation`` on a free loopback port; stop it on exit."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "sim"\n\n[superlink.sim]\naddress = "127.0.0.1:{port}"\n'
        "insecure = true\n")
    run_env = {**os.environ, **(env or {}), "FLWR_HOME": str(home),
               "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
               # the venv's console scripts (flwr, flower-superlink, flwr-serverapp, ...) first
               "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                        os.environ.get("PATH", "")])}
    log = open(home / "superlink.log", "w")
    proc = subprocess.Popen(
        [shutil.which("flower-superlink", path=run_env["PATH"]) or "flower-superlink",
         "--simulation", "--insecure", "--host", "127.0.0.1",
         "--port", str(port), "--control-api-address", f"127.0.0.1:{port}",
         "--disable-runtime-dependency-installation"],
        env=run_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, proc, timeout=60)
        yield LocalSimulation(run_env, "sim")
    finally:
        _stop_group(proc)
        log.close()


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before opening port {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"port {port} not open after {timeout} s")


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the SuperLink's process group, then SIGKILL whatever is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
