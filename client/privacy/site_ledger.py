"""A site's own privacy ledger, ``<privacy dir>/ledger.jsonl``: the one record of its budget.

Append-only JSON lines, one per round the site answered (trained or declined), each carrying the
fixed mechanism and the accountant's whole history. A row is written and flushed to disk before
the update it accounts for is sent, so a crash can leave a spent-but-unsent round (counted: the
ledger never understates) but never a sent-but-unrecorded one; a torn last line is an append that
did not finish, and so a reply that was never sent. A restarted site reads its mechanism and its
spending from here; a round number already in the ledger is never answered again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from client.errors import MoeHealthInputError
from client.privacy.mechanism import Mechanism

LEDGER_NAME = "ledger.jsonl"
log = logging.getLogger(__name__)


class SiteLedger:
    """Reads and appends a site's ledger (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LEDGER_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text().splitlines()
        rows = []
        for number, line in enumerate(lines, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if number < len(lines):
                    raise MoeHealthInputError(f"{self.path}:{number}: not a JSON ledger row") from None
                log.warning("%s: last line torn (an append that never finished; its round was "
                            "not sent): ignored", self.path)
        return rows

    def mechanism(self) -> tuple[Mechanism, int] | None:
        """The fixed mechanism and the round that fixed it: the first round the site trained
        (until it has spent anything, a corrected configuration may still plan anew), or None."""
        for row in self.rows():
            if "mechanism" not in row:
                raise MoeHealthInputError(f"{self.path}: a row of round {row.get('round')} has no "
                                          "mechanism (ledger of an older moehealth): start a new "
                                          "privacy dir")
            if not row["declined"]:
                return Mechanism.from_dict(row["mechanism"]), int(row["round"])
        return None

    def history(self) -> list[list[float]]:
        """The accountant's history after the last answered round."""
        rows = self.rows()
        return [list(h) for h in rows[-1]["history"]] if rows else []

    def answered(self, server_round: int) -> dict[str, Any] | None:
        """This site's row for ``server_round``, if it already answered that round."""
        return next((r for r in self.rows() if int(r["round"]) == server_round), None)

    def append(self, row: dict[str, Any]) -> None:
        """Append a row and flush it to disk (before the round's reply is sent); a torn last
        line left by a crash is cut off first."""
        self._cut_torn_tail()
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _cut_torn_tail(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)
