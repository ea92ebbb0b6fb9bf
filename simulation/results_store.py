"""Experiment results kept with their provenance, and the documentation tables made from them.

Every ``moehealth experiment`` writes ``provenance.json`` beside its ``results.csv`` (commit,
command, preset and generator version, seeds, machine, wall and CPU time, peak memory). Results
meant for the documentation are written under ``bench/results/<experiment>/<date>-<preset>/``
and committed. A document cites them with a marked region::

    <!-- results: bench/results/models/2026-12-06-benchmark-hospitals -->
    ...generated table...
    <!-- /results -->

``python bench/tables.py`` rewrites every region from its results files; tests/test_results_docs.py
fails when a region differs from what its files give (a number in the docs is the number a rerun
stored).
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
REGION = re.compile(r"(<!-- results: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- /results -->)",
                    re.DOTALL)


@dataclass(frozen=True)
class Provenance:
    """Where a set of results came from and what it cost."""

    experiment: str
    command: str
    commit: str
    preset: str
    arm: str  # the synthetic generator's version (simulation/synth)
    seeds: list[int]
    machine: str
    started_utc: str
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    note: str = ""

    def line(self) -> str:
        """One line under a table: what ran, where, and its cost."""
        seeds = f", seeds {', '.join(map(str, self.seeds))}" if self.seeds else ""
        return (f"Results: commit {self.commit}, `{self.command}`{seeds}; {self.machine}; wall "
                f"{self.wall_s / 60:.1f} "
                f"min, CPU {self.cpu_s / 60:.1f} min, peak memory {self.peak_rss_mib / 1024:.1f} "
                f"GiB" + (f"; {self.note}" if self.note else "") + ".")


def current_commit() -> str:
    """The repository's commit, with ``+changes`` when the working tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=False).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, {device}, "
            f"torch {torch.__version__}")


def measure(experiment: str, preset: str, arm: str, seeds: list[int], started: float,
            commit: str, command: str | None = None) -> Provenance:
    """The provenance of the experiment this process ran since ``started`` (time.time()) from
    ``commit`` (taken when it started: the tree may change while it runs); ``command`` defaults
    to this process's ``moehealth`` command line."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return Provenance(
        experiment=experiment, command=command or "moehealth " + " ".join(sys.argv[1:]),
        commit=commit, preset=preset, arm=arm, seeds=list(seeds), machine=machine(),
        started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        wall_s=round(time.time() - started, 1),
        cpu_s=round(sum(u.ru_utime + u.ru_stime for u in usage), 1),
        peak_rss_mib=round(max(u.ru_maxrss for u in usage) / 1024, 1))  # Linux: KiB


def write_tables(out: Path, frame: pd.DataFrame, diffs: pd.DataFrame, title: str,
                 markdown: str) -> None:
    """An experiment's ``results.csv``, ``differences.csv`` and ``results.md`` (the CSVs are
    what bench/tables.py renders into the docs)."""
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "results.csv", index=False)
    diffs.to_csv(out / "differences.csv", index=False)
    (out / "results.md").write_text(f"# {title}\n\n{markdown}")


def write_provenance(out: Path, provenance: Provenance) -> Path:
    path = out / "provenance.json"
    path.write_text(json.dumps(asdict(provenance), indent=1) + "\n")
    return path


def read_provenance(folder: Path) -> Provenance:
    return Provenance(**json.loads((folder / "provenance.json").read_text()))


def _read(path: Path) -> pd.DataFrame:
    """A results CSV as the experiment held it (an empty text cell stays "", not NaN)."""
    frame = pd.read_csv(path)
    text = [c for c in frame.columns if pd.api.types.is_string_dtype(frame[c].dtype)]
    frame[text] = frame[text].fillna("")
    return frame


def _models(folder: Path) -> str:
    from simulation.model_comparison import comparison_markdown

    return comparison_markdown(_read(folder / "results.csv"), _read(folder / "differences.csv"))


def _yardstick(folder: Path) -> str:
    from simulation.tabular_baselines import yardstick_markdown

    return yardstick_markdown(_read(folder / "results.csv"), _read(folder / "differences.csv"))


def _external(folder: Path) -> str:
    from simulation.external import external_markdown

    return external_markdown(_read(folder / "results.csv"))


def _robustness(folder: Path) -> str:
    from simulation.robustness import robustness_markdown

    return robustness_markdown(_read(folder / "results.csv"), _read(folder / "differences.csv"))


def _fl_vs_central(folder: Path) -> str:
    from simulation.experiments import fl_vs_central_markdown

    return fl_vs_central_markdown(_read(folder / "results.csv"), _read(folder / "differences.csv"))


def _runs(label: str) -> Callable[[Path], str]:
    """Federated runs (ablations, heterogeneity, privacy-utility): one row per ``label``."""
    def render_runs(folder: Path) -> str:
        from simulation.experiments import runs_markdown

        return runs_markdown(_read(folder / "results.csv"), _read(folder / "differences.csv"),
                             label)
    return render_runs


def _runs_and_selection(label: str, selection: str) -> Callable[[Path], str]:
    """The runs table, and what the run chose on validation where it chose something
    (``selection.csv`` rendered by ``simulation.experiments.<selection>``): the server-lr of a
    FedAdam variant (heterogeneity), the default configuration (ablations)."""
    def render(folder: Path) -> str:
        from simulation import experiments

        text = _runs(label)(folder)
        if (folder / "selection.csv").is_file():
            text += "\n" + getattr(experiments, selection)(_read(folder / "selection.csv"))
        return text
    return render


BENCH = "performance"  # the experiment name of a benchmark table (bench/record.py)
BENCH_SUMMARY = "summary.md"  # the lines under a benchmark table


def markdown_row(cells: Iterable[object]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def markdown_header(columns: list[str]) -> str:
    """A table's header row and its separator."""
    return markdown_row(columns) + "\n" + "|---" * len(columns) + "|"


def _bench(folder: Path) -> str:
    """A benchmark's table as it printed it (cells are text), with the lines under it."""
    frame = pd.read_csv(folder / "results.csv", dtype=str, keep_default_na=False)
    lines = [markdown_header(list(frame.columns))]
    lines += [markdown_row(row) for row in frame.itertuples(index=False)]
    summary_file = folder / BENCH_SUMMARY
    summary = summary_file.read_text() if summary_file.is_file() else ""
    return "\n".join(lines) + "\n" + ("\n" + summary if summary else "")


def _dp_recipe(folder: Path) -> str:
    from simulation.dp_recipe import dp_recipe_markdown

    return dp_recipe_markdown(_read(folder / "results.csv"))


RENDERERS: dict[str, Callable[[Path], str]] = {
    "models": _models, "yardstick": _yardstick, "external": _external, "robustness": _robustness,
    "fl-vs-central": _fl_vs_central,
    "ablations": _runs_and_selection("variant", "variant_selection_markdown"),
    "heterogeneity": _runs_and_selection("run", "selection_markdown"),
    "privacy-utility": _runs("setting"), "personalization": _runs("run"),
    "dp-recipe": _dp_recipe, BENCH: _bench}


def render(folder: Path) -> str:
    """The Markdown a document shows for a stored result: its tables and its provenance line."""
    provenance = read_provenance(folder)
    if provenance.experiment not in RENDERERS:
        raise ValueError(f"{folder}: no table renderer for experiment '{provenance.experiment}' "
                         f"(known: {', '.join(RENDERERS)})")
    return RENDERERS[provenance.experiment](folder).rstrip() + "\n\n" + provenance.line() + "\n"


def refreshed(text: str) -> str:
    """``text`` with every results region rendered again from its folder."""
    return REGION.sub(lambda m: m.group(1) + render(REPO / m.group("path")) + m.group(4), text)


def stale_regions(document: Path) -> list[str]:
    """The results folders whose region in ``document`` differs from what they render."""
    text = document.read_text()
    return [m.group("path") for m in REGION.finditer(text)
            if m.group("body") != render(REPO / m.group("path"))]
