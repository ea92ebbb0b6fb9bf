"""Simulation: a site's accountant state and ledger kept in the ClientApp's context state."""

from __future__ import annotations

import json
from typing import Any

from flwr.app import ConfigRecord, RecordDict

KEY = "privacy"


class ContextPrivacyStore:
    """PrivacyStore backed by ``context.state`` (lives as long as the simulated node)."""

    def __init__(self, state: RecordDict) -> None:
        self.state = state
        if KEY not in self.state.config_records:
            self.state[KEY] = ConfigRecord({"accountant": "{}", "ledger": "[]"})

    def load(self) -> dict[str, Any]:
        return json.loads(str(self.state[KEY]["accountant"]))

    def save(self, state: dict[str, Any]) -> None:
        self.state[KEY]["accountant"] = json.dumps(state)

    def append_ledger(self, row: dict[str, Any]) -> None:
        rows = json.loads(str(self.state[KEY]["ledger"]))
        rows.append(row)
        self.state[KEY]["ledger"] = json.dumps(rows)


class MirroredPrivacyStore:
    """Context state first, mirrored to a durable file store (a resumed simulation continues)."""

    def __init__(self, primary: ContextPrivacyStore, durable) -> None:
        self.primary, self.durable = primary, durable

    def load(self) -> dict[str, Any]:
        return self.primary.load() or self.durable.load()

    def save(self, state: dict[str, Any]) -> None:
        self.primary.save(state)
        self.durable.save(state)

    def append_ledger(self, row: dict[str, Any]) -> None:
        self.primary.append_ledger(row)
        self.durable.append_ledger(row)
