"""A results table across runs (FLamby style): one row per run directory under a folder, rebuilt
from each run's own records, so it never disagrees with them. Written as ``results.csv`` and
``results.md`` in that folder at the end of every run, and by ``moehealth results [DIR]``."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from server.report import read_json, read_jsonl, run_status
from server.run_dir import DATA_SUMMARY, RunDirectory
from shared_model.protocol import pooled_key, split_key

COLUMNS = ("run", "status", "task", "rounds", "sites", "dp", "aggregation", "fusion", "seed",
           "pooled_test_auroc", "pooled_auroc_low", "pooled_auroc_high", "pooled_brier",
           "mean_site_test_auroc", "final_train_loss", "started", "data")


def run_row(run_dir: Path) -> dict[str, Any]:
    """One run's configuration and final results."""
    config = read_json(run_dir / "config.json")
    rounds = read_jsonl(run_dir / "rounds.jsonl")
    train = [r for r in rounds if r["kind"] == "train"]
    pooled = next((r for r in reversed(rounds) if r["kind"] == "centralized-eval"), {})
    evaluate = next((r for r in reversed(rounds) if r["kind"] == "evaluate"), {})
    sites = sorted({s for r in train for s in r.get("accepted", [])})

    def num(value: Any) -> float | str:
        return round(float(value), 4) if value is not None and math.isfinite(float(value)) else ""

    return {"run": run_dir.name, "status": run_status(rounds, (run_dir / "cross_site.md").is_file(),
                                                      RunDirectory.is_running(run_dir)),
            "task": config.get("task", ""), "rounds": max((r["round"] for r in train), default=0),
            "sites": len(sites), "dp": config.get("dp.enabled", ""),
            "aggregation": f"{config.get('aggregation-rule', '')}/{config.get('aggregation', '')}",
            "fusion": config.get("model.fusion", ""), "seed": config.get("seed", ""),
            "pooled_test_auroc": num(pooled.get(pooled_key("auroc"))),
            "pooled_auroc_low": num(pooled.get(pooled_key("auroc_low"))),
            "pooled_auroc_high": num(pooled.get(pooled_key("auroc_high"))),
            "pooled_brier": num(pooled.get(pooled_key("brier"))),
            "mean_site_test_auroc": num(evaluate.get(split_key("test", "auroc"))),
            "final_train_loss": num(train[-1].get("train_loss")) if train else "",
            "started": _started(train),
            "data": read_json(run_dir / DATA_SUMMARY).get("source", "") or "deployment (sites' own)"}


def _started(train: list[dict[str, Any]]) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(train[0]["time"])) if train else ""


def results_table(runs_dir: Path) -> list[dict[str, Any]]:
    """Rows of every run directory (a folder with rounds.jsonl, or a running one) directly under
    ``runs_dir``."""
    runs = sorted(p for p in Path(runs_dir).iterdir()
                  if (p / "rounds.jsonl").is_file() or RunDirectory.is_running(p))
    return [run_row(p) for p in runs]


def write_results_table(runs_dir: Path) -> Path:
    """``results.csv`` and ``results.md`` in ``runs_dir``; returns the Markdown file."""
    rows = results_table(runs_dir)
    with open(runs_dir / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    (runs_dir / "results.md").write_text("\n".join(lines) + "\n")
    return runs_dir / "results.md"
