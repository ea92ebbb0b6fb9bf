"""Flower ClientApp (``client.app:app``): thin handlers around client/federated.py."""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.context_store import ContextPrivacyStore, MirroredPrivacyStore
from client.dataset import SiteData
from client.dp_training import dp_local_train
from client.federated import RoundConfig, local_evaluate, local_train
from client.privacy import FilePrivacyStore, PrivacyStore
from client.records import ARRAYS, CONFIG, METRICS, PRIVACY, SITE, from_array_record, train_reply
from client.site_runtime import SiteRuntime, resolve_site
from shared_model.config import model_config_from_run_config

app = ClientApp()


def _load(context: Context) -> tuple[SiteRuntime, SiteData]:
    site = resolve_site(dict(context.node_config), dict(context.run_config))
    task = str(context.run_config.get("task", "mortality"))
    return site, SiteData.load(site.feature_dir, task, site.site_id)


def _privacy_store(site: SiteRuntime, context: Context, config: dict) -> PrivacyStore:
    """Deployment: the site's own durable files. Simulation: the node's context state, mirrored
    under the run directory so that a resumed run continues the budget."""
    if site.privacy_dir:
        return FilePrivacyStore(site.privacy_dir)
    store = ContextPrivacyStore(context.state)
    run_dir = str(config.get("run-dir", ""))
    if run_dir:
        return MirroredPrivacyStore(store, FilePrivacyStore(Path(run_dir) / "sites" / site.site_id))
    return store


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the groups this site can inform; reply with only those, plus sample counts."""
    site, data = _load(context)
    cfg = RoundConfig.from_record(dict(msg.content[CONFIG]))
    model_config = model_config_from_run_config(dict(context.run_config))
    global_arrays = from_array_record(msg.content[ARRAYS])
    if not site.dp.enabled:
        arrays, weights, metrics = local_train(data, model_config, global_arrays, cfg)
        return Message(content=train_reply(site.site_id, arrays, weights, metrics), reply_to=msg)
    store = _privacy_store(site, context, dict(msg.content[CONFIG]))
    res = dp_local_train(data, model_config, global_arrays, cfg, site.dp, store, site.site_id)
    content = train_reply(site.site_id, res.arrays, res.weights, res.metrics,
                          status="declined" if res.declined else "trained",
                          reason=res.ledger_row["reason"])
    content[PRIVACY] = ConfigRecord({"ledger-row": json.dumps(res.ledger_row)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the global model on the site's validation and test splits."""
    site, data = _load(context)
    metrics = local_evaluate(data, model_config_from_run_config(dict(context.run_config)),
                             from_array_record(msg.content[ARRAYS]))
    content = RecordDict({METRICS: MetricRecord(metrics),
                          SITE: ConfigRecord({"site-id": site.site_id})})
    return Message(content=content, reply_to=msg)
