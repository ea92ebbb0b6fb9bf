"""Centralized evaluation of the global model on the pooled test split of all virtual sites."""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord, MetricRecord

from client.dataset import SiteData, concat_sites
from client.evaluation import evaluate_predictions
from client.records import from_array_record
from client.training import predict, resolve_device
from shared_model import ModelConfig, build_model
from shared_model.params import load_arrays
from simulation.prepare import FederationData, prepare_sites


def pooled_test_evaluator(run_config: dict, task: str, model_config: ModelConfig
                          ) -> Callable[[int, ArrayRecord], MetricRecord | None]:
    """``evaluate_fn`` for Strategy.start: AUROC/AUPRC/F1/loss on the pooled test split."""
    sites = prepare_sites(FederationData.from_run_config(run_config))
    pooled = concat_sites([SiteData.load(d, task, s) for s, d in sites.items()])
    test = pooled.subset("test")
    device = resolve_device()

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        model = build_model(model_config)
        load_arrays(model, from_array_record(arrays))
        result = evaluate_predictions(predict(model.to(device), test, device))
        return MetricRecord({f"pooled.{k}": float(result[k]) for k in ("auroc", "auprc", "f1", "loss")}
                            | {"pooled.n": result["n"]})

    return evaluate
