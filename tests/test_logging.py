"""One line per event: Opacus' import-time logging.basicConfig is undone, a non-DP site never
loads Opacus, and the random-init image warning is printed once per process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_dp_code_adds_no_root_log_handler() -> None:
    out = _python("import logging; import client.privacy.dp_round, client.privacy.canary_audit; "
                  "print(len(logging.getLogger().handlers))")
    assert out == "0"  # opacus alone would have added one (every line printed twice)


def test_the_client_app_does_not_load_opacus_without_dp() -> None:
    assert _python("import sys, client.app; print('opacus' in sys.modules)") == "False"


def test_random_init_image_warning_is_printed_once_per_process() -> None:
    out = subprocess.run([sys.executable, "-c", "from client.features.image import ImageEncoder; "
                          "ImageEncoder(); ImageEncoder()"], cwd=REPO, check=True,
                         capture_output=True, text=True)
    assert out.stderr.count("NO IMAGE WEIGHTS CONFIGURED") == 1
