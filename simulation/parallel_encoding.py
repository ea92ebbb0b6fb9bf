"""Encode a first build's notes in two processes, with the vectors a serial build gets.

On a CPU the text encoder gains almost nothing from a second torch thread (MiniLM-L6 on the
synthetic notes: 20.5 ms a note on two threads against 22.2 ms on one), so two processes at one
thread each encode a benchmark's ~17,500 notes nearly twice as fast as one process at two.
Films are left to the serial build: DenseNet-121 gains 1.8x from the second thread, and its
vectors can depend on the thread count (at 32 px they do, in the 6th digit); a note's do not
(tests/test_parallel_encoding.py checks it on the machine that runs the tests). A note's vector
does depend on which notes share its batch (~4e-7: the padded length changes the matrix shapes),
so each site (then the test population) is one job that encodes exactly the notes the serial
build would have it encode, in the same order and batches: those its store lacks, minus those
of the sites before it (``encode_site_inputs``'s skip set). The site caches are then assembled
as usual; ``build_site_features`` finds every note's vector in the store and encodes the films.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from client.features.cache import (
    EncoderConfig,
    encode_site_inputs,
    encoder_identities,
    site_inputs,
    valid_site_cache,
)
from client.features.store import EmbeddingStore, note_key
from shared_model.paths import default_cache_dir

if TYPE_CHECKING:
    from simulation.prepare import FederationData

log = logging.getLogger(__name__)
MIN_NOTES = 2000  # below this, two processes' start-up (~10 s) costs more than they save
_COLUMNS = ["has_notes", "note_text", "has_cxr", "cxr_path"]


@dataclass(frozen=True)
class EncodingJob:
    """One site's share of the build: its notes, and the keys the sites before it encode."""

    site: str
    samples: pd.DataFrame  # only the columns site_inputs reads
    skip_notes: frozenset[str]
    notes: int  # how many it will encode


def plan_jobs(sites: list[tuple[str, pd.DataFrame]], config: EncoderConfig,
              cache_dir: Path | None = None) -> list[EncodingJob]:
    """One job per site (in the order the serial build encodes them) with notes to encode; a
    site whose feature cache is valid encodes nothing in the serial build either."""
    store = EmbeddingStore(cache_dir or default_cache_dir(), encoder_identities(config)[0])
    claimed: set[str] = set()
    jobs = []
    for site, samples in sites:
        if valid_site_cache(samples, site, config, cache_dir) is not None:
            continue
        keys = [note_key(t) for t in site_inputs(samples)[0]]
        todo = {keys[i] for i in store.missing(keys)} - claimed
        if todo:
            jobs.append(EncodingJob(site, samples[_COLUMNS], frozenset(claimed), len(todo)))
        claimed.update(keys)
    return jobs


def encode_side_by_side(sites: list[tuple[str, pd.DataFrame]], config: EncoderConfig,
                        cache_dir: Path | None = None, progress: bool = False, *,
                        min_notes: int = MIN_NOTES) -> bool:
    """Encode into the text store every note ``sites`` (in serial order) still need, in two
    processes, when that pays (two cores or more, a CPU device, at least ``min_notes`` notes,
    two jobs or more). Returns whether it ran; if not, the serial build encodes them."""
    cores = os.cpu_count() or 1
    if cores < 2 or config.torch_device().type != "cpu":
        return False
    jobs = plan_jobs(sites, config, cache_dir)
    notes = sum(job.notes for job in jobs)
    if len(jobs) < 2 or notes < min_notes:
        return False
    started = time.perf_counter()
    log.info("encoding %d notes of %d sites in two processes (%d torch thread(s) each)", notes,
             len(jobs), cores // 2)
    level = logging.getLogger().getEffectiveLevel()
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        # longest first, each next job to the first worker free (a greedy balance)
        futures = [pool.submit(_encode_job, job, config, cache_dir, progress, level, cores // 2)
                   for job in sorted(jobs, key=lambda job: job.notes, reverse=True)]
        for future in futures:
            future.result()
    log.info("notes encoded side by side: %d in %.1f s", notes, time.perf_counter() - started)
    return True


def _encode_job(job: EncodingJob, config: EncoderConfig, cache_dir: Path | None,
                progress: bool, level: int, threads: int) -> None:
    """A worker: ``threads`` torch threads, log lines naming the site instead of a bar."""
    import torch

    os.environ["TQDM_DISABLE"] = "1"
    logging.basicConfig(level=level, format=f"%(levelname)s [{job.site}] %(name)s: %(message)s",
                        force=True)
    torch.set_num_threads(threads)
    encode_site_inputs(job.samples, job.site, config, cache_dir, skip_notes=job.skip_notes,
                       films=False, progress=progress)


def encode_federation_side_by_side(data: FederationData, encoders: EncoderConfig,
                                   cache_dir: Path | None = None, progress: bool = False) -> bool:
    """``encode_side_by_side`` for a data configuration: its sites, then its test population
    (the order ``moehealth prepare`` builds them in); their cohorts are built already."""
    from client.data.sites import read_site_samples
    from client.mimic.cohort import read_cohort
    from simulation.prepare import TEST_POPULATION_SITE, partition_sites, test_population_cohort

    sites = [(site, read_site_samples(folder)) for site, folder in partition_sites(data).items()]
    cohort = test_population_cohort(data)
    if cohort is not None:
        sites.append((TEST_POPULATION_SITE, read_cohort(cohort).assign(split="test")))
    return encode_side_by_side(sites, encoders, cache_dir, progress)
