"""A model card of one run, item by item after TRIPOD+AI (Collins et al., BMJ 2024): what the run
knows is filled in from its records (configuration, data summary, pooled evaluation, privacy
ledger); what it cannot know (ethics approval, intended use, funding, ...) is marked as such.
Written as ``model_card.json`` and ``model_card.md`` beside the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared_model.protocol import MIN_CELL_SIZE, pooled_key

NOT_KNOWN = "not known to the run: the team deploying the model must state it"
OUTCOMES = {"mortality": "in-hospital death (hospital_expire_flag)",
            "los": "ICU stay longer than 7 days",
            "readmission": "another hospital admission within 30 days of discharge (in-hospital "
                           "deaths excluded)"}


def _counts(summary: dict, cell: int) -> dict[str, Any]:
    """Stays and events per site and split, released per site all together or not at all (the
    rule of client/rounds/disclosure.py): the report's data table shows each site's events over
    all splits, so one suppressed split next to released ones could be subtracted out."""
    def released(n: int) -> bool:
        return n == 0 or n >= cell
    out: dict[str, Any] = {}
    for site, splits in summary.get("sites", {}).items():
        cells = [(v["samples"], v["positives"]) for v in splits.values()]
        if all(released(n) and released(pos) and released(n - pos) for n, pos in cells):
            out[site] = {split: {"stays": v["samples"], "events": v["positives"]}
                         for split, v in splits.items()}
        else:
            out[site] = (f"suppressed: a split has fewer than {cell} stays, events or "
                         "non-events (the report's data table gives what can be released)")
    return out


def _performance(final: dict) -> dict[str, Any]:
    def get(name: str) -> float | None:
        return final.get(pooled_key(name))
    if get("auroc") is None:
        return {"pooled test": "not evaluated (centralized-eval off, or no finished round)"}
    return {"round": final.get("round"), "n": int(get("n") or 0),
            "events": int(get("positives") or 0),
            "auroc": [get("auroc"), get("auroc_low"), get("auroc_high")],
            "calibration_slope": [get("calibration_slope"), get("calibration_slope_low"),
                                  get("calibration_slope_high")],
            "calibration_intercept": [get("calibration_intercept"),
                                      get("calibration_intercept_low"),
                                      get("calibration_intercept_high")],
            "brier": get("brier")}


def _privacy(ledger: list[dict]) -> dict[str, Any]:
    last: dict[str, dict] = {}
    for row in ledger:
        last[row.get("site", "?")] = row
    if not last:
        return {"differential privacy": "no site trained under DP"}
    return {site: {"unit": row.get("unit") or row.get("mechanism", {}).get("unit"),
                   "epsilon": row.get("epsilon"), "delta": row.get("delta"),
                   "target_epsilon": row.get("target_epsilon")} for site, row in last.items()}


PARTICIPANTS = "adult ICU stays (age >= 18) lasting at least 48 h, one sample per stay_id"
DATA_PREPARATION = ("EHR: 17 MIMIC-III benchmark variables, hourly means over 48 h, units "
                    "harmonized, implausible values removed (README, cohort rules); notes and "
                    "chest X-rays up to 48 h")
PREDICTORS = ("EHR time series + age and sex (BiLSTM), radiology notes (text encoder), chest "
              "X-rays (DenseNet-121), each projected to d_h")
SYNTHETIC_LIMITATION = ("synthetic data: the numbers say how the software and model behave, not "
                        "how the model would perform on patients")
UNKNOWN_ITEMS = {"ethics approval": NOT_KNOWN, "intended use and users": NOT_KNOWN,
                 "funding and conflicts": NOT_KNOWN, "patient and public involvement": NOT_KNOWN}


def model_card(config: dict, summary: dict, pooled: list[dict], ledger: list[dict]) -> dict:
    """TRIPOD+AI items -> what this run can say about each."""
    task = str(config.get("task", summary.get("task", "")))
    cell = int(config.get("data.min-cell-size", MIN_CELL_SIZE))
    synthetic = not config.get("data.mimic-iv")
    final = pooled[-1] if pooled else {}
    source = summary.get("source") or ("synthetic MIMIC-format data" if synthetic
                                       else f"MIMIC-IV at {config.get('data.mimic-iv')}")
    return {
        "1 title / objective": f"MoE-Health predicting {OUTCOMES.get(task, task)} at ICU intime "
                               "+ 48 h, trained federated across sites",
        "5 data source": source + (f" (data.preset {config['data.preset']})"
                                   if config.get("data.preset") else ""),
        "6 participants": PARTICIPANTS + "; per site in 'sample size'",
        "7 data preparation": DATA_PREPARATION,
        "8 outcome": OUTCOMES.get(task, task),
        "9 predictors": PREDICTORS,
        "10 sample size": _counts(summary, cell),
        "11 missing data": "a missing modality is replaced by a learned per-modality indicator "
                           f"(model.missing = {config.get('model.missing', 'learned')})",
        "12 analytical methods": {
            "model": (f"mixture of experts, one per modality combination, "
                      f"top-{config.get('model.top-k', 2)} gate"
                      if config.get("model.fusion", "moe") == "moe"
                      else "one MLP over the modality embeddings (MLP fusion)"),
            "training": f"{config.get('num-server-rounds')} federated rounds "
                        f"({config.get('pretrain-rounds')} expert pre-training), aggregation "
                        f"{config.get('aggregation-rule')} / {config.get('aggregation')}, server "
                        f"optimizer {config.get('server-optimizer')}",
            "privacy": _privacy(ledger)},
        "12 evaluation": "pooled test split of all sites, or the independent test population "
                         "(data.test-patients); 95% bootstrap intervals",
        "20 performance": _performance(final),
        "20 subgroups": "AUROC, calibration-in-the-large and Brier by sex, age band, modality "
                        "combination, care unit and site (pooled test data), and as each site "
                        "reports them: report sections 'Subgroups'",
        "21 clinical usefulness": "decision curve and threshold table: report section "
                                  "'Clinical usefulness'",
        "limitations": (SYNTHETIC_LIMITATION if synthetic
                        else "single data source (MIMIC, one hospital system); sites are "
                             "partitions of it"),
        **UNKNOWN_ITEMS,
        "external validation": "moehealth experiment external (leave one hospital out)",
    }


def _readable(value: Any) -> str:
    """A card value as one table cell: numbers to 3 decimals, ``[v, low, high]`` as an interval,
    nested items as "key: value" separated by semicolons."""
    if isinstance(value, float):
        return f"{value:.3g}" if 0 < abs(value) < 1e-3 else f"{value:.3f}"
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, float) for v in value):
        return f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_readable(v)}" for k, v in value.items())
    return str(value).replace("|", "/")


def card_table(card: dict) -> str:
    """The card as a Markdown table (model_card.md and the report's first section)."""
    lines = ["| TRIPOD+AI item | what is known |", "|---|---|"]
    lines += [f"| {item} | {_readable(value)} |" for item, value in card.items()]
    return "\n".join(lines) + "\n"


def write_model_card(out: Path, card: dict, what: str = "run") -> str:
    """``model_card.json`` and ``model_card.md`` in ``out``; returns the table."""
    (out / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    table = card_table(card)
    (out / "model_card.md").write_text(f"# Model card (TRIPOD+AI items this {what} can fill)\n\n"
                                       + table)
    return table
