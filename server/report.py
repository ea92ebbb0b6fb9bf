"""Reports of a federated run: the end-of-run cross-site table, and ``moehealth report RUN_DIR``
(``report.md`` with PNGs beside it, and a self-contained ``report.html`` with images embedded).

Sections: run status (a FAILED banner when no site ever trained), run configuration, data per
site, sites per round (accepted, rejected, declined, missing), AUROC and loss per round, the
global model's calibration, privacy budgets, gate health and routing, per-combination AUROC,
the cross-site table and who trained which parameter group.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from server.gate_health import COLLAPSED, MISROUTED
from server.model_card import model_card, write_model_card
from server.plots import decision_curve_plot, reliability_plot, round_plot, routing_heatmap, site_colours
from server.run_dir import DATA_SUMMARY, RunDirectory
from shared_model.modalities import COMBINATIONS
from shared_model.protocol import (
    DECISION_CURVE,
    MIN_CELL_SIZE,
    POOLED_PREFIX,
    RELIABILITY,
    STATED_THRESHOLDS,
    EvaluateReply,
    parse_subgroup_key,
    pooled_key,
    split_key,
)

POOLED = "pooled test (centralized eval)"


@dataclass(frozen=True)
class Section:
    title: str
    image: str | None = None  # PNG file name in the report folder
    text: str = ""  # Markdown: paragraphs and pipe tables


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return rows


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _auroc_with_interval(value, low, high) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "suppressed or undefined"
    interval = f" [{_fmt(low)}, {_fmt(high)}]" if low is not None and not math.isnan(low) else ""
    return _fmt(value) + interval


def cross_site_table(per_site: dict[str, EvaluateReply], pooled: dict[str, float] | None) -> str:
    """Global model on each site's test split, plus the pooled test set when evaluated. AUROC
    with its 95% bootstrap interval; F1 at the threshold chosen on the matching validation split
    (the site's, or the pooled one). Counts below a site's minimum cell size are not sent."""
    lines = ["| site | test n | positives | AUROC [95% bootstrap interval] | AUPRC | "
             "F1 (threshold from validation) | loss |", "|---|---|---|---|---|---|---|"]
    for site, reply in sorted(per_site.items()):
        positives = reply.get("test", "positives")
        auroc = _auroc_with_interval(reply.get("test", "auroc"), reply.get("test", "auroc_low"),
                                     reply.get("test", "auroc_high"))
        cells = " | ".join(_fmt(reply.get("test", m)) for m in ("auprc", "f1", "loss"))
        lines.append(f"| {site} | {reply.num_examples or 'suppressed'} | "
                     f"{'suppressed' if math.isnan(positives) else int(positives)} | {auroc} | "
                     f"{cells} |")
    if pooled:
        auroc = _auroc_with_interval(pooled.get(pooled_key("auroc")),
                                     pooled.get(pooled_key("auroc_low")),
                                     pooled.get(pooled_key("auroc_high")))
        cells = " | ".join(_fmt(pooled.get(pooled_key(m))) for m in ("auprc", "f1", "loss"))
        lines.append(f"| pooled (centralized eval) | {int(pooled.get(pooled_key('n'), 0))} | "
                     f"{int(pooled.get(pooled_key('positives'), 0))} | {auroc} | {cells} |")
        lines.append(f"\nPooled Brier score: {_fmt(pooled.get(pooled_key('brier')))}.")
    return "\n".join(lines) + "\n"


def _ceilings(summary: dict) -> str:
    """The AUROCs the synthetic pooled test set allows (simulation's data summary)."""
    ceilings = summary.get("ceilings") or {}
    if "reachable_auroc" not in ceilings:
        return ""
    return (f"Reachable ceiling on the pooled test set: AUROC {_fmt(ceilings['reachable_auroc'])} "
            f"(the best any model can do from what the data shows; the true outcome "
            f"probabilities give {_fmt(ceilings.get('true_auroc'))}).\n")


def run_status(rounds: list[dict], finished: bool, running: bool = False) -> str:
    """``RUNNING`` (a ServerApp runs it now), ``FAILED`` (no site ever trained), ``INCOMPLETE``
    (stopped early) or ``finished``."""
    if running:
        return "RUNNING"
    trained = [r for r in rounds if r["kind"] == "train" and r.get("accepted")]
    if not trained:
        return "FAILED"
    return "finished" if finished else "INCOMPLETE"


def build_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and PNGs into ``out`` (default RUN_DIR/report)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such directory")
    if not (run_dir / "rounds.jsonl").is_file():
        raise ValueError(f"{run_dir}: not a run directory (no rounds.jsonl)")
    out = Path(out or run_dir / "report")
    out.mkdir(parents=True, exist_ok=True)
    rounds, sites = read_jsonl(run_dir / "rounds.jsonl"), read_jsonl(run_dir / "site_metrics.jsonl")
    evals = [s for s in sites if s.get("kind") == "evaluate"]
    summary = read_json(run_dir / DATA_SUMMARY)
    config = read_json(run_dir / "config.json")
    known = sorted(set(summary.get("sites", {})) | {r["site"] for r in sites}
                   | {s for r in rounds if r["kind"] == "train" for s in _answered(r)})
    colours = site_colours(known) | {POOLED: "black"}
    pretrain_end = int(config.get("pretrain-rounds", 0) or 0) or None
    cross = run_dir / "cross_site.md"
    status = run_status(rounds, cross.is_file(), RunDirectory.is_running(run_dir))

    sections = [Section("Run configuration", None, _config_table(config))]
    cell = int(config.get("data.min-cell-size", MIN_CELL_SIZE))
    sections.append(Section("Data per site", None, _data_table(summary, rounds, cell)))
    sections.append(Section("Sites per round", None, _sites_per_round(rounds, known)))
    auroc = {s: [(r["round"], r.get(split_key("test", "auroc"))) for r in evals if r["site"] == s]
             for s in {r["site"] for r in evals}}
    pooled = [r for r in rounds if r["kind"] == "centralized-eval"]
    if pooled:
        auroc[POOLED] = [(r["round"], r.get(pooled_key("auroc"))) for r in pooled]
    sections.append(Section("Test AUROC per round", round_plot(
        auroc, "test AUROC", "Global model: test AUROC per site", out / "auroc.png",
        colours=colours, pretrain_end=pretrain_end).name, _ceilings(summary)))
    test_loss = {"test BCE (sites, sample-weighted)": [
        (r["round"], r.get(split_key("test", "loss"))) for r in rounds if r["kind"] == "evaluate"]}
    if pooled:
        test_loss["test BCE (pooled)"] = [(r["round"], r.get(pooled_key("loss"))) for r in pooled]
    sections.append(Section("Test loss per round", round_plot(
        test_loss, "binary cross-entropy", "Global model: test loss (BCE)", out / "loss.png",
        colours=dict(zip(test_loss, ("tab:orange", "black"), strict=False)),
        pretrain_end=pretrain_end).name))
    objective = {"training objective (accepted updates, sample-weighted)":
                 [(r["round"], r.get("train_loss")) for r in rounds if r["kind"] == "train"]}
    sections.append(Section("Training objective per round", round_plot(
        objective, "BCE + alpha x load balancing", "Local training objective (last local epoch)",
        out / "train-objective.png", colours=dict(zip(objective, ("tab:blue",), strict=True)),
        pretrain_end=pretrain_end).name))
    sections += _calibration_section(pooled, out)
    sections += _subgroup_section(pooled[-1] if pooled else {}, cell)
    ledger = []
    if (run_dir / "privacy_ledger.jsonl").is_file():
        from shared_model.ledger import ledger_table, plot_epsilon, restore_infinity

        ledger = [restore_infinity(r) for r in read_jsonl(run_dir / "privacy_ledger.jsonl")]
        plot_epsilon(ledger, out / "epsilon.png", colours)
        sections.append(Section("Privacy budget per site", "epsilon.png", ledger_table(ledger)))
    card = write_model_card(out, model_card(config, summary, pooled, ledger))
    sections.insert(0, Section("Model card (TRIPOD+AI)", None, card))
    sections += _gate_sections(rounds, out, pretrain_end)
    last = max((r["round"] for r in evals), default=None)
    for site in sorted({r["site"] for r in evals if r["round"] == last}):
        final = next(r for r in evals if r["site"] == site and r["round"] == last)
        table = _routing(site, final)
        if table:
            png = routing_heatmap(table, out / f"routing-{site}.png",
                                  f"{site}: mean routing weight (round {last})")
            sections.append(Section(f"Expert routing at {site}", png.name))
    if last is not None:
        sections += _site_subgroup_sections({r["site"]: r for r in evals if r["round"] == last})
        sections.append(Section(f"Test AUROC per modality combination (round {last})", None,
                                _combination_table({r["site"]: r for r in evals
                                                    if r["round"] == last})))
    sections.append(Section("Cross-site evaluation (final global model)", None,
                            cross.read_text() if cross.is_file() else "(run not finished)"))
    contrib = next((r for r in reversed(rounds) if r["kind"] == "train" and r.get("contributors")),
                   None)
    if contrib:
        lines = ["| group | contributing sites (training samples) |", "|---|---|"]
        lines += [f"| {g} | {', '.join(f'{s} ({n})' for s, n in sites_.items())} |"
                  for g, sites_ in contrib["contributors"].items()]
        sections.append(Section(f"Who trained what (round {contrib['round']})", None,
                                "\n".join(lines) + "\n"))
    return _write(out, run_dir, status, sections)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def _answered(train_round: dict) -> set[str]:
    return set(train_round.get("accepted", [])) | set(train_round.get("rejected", {})) | set(
        train_round.get("declined", {}))


def _config_table(config: dict) -> str:
    if not config:
        return "(no config.json)"
    lines = ["| key | value |", "|---|---|"]
    lines += [f"| {k} | `{json.dumps(v)}` |" for k, v in sorted(config.items())]
    preset = ("" if not config.get("data.preset") else
              f"`data.preset = {config['data.preset']}` sets the data keys it names; the data "
              "this run used is under 'Data per site' and in the model card's data source.\n\n")
    return preset + "\n".join(lines) + "\n"


def _count(count: int, total: int, cell: int) -> str:
    """A count and its share, or "< cell" where it or its complement is a small cell (the
    release rule of the sites, so this table shows nothing the cross-site table suppresses)."""
    if min(count, total - count) < cell and count not in (0, total):
        return f"< {cell} or > {total - cell}" if total >= 2 * cell else "suppressed"
    return f"{count} ({count / total:.0%})" if total else "0"


def _data_table(summary: dict, rounds: list[dict], cell: int = MIN_CELL_SIZE) -> str:
    """Samples, positives (prevalence) and modality mix per site (simulation's data summary,
    counts under the cell size suppressed); in deployment only what the sites reported: training
    samples per site."""
    if summary.get("sites"):
        source = summary.get("source", "")
        lines = [f"Task: {summary.get('task', '?')}." + (f" Data: {source}." if source else "")
                 + f" Counts under the minimum cell size ({cell}) are suppressed.\n",
                 "| site | train | val | test | positives (all splits) | with notes | with CXR |",
                 "|---|---|---|---|---|---|---|"]
        for site, splits in sorted(summary["sites"].items()):
            total = sum(s["samples"] for s in splits.values())
            counts = [sum(s.get(k, 0) for s in splits.values())
                      for k in ("positives", "with_notes", "with_cxr")]
            sizes = " | ".join(str(splits[k]["samples"]) if splits[k]["samples"] >= cell
                               or splits[k]["samples"] == 0 else f"< {cell}"
                               for k in ("train", "val", "test"))
            shown = " | ".join(_count(k, total, cell) for k in counts)
            lines.append(f"| {site} | {sizes} | {shown} |")
        return "\n".join(lines) + "\n"
    trained = next((r for r in reversed(rounds) if r["kind"] == "train" and r.get("contributors")),
                   None)
    if not trained:
        return "(no data summary: nothing was trained)"
    samples: dict[str, int] = {}
    for sites in trained["contributors"].values():
        for site, n in sites.items():
            samples[site] = max(samples.get(site, 0), int(n))
    lines = ["Deployment: the coordinator knows only the aggregation weights the sites sent "
             "(training samples; a DP site's public weight).\n",
             "| site | aggregation weight |", "|---|---|"]
    lines += [f"| {s} | {n} |" for s, n in sorted(samples.items())]
    return "\n".join(lines) + "\n"


def _sites_per_round(rounds: list[dict], known: list[str]) -> str:
    """Per train round: accepted sites, rejected and declined ones with reasons, and the known
    sites that did not answer (not sampled, timed out or down)."""
    lines = ["| round | phase | accepted | rejected | declined | no reply |", "|---|---|---|---|---|---|"]
    for r in (r for r in rounds if r["kind"] == "train"):
        missing = [s for s in known if s not in _answered(r)]
        accepted = ", ".join(r.get("accepted", [])) or "**none: global model unchanged**"
        lines.append(f"| {r['round']} | {r.get('phase', '')} | {accepted} | "
                     f"{_reasons(r.get('rejected', {}))} | {_reasons(r.get('declined', {}))} | "
                     f"{', '.join(missing)} |")
    return "\n".join(lines) + "\n"


def _reasons(by_site: dict[str, str]) -> str:
    return "; ".join(f"{site}: {why}" for site, why in sorted(by_site.items()))


def _calibration_section(pooled: list[dict], out: Path) -> list[Section]:
    """Reliability diagram and Brier score of the final global model on the pooled test split."""
    final = pooled[-1] if pooled else {}
    bins = {k: final.get(pooled_key(f"{RELIABILITY}.{k}")) for k in ("predicted", "observed", "count")}
    if not all(bins.values()):
        return []
    brier = final.get(pooled_key("brier"))
    n, positives = int(final.get(pooled_key("n"), 0)), int(final.get(pooled_key("positives"), 0))
    if positives in (0, n):
        return [Section("Calibration (pooled test split)", None,
                        f"Not estimable: the pooled test split holds one class only ({n} stays, "
                        f"{positives} positive).\n")]
    png = reliability_plot(bins, brier, f"Calibration of the global model (round {final['round']}, "
                           f"pooled test, n={n})", out / "reliability.png")
    return [Section("Calibration (pooled test split)", png.name,
                    f"Brier score {_fmt(brier)} (lower is better; the prevalence alone gives "
                    f"{_fmt(_prevalence_brier(final))}).{_slope_intercept(final)}\n"),
            *_decision_section(final, out)]


def _subgroup_rows(metrics: dict, prefix: str, cell: int | None) -> list[str]:
    """Table rows of the subgroup keys under ``prefix`` (``pooled.`` or ``""``); ``cell``: the
    minimum cell size, None where only the site knows it."""
    smallest = f"{cell}" if cell is not None else "the site's minimum cell size of"
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in metrics.items():
        parsed = parse_subgroup_key(key[len(prefix):]) if key.startswith(prefix) else None
        if parsed is not None and value is not None:
            dimension, group, metric = parsed
            rows.setdefault((dimension, group), {})[metric] = value
    lines = []
    for (dimension, group), m in sorted(rows.items()):
        if m.get("suppressed"):  # the whole dimension (see client/rounds/clinical.py)
            lines.append(f"| {dimension}: every subgroup | suppressed: one of them has fewer than "
                         f"{smallest} positives or negatives | | | | |")
            continue
        lines.append(f"| {dimension}: {group} | {int(m['n'])} | {int(m['positives'])} | "
                     f"{_auroc_with_interval(m['auroc'], m['auroc_low'], m['auroc_high'])} | "
                     f"{_fmt(m['calibration_intercept'])} | {_fmt(m['brier'])} |")
    return lines


SUBGROUP_HEADER = ["| subgroup | n | positives | AUROC [95% CI] | calibration-in-the-large | Brier |",
                   "|---|---|---|---|---|---|"]
SUBGROUP_NOTE = ("Calibration-in-the-large: the intercept a of logit P(y) = a + logit(p) in the "
                 "subgroup (0 is ideal; above 0 the model underestimates its risk).\n\n")


def _subgroup_section(final: dict, cell: int) -> list[Section]:
    """AUROC, calibration-in-the-large and Brier per sex, age band, modality combination, care
    unit and site on the pooled test data (simulation)."""
    lines = _subgroup_rows(final, POOLED_PREFIX, cell)
    if not lines:
        return []
    return [Section("Subgroups (pooled test split)", None,
                    SUBGROUP_NOTE + "\n".join(SUBGROUP_HEADER + lines) + "\n")]


def _site_subgroup_sections(finals: dict[str, dict]) -> list[Section]:
    """The subgroups each site reported on its own test split (released cells only, under its
    minimum cell size; a DP site only with ``share-evaluation``)."""
    sections = []
    for site, final in sorted(finals.items()):
        lines = _subgroup_rows(final, "", None)
        if lines:
            sections.append(Section(
                f"Subgroups as {site} reports them (round {final['round']})", None,
                SUBGROUP_NOTE + "\n".join(SUBGROUP_HEADER + lines) + "\n"))
    return sections


def _slope_intercept(final: dict) -> str:
    """Calibration slope and intercept with their intervals, when the run computed them."""
    def value(name: str) -> str:
        low, high = (final.get(pooled_key(f"{name}_{end}")) for end in ("low", "high"))
        return f"{_fmt(final.get(pooled_key(name)))} [{_fmt(low)}, {_fmt(high)}]"
    if pooled_key("calibration_slope") not in final:
        return ""
    return (f" Calibration slope {value('calibration_slope')} (1 is ideal; below 1 the "
            f"predictions are too extreme) and intercept {value('calibration_intercept')} (0 is "
            "ideal; above 0 risk is underestimated on average), 95% bootstrap intervals."
            + _platt(final))


def _platt(final: dict) -> str:
    if pooled_key("platt_brier") not in final:
        return " No recalibration is applied."
    return (" Platt recalibration fitted on the validation split would give Brier "
            f"{_fmt(final[pooled_key('platt_brier')])}, slope "
            f"{_fmt(final[pooled_key('platt_calibration_slope')])} and intercept "
            f"{_fmt(final[pooled_key('platt_calibration_intercept')])} on the same test stays "
            "(reported only: the model's outputs above are not recalibrated).")


def _decision_section(final: dict, out: Path) -> list[Section]:
    """Decision curve (net benefit against treat-all and treat-none) and a threshold table."""
    curve = {k: final.get(pooled_key(f"{DECISION_CURVE}.{k}"))
             for k in ("threshold", "model", "treat_all")}
    if not all(curve.values()):
        return []
    png = decision_curve_plot(curve, f"Decision curve (round {final['round']}, pooled test)",
                              out / "decision_curve.png")
    net = dict(zip(curve["threshold"], curve["model"], strict=True))
    rows = ["| risk threshold | sensitivity | specificity | PPV | net benefit |", "|---|---|---|---|---|"]
    for t in STATED_THRESHOLDS:
        rows.append(f"| {t:g} | {_fmt(final.get(pooled_key(f'sensitivity@{t:g}')))} | "
                    f"{_fmt(final.get(pooled_key(f'specificity@{t:g}')))} | "
                    f"{_fmt(final.get(pooled_key(f'ppv@{t:g}')))} | {_fmt(net.get(t))} |")
    return [Section("Clinical usefulness: decision curve (pooled test split)", png.name,
                    "Net benefit = true positives per patient minus false positives weighted by "
                    "the odds of the threshold (Vickers & Elkin 2006); the model is useful at a "
                    "threshold where its curve lies above both treat-all and treat-none.\n\n"
                    + "\n".join(rows) + "\n")]


def _prevalence_brier(final: dict) -> float | None:
    n, pos = final.get(pooled_key("n")), final.get(pooled_key("positives"))
    if not n:
        return None
    p = pos / n
    return p * (1 - p)


def _routing(site: str, metrics: dict) -> dict[str, dict[str, float]]:
    table = EvaluateReply.parse(site, metrics).routing
    return {c: {e: t.get(e, 0.0) for e in COMBINATIONS} for c, t in table.items()}


def _gate_sections(rounds: list[dict], out: Path, pretrain_end: int | None) -> list[Section]:
    """Share of routing weight per expert over the rounds, collapse, and routing to experts of
    modalities a combination lacks."""
    gates = [(r["round"], r["gate"]) for r in rounds if r["kind"] == "evaluate" and r.get("gate")]
    if not gates:
        return []
    experts = sorted({e for _, g in gates for e in g["expert_share"]})
    series = {f"experts.{e}": [(rnd, g["expert_share"].get(e, 0.0)) for rnd, g in gates]
              for e in experts}
    png = round_plot(series, "share of routing weight", "Gate: routing weight per expert",
                     out / "gate.png", colours=site_colours(list(series)), pretrain_end=pretrain_end)
    last_round, last = gates[-1]
    top = max(last["expert_share"].values(), default=0.0)
    text = (f"Largest expert share in round {last_round}: {top:.2f} (at {COLLAPSED:.1f} or more the "
            "gate has collapsed onto one expert: a warning).\n\n"
            f"Routing to experts pre-trained on modalities a sample lacks, round {last_round} "
            f"(shares over {MISROUTED:.1f}; each expert reads every modality's embedding or its "
            "missing-indicator, so this is information, not a fault):\n\n"
            "| samples | share routed to experts of modalities they lack |\n|---|---|\n")
    text += "".join(f"| {c} | {m:.2f} |\n" for c, m in last["misrouted"].items()) or "| (none) | |\n"
    return [Section("Gate: routing weight per expert", png.name, text)]


def _combination_table(final: dict[str, dict]) -> str:
    lines = ["| site | combination | test n | AUROC |", "|---|---|---|---|"]
    for site, metrics in sorted(final.items()):
        for combo, values in sorted(EvaluateReply.parse(site, metrics).by_combination.items()):
            lines.append(f"| {site} | {combo} | {int(values.get('n', 0))} | "
                         f"{_fmt(values.get('auroc'))} |")
    return "\n".join(lines) + "\n" + ("\nCombinations with fewer test patients than a site's "
                                      "minimum cell size are not sent.\n")


# --- writers -------------------------------------------------------------------------------------
_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:3px 8px;
font-size:13px;text-align:left}th{background:#f0f0f0}img{max-width:100%}
.banner{padding:.8em 1em;font-size:20px;font-weight:bold;border-radius:4px;margin:1em 0}
.FAILED{background:#c62828;color:white}.INCOMPLETE{background:#f9a825}.RUNNING{background:#1565c0;
color:white}.finished{background:#2e7d32;
color:white}code{background:#f4f4f4;padding:0 3px}"""

_BANNER = {"FAILED": "FAILED: no site contributed an update in any round; nothing was trained",
           "INCOMPLETE": "INCOMPLETE: the run stopped before its last round (resume-from continues it)",
           "RUNNING": "RUNNING: the run is in progress; this report shows the rounds done so far",
           "finished": "Finished"}


def _write(out: Path, run_dir: Path, status: str, sections: list[Section]) -> Path:
    md = [f"# moehealth run report\n\nRun directory: `{run_dir}`\n\n**Status: {_BANNER[status]}**\n"]
    body = [f"<h1>moehealth run report</h1><p>Run directory: <code>{html.escape(str(run_dir))}"
            f"</code></p><div class='banner {status}'>{html.escape(_BANNER[status])}</div>"]
    for section in sections:
        md.append(f"## {section.title}\n")
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.image:
            md.append(f"![{section.title}]({section.image})\n")
            data = base64.b64encode((out / section.image).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(section.title)}" src="data:image/png;base64,{data}">')
        if section.text:
            md.append(section.text + "\n")
            body.append(markdown_to_html(section.text))
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
                                     f"moehealth run report</title><style>{_STYLE}</style></head>"
                                     f"<body>{''.join(body)}</body></html>\n")
    return out / "report.md"


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]*)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def markdown_to_html(text: str) -> str:
    """The Markdown the report writes (pipe tables and paragraphs) as HTML."""
    parts: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *rows = table
            parts.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                                   for row in rows) + "</table>")
            table.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                table.append(cells)
            continue
        flush()
        if stripped:
            parts.append(f"<p>{_inline(stripped)}</p>")
    flush()
    return "\n".join(parts)
