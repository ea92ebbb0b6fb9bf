"""Shared fixtures: the real MIMIC-IV demo and a small synthetic MIMIC set (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOEHEALTH_SHARED", REPO.parent / "shared"))
DEMO = SHARED / "data" / "mimic-iv-demo-2.2"
CXR_SMOKE = SHARED / "data" / "cxr-smoke"


@pytest.fixture(scope="session")
def demo_root() -> Path:
    if not (DEMO / "icu" / "icustays.csv.gz").is_file():
        pytest.fail(f"MIMIC-IV demo not found at {DEMO}; set MOEHEALTH_SHARED")
    return DEMO


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simulation.synth import generate_synthetic_mimic

    out = tmp_path_factory.mktemp("synth")
    generate_synthetic_mimic(out, patients=400, seed=7)
    return out


@pytest.fixture(scope="session")
def synth_cohort(synth_root: Path):
    from client.mimic.cohort import MimicRoots, build_cohort
    from client.mimic.config import CohortConfig

    roots = MimicRoots(synth_root / "mimic-iv", synth_root / "mimic-iv-note",
                       synth_root / "mimic-cxr-jpg")
    return build_cohort(roots, CohortConfig(progress=False))


@pytest.fixture(scope="session")
def cxr_smoke() -> Path:
    if not CXR_SMOKE.is_dir():
        pytest.fail(f"cxr-smoke images not found at {CXR_SMOKE}; set MOEHEALTH_SHARED")
    return CXR_SMOKE


@pytest.fixture(scope="session")
def synth_samples(synth_cohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The samples folder behind :func:`synth_features` (same split), as a site holds it."""
    from client.data.sites import SplitConfig, assign_splits, write_site_samples

    samples = assign_splits(synth_cohort, SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=0))
    folder = tmp_path_factory.mktemp("samples")
    write_site_samples(samples, folder)
    return folder


@pytest.fixture(scope="session")
def synth_features(synth_cohort, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Feature cache of the whole synthetic cohort as one site (train/val/test by patient)."""
    from client.data.sites import SplitConfig, assign_splits
    from client.features.cache import EncoderConfig, build_site_features

    samples = assign_splits(synth_cohort, SplitConfig(val_fraction=0.2, test_fraction=0.2, seed=0))
    return build_site_features(samples, "pooled", EncoderConfig(),
                               tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="session")
def hospital_data(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three hospitals' samples folders (synthetic), for the deployment tests."""
    from tests.test_deployment import reh

    return reh.synthetic_sites(tmp_path_factory.mktemp("deploydata"), sites=3, patients=300)


BROWSERS = ("chromium-headless-shell", "chromium", "google-chrome")
_CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  const headings = [...document.querySelectorAll("h2")].map(h => h.textContent).join("|");
  document.title = `images=${images.length} broken=${broken} headings=${headings}`;
});
</script>"""


def browser_binary() -> str | None:
    """A headless Chromium from Debian's packages (.ci/run installs chromium-headless-shell)."""
    import shutil

    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def render_in_browser(page: Path, workdir: Path) -> dict:
    """Load ``page`` in headless Chromium: image count, images that did not decode, the h2
    headings, console messages (any is a problem: the page has no scripts of its own) and a
    full-page screenshot."""
    import re
    import subprocess

    binary = browser_binary()
    probe = workdir / "browser-probe.html"
    probe.write_text(page.read_text() + _CHECK_SCRIPT)
    common = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run([*common, "--enable-logging=stderr", "--v=0", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    shot = workdir / "report-screenshot.png"
    subprocess.run([*common, "--window-size=1280,4000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    title = re.search(r"<title>images=(\d+) broken=(\d+) headings=([^<]*)</title>", dom.stdout)
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    return {"images": int(title[1]) if title else -1, "broken": int(title[2]) if title else -1,
            "headings": title[3].split("|") if title else [], "console": console,
            "screenshot": shot}


@pytest.fixture()
def browser_render():
    """:func:`render_in_browser`, or None where no Chromium is installed."""
    return render_in_browser if browser_binary() else None


def ec_node_key() -> bytes:
    """What deploy/scripts/make-node-key.sh writes (ssh-keygen -t ecdsa -b 384)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption())


@pytest.fixture()
def site_yaml(tmp_path: Path, synth_cohort) -> Path:
    """A hospital's site YAML over 80 synthetic stays (DP on, notes declared, no X-rays)."""
    import yaml

    from client.data.sites import SplitConfig, assign_splits, write_site_samples

    samples = assign_splits(synth_cohort.head(80), SplitConfig(seed=0), site="h")
    samples.attrs = synth_cohort.attrs
    write_site_samples(samples, tmp_path / "samples")
    (tmp_path / "ca.crt").write_text("cert")
    (tmp_path / "h.key").write_bytes(ec_node_key())
    config = {"site_id": "hospital-a", "work_dir": str(tmp_path / "work"),
              "data": {"samples_dir": str(tmp_path / "samples")},
              "modalities": ["ehr", "notes"],
              "privacy": {"enabled": True, "target_epsilon": 3.0, "planned_rounds": 5},
              "superlink": {"address": "127.0.0.1:9092", "root_certificates": str(tmp_path / "ca.crt"),
                            "auth_private_key": str(tmp_path / "h.key")}}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
