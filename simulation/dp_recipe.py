"""Choosing a DP recipe on validation, never on test (``moehealth experiment dp-recipe``).

Each candidate recipe (which groups DP-SGD trains, the learning rate, local epochs per round) is
one DP federation at the same per-site epsilon and seed, scored on the sites' pooled validation
split; the public model a recipe starts from (``init-from``), scored as it is, is the candidate
"no federated training". The best validation AUROC is chosen. The test set is never scored here:
privacy-utility then runs the chosen recipe.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from client.rounds.training import predict, resolve_device
from shared_model import ModelConfig
from shared_model.bootstrap import RankedScores
from shared_model.errors import MoeHealthInputError
from simulation.experiments import (
    Budget,
    federated_model,
    final_epsilons,
    public_model,
    run_federation,
)
from simulation.prepare import FederationData
from simulation.step_progress import StepLog
from simulation.tabular_baselines import benchmark_splits

PUBLIC_ALONE = "public"  # the candidate that trains nothing: the init-from model as it is
TRAINED_GROUPS = {"fusion": "fusion layers", "all": "every group"}
DEFAULT_CANDIDATES = (PUBLIC_ALONE, "fusion:1e-3:1", "all:1e-3:1", "fusion:3e-3:4")


@dataclass(frozen=True)
class RecipeCandidate:
    """``dp.train``, ``lr`` and ``local-epochs`` of one candidate; ``train`` is ``public`` for
    the public model alone."""

    train: str
    lr: float = math.nan
    local_epochs: int = 0

    @classmethod
    def parse(cls, text: str) -> RecipeCandidate:
        """``public`` or ``TRAIN:LR:EPOCHS`` (e.g. ``fusion:3e-3:4``); one line when malformed."""
        if text == PUBLIC_ALONE:
            return cls(PUBLIC_ALONE)
        parts = text.split(":")
        try:
            train, lr, epochs = parts[0], float(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            train, lr, epochs = "", math.nan, 0
        if len(parts) != 3 or train not in TRAINED_GROUPS or not lr > 0 or epochs < 1:
            raise MoeHealthInputError(
                f"dp-recipe candidate {text!r}: expected {PUBLIC_ALONE} or TRAIN:LR:EPOCHS with "
                f"TRAIN one of {', '.join(TRAINED_GROUPS)}, LR > 0 and EPOCHS >= 1 "
                f"(e.g. fusion:3e-3:4)")
        return cls(train, lr, epochs)

    @property
    def name(self) -> str:
        if self.train == PUBLIC_ALONE:
            return "the public model alone (no federated training)"
        epochs = f"{self.local_epochs} local epoch" + ("s" if self.local_epochs > 1 else "")
        return f"{TRAINED_GROUPS[self.train]}, AdamW lr {self.lr:g}, {epochs}"

    @property
    def slug(self) -> str:
        return (PUBLIC_ALONE if self.train == PUBLIC_ALONE
                else f"{self.train}-lr{self.lr:g}-e{self.local_epochs}")


def dp_recipe(out: Path, data: FederationData, candidates: Iterable[RecipeCandidate],
              epsilon: float, seed: int, task: str, budget: Budget,
              recipe: dict[str, object]) -> pd.DataFrame:
    """One row per candidate: its pooled-validation AUROC at ``epsilon`` (every site DP) and
    whether it is chosen. ``recipe``: run-config keys every candidate shares (``init-from``,
    ``dp.batch-size``, ``dp.unit``, ...)."""
    candidates = list(candidates)
    if not isinstance(epsilon, float) or not 0 < epsilon < math.inf:
        raise MoeHealthInputError(f"dp-recipe: --epsilons must start with one finite positive "
                                  f"epsilon to choose the recipe at, got {epsilon!r}")
    if any(c.train == PUBLIC_ALONE for c in candidates) and not recipe.get("init-from"):
        raise MoeHealthInputError("dp-recipe: the candidate 'public' needs --init-from (the "
                                  "public model it scores)")
    val = benchmark_splits(data, task).pooled.subset("val")
    progress = StepLog(sum(c.train != PUBLIC_ALONE for c in candidates), "dp-recipe")
    rows = []
    for candidate in candidates:
        spent, seconds = math.nan, math.nan
        if candidate.train == PUBLIC_ALONE:
            model = public_model(Path(str(recipe["init-from"])))
        else:
            extra = {**recipe, "task": task, "seed": seed, "dp.enabled": True,
                     "dp.planned-rounds": budget.rounds, "dp.target-epsilon": float(epsilon),
                     "dp.train": candidate.train, "lr": candidate.lr}
            fl = run_federation(out, data, dataclasses.replace(
                budget, local_epochs=candidate.local_epochs), extra,
                f"{candidate.slug}-eps{epsilon:g}-seed{seed}", progress)
            model = federated_model(Path(fl["run_dir"]), ModelConfig())
            spent = max(final_epsilons(Path(fl["run_dir"])).values(), default=math.nan)
            seconds = fl["seconds"]
        on_val = predict(model, val, resolve_device())
        rows.append({"candidate": candidate.name, "task": task, "dp_train": candidate.train,
                     "lr": candidate.lr, "local_epochs": candidate.local_epochs,
                     "target_epsilon": epsilon, "seed": seed,
                     "val_auroc": RankedScores(on_val.labels, on_val.probs).auroc(),
                     "val_set": f"the sites' pooled validation split (n {len(on_val.labels)}, "
                                f"positives {int(on_val.labels.sum())})",
                     "max_site_epsilon_spent": spent, "seconds": seconds})
    frame = pd.DataFrame(rows)
    frame["chosen"] = frame.val_auroc == frame.val_auroc.max()
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "results.csv", index=False)
    (out / "results.md").write_text(f"# DP recipe chosen on validation ({task})\n\n"
                                    + dp_recipe_markdown(frame))
    return frame


def dp_recipe_markdown(frame: pd.DataFrame) -> str:
    """The candidates with their validation AUROC; the chosen one in bold."""
    eps = frame.target_epsilon.iloc[0]
    lines = [f"Validation set: {frame.val_set.iloc[0]}; seed {int(frame.seed.iloc[0])}; every "
             f"site DP at epsilon {eps:g}. The test set is not scored.", "",
             f"| candidate | validation AUROC at epsilon {eps:g} | epsilon spent (largest site) |",
             "|---|---|---|"]
    for r in frame.itertuples():
        spent = "-" if pd.isna(r.max_site_epsilon_spent) else f"{r.max_site_epsilon_spent:.3f}"
        name, auroc = r.candidate, f"{r.val_auroc:.3f}"
        if r.chosen:
            name, auroc = f"**{name}** (chosen)", f"**{auroc}**"
        lines.append(f"| {name} | {auroc} | {spent} |")
    return "\n".join(lines) + "\n"
