"""Audit a privacy ledger: per-site per-round table, final budgets, independent recomputation.

``verify_ledger`` recomputes every row's epsilon from what the row says ran (noise multiplier,
sample rate, steps; or the full history when the settings changed) with Google's dp-accounting
(PLD and RDP), independent of the Opacus accountant that wrote it. A PRV ledger is honest when it
is at or above the PLD value (within ``tolerance``); an RDP ledger must match dp-accounting RDP.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared_model.errors import MoeHealthInputError

REQUIRED = ("round", "site", "epsilon", "delta", "noise_multiplier", "sample_rate", "steps_round",
            "steps_total", "max_grad_norm", "accountant", "declined")


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """Rows of a ledger file (JSON lines), checked for the required fields. A run directory reads
    its ``privacy_ledger.jsonl``; a run without DP sites says so."""
    path = Path(path)
    if path.is_dir():
        if not (path / "rounds.jsonl").is_file():
            raise MoeHealthInputError(f"{path}: neither a ledger file nor a run directory")
        if not (path / "privacy_ledger.jsonl").is_file():
            raise MoeHealthInputError(f"{path}: this run has no privacy ledger: no site trained "
                                      "under DP (nothing to audit)")
        path = path / "privacy_ledger.jsonl"
    if not path.exists():
        raise MoeHealthInputError(f"{path}: no such ledger file")
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise MoeHealthInputError(f"{path}: cannot read ledger ({err})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise MoeHealthInputError(f"{path}:{number}: not a JSON ledger row") from None
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise MoeHealthInputError(f"{path}:{number}: ledger row lacks '{missing[0]}'")
        rows.append(restore_infinity(row))
    if not rows:
        raise MoeHealthInputError(f"{path}: empty ledger")
    return rows


def restore_infinity(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no infinity: a run directory writes the no-noise recipe's epsilon (and target) as
    null. Read back, they are inf again: no guarantee."""
    return row | {k: math.inf for k in ("epsilon", "target_epsilon")
                  if k in row and row[k] is None and row.get("noise_multiplier") == 0}


def _segments(row: dict[str, Any]) -> list[tuple[float, float, int]]:
    history = row.get("history") or [[row["noise_multiplier"], row["sample_rate"], row["steps_total"]]]
    return [(float(s), float(q), int(n)) for s, q, n in history if int(n) > 0]


def recompute(row: dict[str, Any]) -> dict[str, float]:
    """Epsilon of what the row says ran, by dp-accounting PLD and RDP."""
    import dp_accounting as dpa
    from absl import logging as absl_logging
    from dp_accounting import pld, rdp

    absl_logging.set_verbosity(absl_logging.ERROR)
    segments = _segments(row)
    if not segments:
        return {"pld": 0.0, "rdp": 0.0}
    if any(sigma == 0 for sigma, _, _ in segments):
        return {"pld": math.inf, "rdp": math.inf}  # steps without noise: no guarantee
    event = dpa.ComposedDpEvent([
        dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), n)
        for sigma, q, n in segments])
    out = {}
    for name, accountant in (("pld", pld.PLDAccountant()), ("rdp", rdp.RdpAccountant())):
        accountant.compose(event)
        out[name] = float(accountant.get_epsilon(float(row["delta"])))
    return out


@dataclass
class Finding:
    row: dict[str, Any]
    recomputed: dict[str, float]
    problem: str | None


def verify_ledger(rows: list[dict[str, Any]], tolerance: float = 0.01) -> list[Finding]:
    """Check every row; a finding's ``problem`` says why a row is wrong (None when fine): an
    epsilon below what dp-accounting recomputes, a released round above the row's target, a
    sample rate or step count that the row's history contradicts, or a site answering one round
    twice (rows a resumed run marked ``after_checkpoint`` still count: they were released)."""
    findings = []
    seen: set[tuple[str, int]] = set()
    for row in rows:
        key = (str(row["site"]), int(row["round"]))
        problem = _row_problem(row, tolerance) or (
            f"round {key[1]} of site {key[0]} appears twice" if key in seen else None)
        seen.add(key)
        findings.append(Finding(row, recompute(row), problem))
    return findings


def _row_problem(row: dict[str, Any], tolerance: float) -> str | None:
    rec = recompute(row)
    claimed = float(row["epsilon"])
    segments = _segments(row)
    target = row.get("target_epsilon")
    last = segments[-1] if segments else None
    if sum(n for _, _, n in segments) != int(row["steps_total"]):
        return "history steps do not add up to steps_total"
    if last and abs(last[0] - float(row["noise_multiplier"])) > 1e-9:
        return "history noise multiplier differs from the reported one"
    if last and abs(last[1] - float(row["sample_rate"])) > 1e-12:
        return f"history sample rate {last[1]:.6g} differs from the reported {row['sample_rate']}"
    if not row["declined"] and last and last[2] < int(row["steps_round"]):
        return "steps_round exceeds the history's last segment"
    if row["accountant"] == "rdp" and claimed < rec["rdp"] - tolerance:
        return f"epsilon {claimed:.4f} < dp-accounting RDP {rec['rdp']:.4f}"
    if claimed < rec["pld"] - tolerance:
        return f"epsilon {claimed:.4f} < dp-accounting PLD {rec['pld']:.4f}"
    if target is not None and not row["declined"] and max(claimed, rec["pld"]) > float(target) + 1e-9:
        return f"epsilon {max(claimed, rec['pld']):.4f} above the target {target}"
    return None


def ledger_table(rows: list[dict[str, Any]], findings: list[Finding] | None = None) -> str:
    """Markdown: one line per site and round, then the final budget per site."""
    head = ["| site | round | epsilon | delta | sigma | q | steps (round/total) | C | declined |"]
    if findings:
        head[0] += " PLD | RDP | check |"
    lines = head + ["|" + "---|" * (head[0].count("|") - 1)]
    by_row = {id(f.row): f for f in findings or []}
    for r in sorted(rows, key=lambda r: (str(r["site"]), int(r["round"]))):
        line = (f"| {r['site']} | {r['round']} | {float(r['epsilon']):.3f} | {float(r['delta']):.2e} | "
                f"{float(r['noise_multiplier']):.3f} | {float(r['sample_rate']):.4f} | "
                f"{r['steps_round']}/{r['steps_total']} | {r['max_grad_norm']} | "
                f"{'yes: ' + str(r.get('reason', '')) if r['declined'] else 'no'} |")
        if findings:
            f = by_row[id(r)]
            line += (f" {f.recomputed['pld']:.3f} | {f.recomputed['rdp']:.3f} | "
                     f"{'FAIL: ' + f.problem if f.problem else 'ok'} |")
        lines.append(line)
    lines += ["", "| site | final epsilon | delta | target | rounds trained | declined |",
              "|---|---|---|---|---|---|"]
    for site in sorted({str(r["site"]) for r in rows}):
        mine = sorted((r for r in rows if str(r["site"]) == site), key=lambda r: int(r["round"]))
        last = mine[-1]
        lines.append(f"| {site} | {float(last['epsilon']):.3f} | {float(last['delta']):.2e} | "
                     f"{last.get('target_epsilon', '')} | {sum(not r['declined'] for r in mine)} | "
                     f"{sum(bool(r['declined']) for r in mine)} |")
    return "\n".join(lines) + "\n"


def plot_epsilon(rows: list[dict[str, Any]], path: Path,
                 colours: dict[str, str] | None = None) -> Path:
    """PNG of epsilon spent per round, one line per site (``colours``: site -> colour), with each
    site's target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    for site in sorted({str(r["site"]) for r in rows}):
        mine = sorted((r for r in rows if str(r["site"]) == site), key=lambda r: int(r["round"]))
        line, = ax.plot([r["round"] for r in mine], [r["epsilon"] for r in mine], marker="o",
                        label=site, color=(colours or {}).get(site))
        target = mine[-1].get("target_epsilon")
        if target and math.isfinite(float(target)):
            ax.axhline(float(target), color=line.get_color(), linestyle=":", linewidth=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("epsilon spent (dotted: target)")
    ax.set_title("Privacy budget per site (unit: patient unless the ledger says stay)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


logging.getLogger("absl").setLevel(logging.ERROR)
