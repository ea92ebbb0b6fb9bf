"""Both synthetic populations of a data configuration, generated side by side.

The generator is single-threaded numpy, pandas and PIL work: the training population (20,000
patients in the benchmark presets, ~2 min) and the independent test population (12,500, ~1 min)
each keep one core busy. When both must be generated, they are generated in two spawned processes
at once, each followed by its cohort build (and the training population by its partition), and
the worker that finishes first then draws the synthetic PACS archive that the image backbone is
pre-trained on. A first benchmark build so waits for the longest of these instead of their sum.
Each population and the archive have their own random stream (seed and identifier block), so
what is written is exactly what one after the other writes (tests/test_populations.py).

The pre-training itself is not run beside them: torch's two threads beside a busy core are ~3x
slower per step, and on one thread the weights differ (another order of float sums, amplified
by the optimizer).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulation.prepare import FederationData, partition_sites, test_population_cohort

if TYPE_CHECKING:
    from simulation.image_pretraining import PacsArchive, PacsPretraining

log = logging.getLogger(__name__)


def _missing(synth: Path | None) -> bool:
    return synth is not None and not (synth / "synth.json").is_file()


def build_populations(data: FederationData, progress: bool = False, *,
                      draw_pacs: bool = False) -> PacsArchive | None:
    """Generate and cut whatever is missing of the training cohort (cohort, site partition) and
    of the test population's cohort; nothing is encoded.

    Side by side in two processes when both synthetic populations are still to be generated and
    the machine has two cores; otherwise one after the other in this process (a spawned process
    costs a few seconds of imports, more than a cohort build from existing files). With
    ``draw_pacs``, when the populations are generated side by side and the image backbone still
    has to be pre-trained on the synthetic PACS, its archive is drawn there too and returned
    (for ``FederationData.encoder_config``); None otherwise.
    """
    test_root = data.test_population_dir()
    both_missing = _missing(data.synth_dir()) and test_root is not None and _missing(
        test_root / "synth")
    if not both_missing or (os.cpu_count() or 1) < 2:
        partition_sites(data, progress)
        test_population_cohort(data, progress)
        return None
    pacs = data.pacs_to_pretrain() if draw_pacs else None
    log.info("generating the training and the test population side by side (two processes)%s",
             ", then the synthetic PACS archive" if pacs else "")
    level = logging.getLogger().getEffectiveLevel()
    jobs: list[tuple[str, Callable[..., Any], Any]] = [
        ("training population", partition_sites, data),
        ("test population", test_population_cohort, data)]
    if pacs is not None:
        jobs.append(("synthetic PACS", _draw_archive, pacs))
    context = get_context("spawn")  # no fork of a process that may hold torch's thread pools
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        futures = [pool.submit(_labelled, name, job, arg, progress, level)
                   for name, job, arg in jobs]  # the third runs on the first worker free
        results = [future.result() for future in futures]  # a failure is raised as it was
    return results[2] if pacs is not None else None


def _draw_archive(config: PacsPretraining, _progress: bool) -> PacsArchive:
    from simulation.image_pretraining import synthetic_pacs

    return synthetic_pacs(config)


def _labelled(name: str, job: Callable[[Any, bool], Any], arg: Any, progress: bool,
              level: int) -> Any:
    """Run ``job`` in a worker, with log lines instead of a progress bar (two bars would
    overwrite each other), each line naming what it builds.

    BLAS keeps its usual thread count: the reachable-ceiling fits (a few seconds) would otherwise
    sum in another order and ``oracle.csv`` would differ from a serial build in the 14th digit.
    """
    os.environ["TQDM_DISABLE"] = "1"
    logging.basicConfig(level=level, format=f"%(levelname)s [{name}] %(name)s: %(message)s",
                        force=True)
    return job(arg, progress)
