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


def test_random_init_image_warning_is_printed_once_per_process(cxr_smoke: Path) -> None:
    film = sorted(cxr_smoke.glob("*.png"))[0]
    out = subprocess.run([sys.executable, "-c", "from client.features.image import ImageEncoder; "
                          f"ImageEncoder().encode([{str(film)!r}]); "
                          f"ImageEncoder().encode([{str(film)!r}])"], cwd=REPO, check=True,
                         capture_output=True, text=True)
    assert out.stderr.count("NO IMAGE WEIGHTS CONFIGURED") == 1


def test_no_progress_bars_when_output_is_not_a_terminal() -> None:
    code = """
import moehealth.serverapp, client.app  # the entry points of the server and site processes
import pandas as pd
from client.features.text import TextEncoder
from simulation.partition import PartitionConfig, partition_patients
TextEncoder()  # transformers' "Loading weights" bar
cohort = pd.DataFrame({"subject_id": [1, 2, 3, 4], "intime": pd.to_datetime(["2020-01-01"] * 4),
                       "first_careunit": ["MICU", "SICU", "MICU", "CCU"],
                       "mortality": [0.0, 1.0, 0.0, 1.0]})
partition_patients(cohort, PartitionConfig(num_sites=2, scheme="careunit"))  # flwr-datasets' bar
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True,
                         text=True)
    assert "it/s]" not in out.stderr and "Loading weights" not in out.stderr, out.stderr[-500:]


def test_long_steps_log_counts_and_time_left_when_not_on_a_terminal(caplog) -> None:
    import logging

    from shared_model.progress_bars import Progress

    caplog.set_level(logging.INFO)
    shown = Progress(4, "site-x notes", "inputs", logging.getLogger("moehealth.test"), every_s=0)
    for _ in range(4):
        shown.update(1)
    shown.close()
    assert "site-x notes: 2/4 inputs (50%)" in caplog.text and "s left" in caplog.text
    assert "4/4" not in caplog.text  # the step's own completion line says it is done
