"""Flower ClientApp (``client.app:app``): thin handlers around client/rounds and client/privacy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

import shared_model.progress_bars  # noqa: F401  (first: before anything imports tqdm)
from client.data.dataset import SiteData
from client.flower_io import (
    evaluate_config,
    evaluate_reply_content,
    global_arrays,
    round_config,
    train_reply_content,
    withheld_evaluation_content,
)
from client.message_timing import MessageTimer, process_age_s
from client.rounds.federated import local_evaluate, local_train
from client.rounds.site_local import SiteLocalParts, local_parts_path
from client.site.runtime import SiteRuntime, resolve_site
from shared_model.config import model_config_from_run_config
from shared_model.run_config import SITE_LOCAL_GROUPS, TASK, site_local_groups

app = ClientApp()
APP_LOADED_S = process_age_s()  # process start -> this module imported (Flower's and ours)


def _data(site: SiteRuntime, context: Context) -> SiteData:
    return SiteData.load(site.feature_dir, str(context.run_config[TASK]), site.site_id)


def _timed_reply(msg: Message, site: SiteRuntime, timer: MessageTimer,
                 build: Callable[[], RecordDict]) -> Message:
    """The reply, its building timed as the message's last step, and the site-local timing
    line appended (never sent)."""
    content = build()
    timer.mark("reply")
    if site.state_dir:
        timer.append_to(site.state_dir)
    return Message(content=content, reply_to=msg)


def _local_parts(site: SiteRuntime, context: Context) -> SiteLocalParts:
    groups = site_local_groups(context.run_config.get(SITE_LOCAL_GROUPS, ""))
    return SiteLocalParts(groups, local_parts_path(site.state_dir or site.privacy_dir,
                                                   context.run_id))


def _shares_evaluation(site: SiteRuntime) -> bool:
    return not site.dp.enabled or site.dp.share_evaluation


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the groups this site can inform; reply with only those and their aggregation
    weights (sample counts; a DP site's public weight). With ``evaluate-incoming``, first
    evaluate the received model as the evaluate handler would (the last round's evaluation,
    without a message of its own). Groups the run keeps site-local are put over the received
    model first and never sent (client/rounds/site_local.py)."""
    timer = MessageTimer("train", APP_LOADED_S)
    cfg = round_config(msg)
    site = resolve_site(dict(context.node_config), cfg.sites_manifest)
    data = _data(site, context)
    model_config = model_config_from_run_config(dict(context.run_config))
    local = _local_parts(site, context)
    arrays = local.applied_to(global_arrays(msg))
    timer.mark("data")
    evaluation = None
    if cfg.evaluate_incoming and _shares_evaluation(site):
        evaluation = local_evaluate(data, model_config, arrays, site.site_id, site.min_cell_size)
        timer.mark("evaluate")
    if not site.dp.enabled:
        reply = local_train(data, model_config, arrays, cfg, site.site_id, site.min_cell_size)
    else:
        from client.privacy.dp_round import dp_local_train  # Opacus only where DP runs
        from client.privacy.site_ledger import SiteLedger

        reply = dp_local_train(data, model_config, arrays, cfg, site.dp,
                               SiteLedger(site.privacy_dir), site.site_id,
                               site.modalities).reply
    reply = local.kept_from(reply)
    timer.mark("train")
    return _timed_reply(msg, site, timer,
                        lambda: train_reply_content(replace(reply, evaluation=evaluation)))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the global model (with the site's local groups, if any) on the site's validation
    and test splits. A DP site sends no metrics unless it chose to (they are not covered by its
    DP guarantee)."""
    timer = MessageTimer("evaluate", APP_LOADED_S)
    site = resolve_site(dict(context.node_config), evaluate_config(msg).sites_manifest)
    if not _shares_evaluation(site):
        return Message(content=withheld_evaluation_content(site.site_id), reply_to=msg)
    data = _data(site, context)
    timer.mark("data")
    arrays = _local_parts(site, context).applied_to(global_arrays(msg))
    reply = local_evaluate(data, model_config_from_run_config(dict(context.run_config)), arrays,
                           site.site_id, site.min_cell_size)
    timer.mark("evaluate")
    return _timed_reply(msg, site, timer, lambda: evaluate_reply_content(reply))
