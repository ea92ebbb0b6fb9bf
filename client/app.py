"""Flower ClientApp (``client.app:app``): thin handlers around client/federated.py."""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.dataset import SiteData
from client.federated import RoundConfig, local_evaluate, local_train
from client.records import ARRAYS, CONFIG, METRICS, SITE, from_array_record, train_reply
from client.site_runtime import resolve_site
from shared_model.config import model_config_from_run_config

app = ClientApp()


def _load(context: Context) -> tuple[str, SiteData]:
    site = resolve_site(dict(context.node_config), dict(context.run_config))
    task = str(context.run_config.get("task", "mortality"))
    return site.site_id, SiteData.load(site.feature_dir, task, site.site_id)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the groups this site can inform; reply with only those, plus sample counts."""
    site_id, data = _load(context)
    cfg = RoundConfig.from_record(dict(msg.content[CONFIG]))
    arrays, weights, metrics = local_train(
        data, model_config_from_run_config(dict(context.run_config)),
        from_array_record(msg.content[ARRAYS]), cfg)
    return Message(content=train_reply(site_id, arrays, weights, metrics), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the global model on the site's validation and test splits."""
    site_id, data = _load(context)
    metrics = local_evaluate(data, model_config_from_run_config(dict(context.run_config)),
                             from_array_record(msg.content[ARRAYS]))
    content = RecordDict({METRICS: MetricRecord(metrics), SITE: ConfigRecord({"site-id": site_id})})
    return Message(content=content, reply_to=msg)
