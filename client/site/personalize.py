"""``moehealth site personalize``: a hospital fine-tunes the federation's released model on its
own data and keeps the result.

The site reads the model file the coordinator released (a round checkpoint or a ``moehealth
train`` file), fine-tunes it on its training stays (client/rounds/personalize.py: the epoch with
the lowest loss on its own validation split, the released model included as epoch 0) and scores
both on its own test split, paired. Nothing is sent: the model, its metrics and the report stay in
the output folder at the site.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from client.data.dataset import SiteData
from client.errors import MoeHealthInputError
from client.rounds.personalize import FineTuneConfig, fine_tune
from client.rounds.training import predict, resolve_device
from client.site.config import SiteConfig
from client.site.setup import prepare_site
from shared_model import ModelConfig, build_model
from shared_model.bootstrap import RankedScores, paired_auroc_differences
from shared_model.checkpoint import check_fits, read_model_file, write_model_file
from shared_model.params import load_arrays, model_to_arrays

RESAMPLES = 1000


@dataclass(frozen=True)
class PersonalizationReport:
    """What personalization did at one site (kept at the site; ``report-TASK.json``)."""

    site: str
    task: str
    released_model: str
    personalized_model: str
    chosen_epoch: int  # 0: the released model was kept
    val_losses: list[float]
    test_stays: int
    test_positives: int
    released_auroc: float
    personalized_auroc: float
    difference: float  # personalized - released, on the same test stays
    difference_low: float  # 95% paired bootstrap interval
    difference_high: float
    settings: dict[str, object] = field(default_factory=dict)

    def summary(self) -> str:
        kept = ("the released model kept (no epoch lowered the validation loss)"
                if self.chosen_epoch == 0 else f"epoch {self.chosen_epoch} kept")
        return (f"site {self.site}, {self.task}: {kept}; test split {self.test_stays} stays "
                f"({self.test_positives} positive): AUROC released {self.released_auroc:.3f}, "
                f"personalized {self.personalized_auroc:.3f}, difference {self.difference:+.3f} "
                f"[{self.difference_low:+.3f}, {self.difference_high:+.3f}] (95% paired "
                f"bootstrap); model {self.personalized_model}")


def load_released_model(path: Path, model_config: ModelConfig):  # -> MoEHealth
    """The released global model, every array checked against ``model_config``'s model."""
    model = build_model(model_config)
    try:
        arrays = read_model_file(path, "--model")
        check_fits(arrays, model_to_arrays(model), path, "--model")
    except ValueError as err:
        raise MoeHealthInputError(str(err)) from None
    load_arrays(model, arrays)
    return model


def personalize_site(config: SiteConfig, model_file: Path, task: str, out: Path,
                     fine_tune_config: FineTuneConfig | None = None,
                     model_config: ModelConfig | None = None,
                     progress: bool = True) -> PersonalizationReport:
    """Fine-tune the released model on this site's data; write the personalized model and its
    report into ``out``; return the report."""
    out = Path(out)
    fine_tune_config = fine_tune_config or FineTuneConfig()
    target = out / f"model-{task}-personalized.safetensors"
    if target.resolve() == Path(model_file).resolve():
        raise MoeHealthInputError(f"--out: {target} would overwrite the released model")
    released = load_released_model(Path(model_file), model_config or ModelConfig())  # before any data work
    data = SiteData.load(prepare_site(config, progress=progress), task, config.site_id)
    device = resolve_device()
    result = fine_tune(data, released.to(device), fine_tune_config, device)
    test = data.subset("test")
    before, after = predict(released, test, device), predict(result.model, test, device)
    labels = before.labels
    low = high = math.nan
    if len(np.unique(labels)) == 2:
        diffs = paired_auroc_differences(labels, after.probs, before.probs, RESAMPLES)
        low, high = (float(v) for v in np.nanpercentile(diffs, [2.5, 97.5]))
    released_auroc = RankedScores(labels, before.probs).auroc()
    personalized_auroc = RankedScores(labels, after.probs).auroc()
    out.mkdir(parents=True, exist_ok=True)
    write_model_file(target, model_to_arrays(result.model),
                     metadata={"site": config.site_id, "task": task, "released": str(model_file)})
    report = PersonalizationReport(
        site=config.site_id, task=task, released_model=str(model_file),
        personalized_model=str(target), chosen_epoch=result.chosen_epoch,
        val_losses=[round(v, 6) for v in result.val_losses], test_stays=len(labels),
        test_positives=int(labels.sum()), released_auroc=released_auroc,
        personalized_auroc=personalized_auroc,
        difference=personalized_auroc - released_auroc, difference_low=low, difference_high=high,
        settings=asdict(fine_tune_config))
    report_file = out / f"report-{task}.json"
    tmp = report_file.with_name(f".{report_file.name}.tmp")
    tmp.write_text(json.dumps(_finite(asdict(report)), indent=2) + "\n")
    os.replace(tmp, report_file)
    return report


def _finite(record: dict[str, object]) -> dict[str, object]:
    """NaN (an AUROC a one-class test split cannot have) as JSON null."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in record.items()}
