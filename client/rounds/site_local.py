"""Site-local parameter groups (FedPer-style personalization, run-config ``site-local-groups``).

A site trains the named groups (its own gate, or its own fusion head) like any other but never
sends them: it keeps them in ``STATE_DIR/site-local/run-<run id>.safetensors`` and puts them over
every global model it receives, before training and before evaluating, so its reported metrics
are those of its own model. What it sends shrinks by those groups; the coordinator's copy of them
keeps its initial value. The file is the site's personalized part of the released model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from client.errors import SiteDataError
from shared_model.checkpoint import read_model_file, write_model_file
from shared_model.params import parameter_group
from shared_model.protocol import TrainReply


def local_parts_path(state_dir: Path, run_id: int) -> Path:
    """Where a site keeps its local groups of run ``run_id``."""
    return Path(state_dir) / "site-local" / f"run-{run_id}.safetensors"


@dataclass(frozen=True)
class SiteLocalParts:
    """The groups this site keeps to itself in one run, and the file that holds them."""

    groups: tuple[str, ...]
    path: Path

    def applied_to(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``arrays`` (the received global model) with the site's own groups put over them
        (unchanged before the site first trained them)."""
        if not self.groups or not self.path.is_file():
            return arrays
        try:
            local = read_model_file(self.path, "site-local groups")
        except ValueError as err:
            raise SiteDataError(str(err)) from None
        wrong = [n for n, a in local.items() if n not in arrays or arrays[n].shape != a.shape]
        if wrong:
            raise SiteDataError(f"site-local groups: {self.path} does not fit the received model "
                                f"(e.g. {wrong[0]}): same model.* settings?")
        return {**arrays, **local}

    def kept_from(self, reply: TrainReply) -> TrainReply:
        """``reply`` without the site's local groups, which are written to :attr:`path` instead
        (atomically: a crash leaves the previous round's file)."""
        local = {n: a for n, a in reply.arrays.items() if parameter_group(n) in self.groups}
        if not local:
            return reply
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_model_file(self.path, local)
        return replace(reply, arrays={n: a for n, a in reply.arrays.items() if n not in local},
                       group_weights={g: w for g, w in reply.group_weights.items()
                                      if g not in self.groups})
