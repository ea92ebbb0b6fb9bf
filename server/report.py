"""Reports of a federated run: the end-of-run cross-site table, and ``moehealth report RUN_DIR``
(Markdown + HTML with PNG plots)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from server.gate_health import MISROUTED  # noqa: E402
from server.plots import routing_heatmap  # noqa: E402
from shared_model.modalities import COMBINATIONS  # noqa: E402
from shared_model.protocol import EvaluateReply, pooled_key, split_key  # noqa: E402


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return rows


def _line_plot(series: dict[str, list[tuple[int, float]]], ylabel: str, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in sorted(series.items()):
        points = [(x, y) for x, y in points if y is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _routing(site: str, metrics: dict) -> dict[str, dict[str, float]]:
    table = EvaluateReply.parse(site, metrics).routing
    return {c: {e: t.get(e, 0.0) for e in COMBINATIONS} for c, t in table.items()}


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def cross_site_table(per_site: dict[str, EvaluateReply], pooled: dict[str, float] | None) -> str:
    """Global model on each site's test split, plus the pooled test set when evaluated. F1 is
    at the threshold chosen on the matching validation split (the site's, or the pooled one)."""
    lines = ["| site | test n | positives | AUROC | AUPRC | F1 (threshold from validation) | loss |",
             "|---|---|---|---|---|---|---|"]
    for site, reply in sorted(per_site.items()):
        cells = " | ".join(_fmt(reply.get("test", m)) for m in ("auroc", "auprc", "f1", "loss"))
        lines.append(f"| {site} | {reply.num_examples} |  | {cells} |")
    if pooled:
        auroc = (f"{_fmt(pooled.get(pooled_key('auroc')))} [{_fmt(pooled.get(pooled_key('auroc_low')))}, "
                 f"{_fmt(pooled.get(pooled_key('auroc_high')))}]")
        cells = " | ".join(_fmt(pooled.get(pooled_key(m))) for m in ("auprc", "f1", "loss"))
        lines.append(f"| pooled (centralized eval; AUROC with 95% bootstrap interval) | "
                     f"{int(pooled.get(pooled_key('n'), 0))} | "
                     f"{int(pooled.get(pooled_key('positives'), 0))} | {auroc} | {cells} |")
        lines.append(f"\nPooled Brier score: {_fmt(pooled.get(pooled_key('brier')))}.")
    return "\n".join(lines) + "\n"


def build_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and PNGs into ``out`` (default RUN_DIR/report)."""
    run_dir = Path(run_dir)
    if not (run_dir / "rounds.jsonl").is_file():
        raise ValueError(f"{run_dir}: not a run directory (no rounds.jsonl)")
    out = Path(out or run_dir / "report")
    out.mkdir(parents=True, exist_ok=True)
    rounds, sites = _jsonl(run_dir / "rounds.jsonl"), _jsonl(run_dir / "site_metrics.jsonl")
    evals = [s for s in sites if s.get("kind") == "evaluate"]
    sections: list[tuple[str, str | None, str]] = []

    auroc = {s: [(r["round"], r.get(split_key("test", "auroc"))) for r in evals if r["site"] == s]
             for s in {r["site"] for r in evals}}
    pooled = [(r["round"], r.get(pooled_key("auroc"))) for r in rounds
              if r["kind"] == "centralized-eval"]
    if pooled:
        auroc["pooled test (centralized eval)"] = pooled
    sections.append(("Test AUROC per round", str(_line_plot(auroc, "test AUROC",
                     "Global model: test AUROC per site", out / "auroc.png").name), ""))
    loss = {"train loss (sample-weighted)": [(r["round"], r.get("train_loss")) for r in rounds
                                             if r["kind"] == "train"],
            "test loss (sample-weighted)": [(r["round"], r.get(split_key("test", "loss"))) for r in rounds
                                            if r["kind"] == "evaluate"]}
    sections.append(("Loss per round", _line_plot(loss, "BCE (+ balance)", "Loss per round",
                                                  out / "loss.png").name, ""))
    ledger = _jsonl(run_dir / "privacy_ledger.jsonl")
    if ledger:
        from shared_model.ledger import ledger_table, plot_epsilon

        plot_epsilon(ledger, out / "epsilon.png")
        sections.append(("Privacy budget per site", "epsilon.png", ledger_table(ledger)))
    last = max((r["round"] for r in evals), default=None)
    for site in sorted({r["site"] for r in evals}):
        final = next(r for r in evals if r["site"] == site and r["round"] == last)
        table = _routing(site, final)
        if table:
            png = routing_heatmap(table, out / f"routing-{site}.png",
                                  f"{site}: mean routing weight (round {last})")
            sections.append((f"Expert routing at {site}", png.name, ""))
    sections += _gate_sections(rounds, out)
    if last is not None:
        sections.append((f"Test AUROC per modality combination (round {last})", None,
                         _combination_table({r["site"]: r for r in evals if r["round"] == last})))
    cross = run_dir / "cross_site.md"
    sections.append(("Cross-site evaluation (final global model)", None,
                     cross.read_text() if cross.is_file() else "(run not finished)"))
    contrib = next((r for r in reversed(rounds) if r["kind"] == "train"), None)
    if contrib:
        lines = ["| group | contributing sites (training samples) |", "|---|---|"]
        lines += [f"| {g} | {', '.join(f'{s} ({n})' for s, n in sites_.items())} |"
                  for g, sites_ in contrib["contributors"].items()]
        sections.append((f"Who trained what (round {contrib['round']})", None, "\n".join(lines) + "\n"))
    return _write(out, run_dir, sections)


def _gate_sections(rounds: list[dict], out: Path) -> list[tuple[str, str | None, str]]:
    """Share of routing weight per expert over the rounds, and misrouted combinations."""
    gates = [(r["round"], r["gate"]) for r in rounds if r["kind"] == "evaluate" and r.get("gate")]
    if not gates:
        return []
    experts = sorted({e for _, g in gates for e in g["expert_share"]})
    series = {f"experts.{e}": [(rnd, g["expert_share"].get(e, 0.0)) for rnd, g in gates]
              for e in experts}
    png = _line_plot(series, "share of routing weight", "Gate health: routing weight per expert",
                     out / "gate.png")
    last_round, last = gates[-1]
    text = "| samples | share routed to experts of modalities they lack |\n|---|---|\n"
    text += "".join(f"| {c} | {m:.2f} |\n" for c, m in last["misrouted"].items()) or "| (none) | |\n"
    return [(f"Gate health (misrouting over {MISROUTED:.1f} flagged, round {last_round})", png.name,
             text)]


def _combination_table(final: dict[str, dict]) -> str:
    lines = ["| site | combination | test n | AUROC |", "|---|---|---|---|"]
    for site, metrics in sorted(final.items()):
        for combo, values in sorted(EvaluateReply.parse(site, metrics).by_combination.items()):
            lines.append(f"| {site} | {combo} | {int(values.get('n', 0))} | "
                         f"{_fmt(values.get('auroc'))} |")
    return "\n".join(lines) + "\n"


def _write(out: Path, run_dir: Path, sections: list[tuple[str, str | None, str]]) -> Path:
    md = [f"# moehealth run report\n\nRun directory: `{run_dir}`\n"]
    body = [f"<h1>moehealth run report</h1><p>Run directory: <code>{html.escape(str(run_dir))}</code></p>"]
    for title, image, text in sections:
        md.append(f"## {title}\n")
        body.append(f"<h2>{html.escape(title)}</h2>")
        if image:
            md.append(f"![{title}]({image})\n")
            body.append(f'<img src="{image}" style="max-width:900px">')
        if text:
            md.append(text + "\n")
            body.append(f"<pre>{html.escape(text)}</pre>")
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text("<html><body>" + "\n".join(body) + "</body></html>\n")
    return out / "report.md"
