"""The hospital message path imports only what a message needs: Flower starts a fresh ClientApp
process per message, so every import is paid per message (see issue 17)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("opacus", "scipy", "pandas", "pyarrow", "sklearn", "transformers", "torchvision",
         "matplotlib", "PIL")

TRAIN_MESSAGE = """
import json, sys, time
import client.app
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict
from server.flower_io import to_array_record
from server.settings import FederationSettings
from shared_model import build_model
from shared_model.params import model_to_arrays
from shared_model.protocol import Record
from shared_model.run_config import pyproject_defaults
after_import = [m for m in HEAVY if m in sys.modules]
cfg = FederationSettings(num_rounds=2, pretrain_rounds=0, local_epochs=1).round_config(1)
content = RecordDict({Record.ARRAYS: to_array_record(model_to_arrays(build_model())),
                      Record.CONFIG: ConfigRecord(cfg.to_record())})
meta = Metadata(run_id=1, message_id="t", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                group_id="1", created_at=time.time(), ttl=600.0, message_type="train")
node = {"site-id": "h", "data-dir": sys.argv[2], "feature-dir": sys.argv[1],
        "privacy-dir": sys.argv[2]}
reply = client.app.app(Message(content, metadata=meta),
                       Context(run_id=1, node_id=1, node_config=node, state=RecordDict(),
                               run_config=pyproject_defaults()))
assert Record.ARRAYS in reply.content.array_records
print(json.dumps({"import": after_import, "train": [m for m in HEAVY if m in sys.modules]}))
"""


def test_a_training_message_loads_no_heavy_library(synth_features: Path, tmp_path: Path) -> None:
    code = f"HEAVY = {HEAVY!r}\n" + TRAIN_MESSAGE
    out = subprocess.run([sys.executable, "-c", code, str(synth_features), str(tmp_path)],
                         cwd=REPO, check=True, capture_output=True, text=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == {"import": [], "train": []}, loaded
    # the site-local timing line (never sent): where this message's time went
    timing = json.loads((tmp_path / "message-timing.jsonl").read_text())
    assert timing["kind"] == "train"
    assert 0 < timing["start_to_app_loaded_s"] <= timing["start_to_handler_s"]
    assert all(timing[f"{step}_s"] >= 0 for step in ("data", "train", "reply"))
