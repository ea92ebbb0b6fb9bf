"""Federation settings parsed once from the Flower run-config ([tool.flwr.app.config])."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from server.aggregation import Aggregation
from server.tracking import Tracking
from shared_model.errors import MoeHealthInputError
from shared_model.protocol import AggregationRule, Phase, RoundConfig
from shared_model.run_config import TASKS, site_local_groups

SERVER_OPTIMIZERS = ("avg", "fedadam")


@dataclass(frozen=True)
class FederationSettings:
    """Rounds, phases, local training, aggregation and outputs of one federated run.

    The defaults equal pyproject.toml's ``[tool.flwr.app.config]`` (tested), where Flower takes
    them from; they are here for code that builds settings without a run.
    """

    num_rounds: int = 8
    pretrain_rounds: int = 2
    local_epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32
    alpha: float = 0.01
    task: str = "mortality"
    aggregation: Aggregation = Aggregation.MEAN
    trim_fraction: float = 0.2
    server_optimizer: str = "avg"
    server_lr: float = 0.01
    proximal_mu: float = 0.0
    min_sites: int = 2
    fraction_train: float = 1.0
    seed: int = 0
    run_dir: str = ""
    resume_from: str = ""
    init_from: str = ""  # a checkpoint file or run folder whose model starts a new run
    centralized_eval: bool = True
    round_timeout: float = 3600.0
    aggregation_rule: AggregationRule = AggregationRule.MODALITY_AWARE
    tracking: Tracking = Tracking.NONE
    site_registry: str = ""  # deployment: node id -> site name file of the coordinator
    evaluate_every: int = 1  # evaluate the global model every N rounds (and after the last)
    site_local_groups: str = ""  # groups each site keeps to itself (client/rounds/site_local.py)

    def __post_init__(self) -> None:
        for name, kind in (("aggregation", Aggregation), ("aggregation_rule", AggregationRule),
                           ("tracking", Tracking)):
            try:
                object.__setattr__(self, name, kind(getattr(self, name)))
            except ValueError:
                raise ValueError(f"{name.replace('_', '-')} must be one of "
                                 f"{', '.join(m.value for m in kind)}, got {getattr(self, name)!r}"
                                 ) from None
        if not 0 <= self.pretrain_rounds <= self.num_rounds:
            raise ValueError(f"pretrain-rounds ({self.pretrain_rounds}) must be within "
                             f"0..num-server-rounds ({self.num_rounds})")
        if self.server_optimizer not in SERVER_OPTIMIZERS:
            raise ValueError(f"server-optimizer must be one of {SERVER_OPTIMIZERS}")
        if not 0 <= self.trim_fraction < 0.5:
            raise ValueError("trim-fraction must be in [0, 0.5)")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.init_from and self.resume_from:
            raise ValueError("init-from starts a new run, resume-from continues one: set one")
        try:
            site_local_groups(self.site_local_groups)
        except MoeHealthInputError as err:
            raise ValueError(str(err)) from None
        if self.min_sites < 1 or self.local_epochs < 1 or self.evaluate_every < 1:
            raise ValueError("min-sites, local-epochs and evaluate-every must be at least 1")

    def evaluates(self, server_round: int) -> bool:
        """Whether round ``server_round`` ends with an evaluation (every N-th, and the last)."""
        return server_round % self.evaluate_every == 0 or server_round == self.num_rounds

    def evaluates_with_next_train(self, server_round: int) -> bool:
        """Whether round ``server_round``'s evaluation rides in round ``server_round + 1``'s
        train messages (each site first evaluates the model it receives) instead of evaluate
        messages of its own: an evaluated round that is not the last, when every site trains
        every round (with ``fraction-train`` < 1 a train round reaches only some sites)."""
        return (self.evaluates(server_round) and server_round < self.num_rounds
                and self.fraction_train >= 1.0)

    KEYS: ClassVar[dict[str, str]] = {
        "num-server-rounds": "num_rounds", "pretrain-rounds": "pretrain_rounds",
        "local-epochs": "local_epochs", "lr": "lr", "batch-size": "batch_size",
        "alpha": "alpha", "task": "task", "aggregation": "aggregation",
        "trim-fraction": "trim_fraction", "server-optimizer": "server_optimizer",
        "server-lr": "server_lr", "proximal-mu": "proximal_mu", "min-sites": "min_sites",
        "fraction-train": "fraction_train", "seed": "seed", "run-dir": "run_dir",
        "resume-from": "resume_from", "init-from": "init_from", "centralized-eval": "centralized_eval",
        "round-timeout": "round_timeout", "aggregation-rule": "aggregation_rule",
        "tracking": "tracking", "site-registry": "site_registry",
        "evaluate-every": "evaluate_every", "site-local-groups": "site_local_groups",
    }  # run-config key -> field

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> FederationSettings:
        return cls(**{attr: run_config[key] for key, attr in cls.KEYS.items() if key in run_config})

    def phase(self, server_round: int) -> Phase:
        return Phase.PRETRAIN if server_round <= self.pretrain_rounds else Phase.JOINT

    def round_config(self, server_round: int, sites_manifest: str = "") -> RoundConfig:
        """Per-round values sent to the sites in the train message's ConfigRecord."""
        return RoundConfig(server_round=server_round, num_rounds=self.num_rounds,
                           phase=self.phase(server_round),
                           local_epochs=self.local_epochs, lr=self.lr, batch_size=self.batch_size,
                           alpha=self.alpha, proximal_mu=self.proximal_mu, seed=self.seed,
                           aggregation_rule=self.aggregation_rule, sites_manifest=sites_manifest)
