"""Performance benchmarks, each printing ratios measured in one run (never asserted in tests).

    python bench/benchmarks.py cohort-scaling   # cohort build time + peak RSS, 1k/5k/20k patients
    python bench/benchmarks.py feature-cache    # encoder seconds per 1,000 samples (notes, images)
    python bench/benchmarks.py repartition      # encoding a re-partitioned cohort vs the first time
    python bench/benchmarks.py site-scaling     # rounds/s and peak memory for 2/5/10/20 sites
    python bench/benchmarks.py bytes RUN_DIR    # bytes uploaded per site per round vs full model
    python bench/benchmarks.py boosting-threads # gradient-boosting fit, 1 vs all OpenMP threads,
                                                # idle and beside a busy process
    python bench/benchmarks.py encoders         # the encoders' CPU path now vs before, with
                                                # the features' agreement and the compute floor
    python bench/benchmarks.py population-encoding  # ms per note and film: a site's inputs vs
                                                # the test population's (benchmark preset)
    python bench/benchmarks.py films            # MIMIC-size JPEGs: encoding films/s against the
                                                # decode and forward-pass floors
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent

from bench.record import BenchTable, add_store_arg  # noqa: E402


def cohort_scaling(sizes: list[int]) -> BenchTable:
    """Synthetic set of N patients -> `moehealth cohort` in a fresh process (peak RSS of it)."""
    table = BenchTable(["patients", "ICU stays in cohort", "synth s", "cohort s",
                        f"cohort s per patient / at {sizes[0]:,}", "cohort peak RSS MB"])
    base = None
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            subprocess.run([BIN / "moehealth", "synth", "--out", tmp, "--patients", str(n)],
                           check=True, capture_output=True)
            synth_s = time.perf_counter() - started
            out = subprocess.run(
                [BIN / "moehealth", "cohort", "--quiet", "--mimic-iv", f"{tmp}/mimic-iv",
                 "--mimic-note", f"{tmp}/mimic-iv-note", "--mimic-cxr", f"{tmp}/mimic-cxr-jpg",
                 "--out", f"{tmp}/cohort.parquet"], check=True, capture_output=True, text=True)
            result = json.loads(out.stdout)
            base = base or result["seconds"] / n
            table.add(f"{n:,}", f"{result['stays']:,}", f"{synth_s:.1f}", f"{result['seconds']:.1f}",
                      f"{result['seconds'] / n / base:.2f}", f"{result['peak_rss_mb']:.0f}")
    return table


def feature_cache(patients: int) -> BenchTable:
    """Encode one synthetic site from scratch; seconds per 1,000 samples for each encoder."""
    from client.data.sites import SplitConfig, assign_splits
    from client.features.cache import EncoderConfig, build_site_features
    from client.mimic.cohort import MimicRoots, build_cohort
    from client.mimic.config import CohortConfig
    from simulation.synth import generate_synthetic_mimic

    with tempfile.TemporaryDirectory() as tmp:
        generate_synthetic_mimic(Path(tmp), patients=patients)
        cohort = build_cohort(MimicRoots(Path(tmp) / "mimic-iv", Path(tmp) / "mimic-iv-note",
                                         Path(tmp) / "mimic-cxr-jpg"), CohortConfig(progress=False))
        samples = assign_splits(cohort, SplitConfig())
        cache = build_site_features(samples, "bench", EncoderConfig(), Path(tmp) / "cache",
                                    progress=False)
        manifest = json.loads((cache / "manifest.json").read_text())
    table = BenchTable(["inputs", "encoded", "s per 1,000 (encoder loading included)"])
    for name, kind in (("notes (MiniLM-L6, 256 tokens)", "notes"),
                       ("films (DenseNet-121, 224 px)", "images")):
        per_1000 = manifest[f"seconds_{kind}"] / manifest[f"{kind}_encoded"] * 1000
        table.add(name, manifest[f"{kind}_encoded"], f"{per_1000:.1f}")
    return table


def repartition(patients: int) -> BenchTable:
    """Encode a synthetic cohort cut into 3 care-unit sites, then the same cohort cut into 3
    Dirichlet sites (another partition): seconds and inputs encoded for each, and the ratio."""
    from client.data.sites import SplitConfig, assign_splits
    from client.features.cache import EncoderConfig, build_site_features
    from client.mimic.cohort import MimicRoots, build_cohort
    from client.mimic.config import CohortConfig
    from shared_model.run_config import Scheme
    from simulation.partition import PartitionConfig, partition_patients
    from simulation.synth import generate_synthetic_mimic

    with tempfile.TemporaryDirectory() as tmp:
        generate_synthetic_mimic(Path(tmp), patients=patients)
        cohort = build_cohort(MimicRoots(Path(tmp) / "mimic-iv", Path(tmp) / "mimic-iv-note",
                                         Path(tmp) / "mimic-cxr-jpg"), CohortConfig(progress=False))
        timings = {}
        table = BenchTable(["step", "seconds", "notes encoded", "films encoded"])
        steps = {Scheme.CAREUNIT: "care-unit partition, first encoding",
                 Scheme.DIRICHLET: "Dirichlet re-partition of the same stays"}
        for scheme in (Scheme.CAREUNIT, Scheme.DIRICHLET):
            sites = partition_patients(cohort, PartitionConfig(num_sites=3, scheme=scheme))
            started, encoded = time.perf_counter(), [0, 0]
            for site, members in sites.groupby("site"):
                stays = cohort[cohort.subject_id.isin(members.subject_id)]
                folder = build_site_features(assign_splits(stays, SplitConfig(), site=str(site)),
                                             f"{scheme}-{site}", EncoderConfig(),
                                             Path(tmp) / "cache", progress=False)
                manifest = json.loads((folder / "manifest.json").read_text())
                encoded[0] += manifest["notes_encoded"]
                encoded[1] += manifest["images_encoded"]
            timings[scheme] = time.perf_counter() - started
            table.add(steps[scheme], f"{timings[scheme]:.1f}", encoded[0], encoded[1])
    table.summary(f"{len(cohort)} stays, 3 sites each time. Re-partition / first encoding: "
                  f"**{timings[Scheme.DIRICHLET] / timings[Scheme.CAREUNIT]:.3f}**.")
    return table


def _peak_tree_rss(root_pid: int, stop: threading.Event, out: list[float]) -> None:
    import psutil

    peak = 0.0
    while not stop.is_set():
        try:
            procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.5)
    out.append(peak)


def site_scaling(counts: list[int], rounds: int) -> BenchTable:
    """Federations of N sites over the same 2,000 patients (IID split): rounds/s, peak memory."""
    import psutil

    from simulation.local_superlink import local_simulation

    table = BenchTable(["sites", "rounds", "wall s (incl. data prep + start)",
                        "s per round (steady)", "rounds/s", "peak memory of SuperLink tree MB"])
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            with local_simulation(Path(tmp) / f"flwr{n}") as sim:
                superlink = max(psutil.Process().children(), key=lambda p: p.create_time())
                stop, peak = threading.Event(), []
                watcher = threading.Thread(target=_peak_tree_rss, args=(superlink.pid, stop, peak))
                watcher.start()
                outcome = sim.run({"num-server-rounds": rounds, "pretrain-rounds": 1,
                                   "data.num-sites": n, "data.scheme": "iid", "data.profile": "none",
                                   "min-sites": n,
                                   "run-dir": f"{tmp}/run{n}"}, num_supernodes=n, timeout=3600)
                stop.set()
                watcher.join()
            if not outcome.ok:
                print(outcome.log[-3000:], file=sys.stderr)
                table.add(n, f"failed: {outcome.status}", "", "", "", "")
                continue
            per_round = _steady_round_seconds(Path(f"{tmp}/run{n}"))
            table.add(n, rounds, f"{outcome.seconds:.0f}", f"{per_round:.1f}",
                      f"{1 / per_round:.3f}", f"{peak[0]:.0f}")
    return table


def _steady_round_seconds(run_dir: Path) -> float:
    """Seconds between the ends of consecutive rounds (training + evaluation), from rounds.jsonl."""
    ends = [json.loads(x)["time"] for x in (run_dir / "rounds.jsonl").read_text().splitlines()
            if json.loads(x)["kind"] == "evaluate"]
    return (ends[-1] - ends[0]) / max(len(ends) - 1, 1)


def bytes_per_round(run_dir: Path) -> BenchTable:
    """Mean bytes each site uploaded per round, relative to the full model's parameters."""
    from shared_model import build_model
    from shared_model.config import model_config_from_run_config
    from shared_model.params import count_bytes, model_to_arrays

    config = json.loads((run_dir / "config.json").read_text())
    full = count_bytes(model_to_arrays(build_model(model_config_from_run_config(config))))
    per_site: dict[str, list[int]] = {}
    for line in (run_dir / "rounds.jsonl").read_text().splitlines():
        row = json.loads(line)
        for site, n in row.get("bytes_received", {}).items():
            per_site.setdefault(site, []).append(n)
    table = BenchTable(["site", "mean bytes per round", "ratio to full model"])
    for site, values in sorted(per_site.items()):
        mean = sum(values) / len(values)
        table.add(site, f"{mean:.0f}", f"{mean / full:.3f}")
    table.summary(f"Full model: {full:,} bytes of parameters.")
    return table


def encoders(patients: int) -> BenchTable:
    """The note and film encoders on one synthetic cohort, the previous CPU path against the
    current one in the same run (before: notes batched in cohort order, DenseNet-121 in
    contiguous memory; now: notes batched by token count, DenseNet-121 channels-last), with the
    largest difference and the smallest cosine of any vector, and the forward pass alone on
    preloaded inputs (the floor); also dynamic int8 quantization of the text encoder's linear
    layers, a candidate kept only if cosine >= 0.99."""
    import numpy as np
    import torch

    from client.features.image import ImageEncoder
    from client.features.text import TextEncoder
    from client.mimic.cohort import MimicRoots, build_cohort
    from client.mimic.config import CohortConfig
    from simulation.synth import generate_synthetic_mimic

    def timed(step) -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        out = step()
        return time.perf_counter() - started, out

    def agreement(a: np.ndarray, b: np.ndarray) -> str:
        cosine = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return f"max difference {np.abs(a - b).max():.1e}, min cosine {cosine.min():.5f}"

    def ms(seconds: float, count: int) -> str:
        return f"{seconds / count * 1000:.1f} ms"

    @torch.no_grad()
    def notes_before(enc: TextEncoder, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 16):
            batch = enc.tokenizer(texts[start:start + 16], padding=True, truncation=True,
                                  max_length=enc.max_tokens, return_tensors="pt")
            hidden = enc.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def films_before(enc: ImageEncoder, tensors: list[torch.Tensor]) -> np.ndarray:
        net = enc.features.to(memory_format=torch.contiguous_format)
        try:
            return np.concatenate([torch.nn.functional.adaptive_avg_pool2d(
                torch.relu(net(torch.stack(tensors[i:i + 16]))), 1).flatten(1).numpy()
                for i in range(0, len(tensors), 16)])
        finally:
            net.to(memory_format=torch.channels_last)

    with tempfile.TemporaryDirectory() as tmp:
        generate_synthetic_mimic(Path(tmp), patients=patients)
        cohort = build_cohort(MimicRoots(Path(tmp) / "mimic-iv", Path(tmp) / "mimic-iv-note",
                                         Path(tmp) / "mimic-cxr-jpg"), CohortConfig(progress=False))
        texts = [str(t) for t in cohort.loc[cohort.has_notes, "note_text"]]
        paths = [str(p) for p in cohort.cxr_path.dropna()]
        text, image = TextEncoder(), ImageEncoder(loader_workers=0)
        text.encode(texts[:16]), image.encode(paths[:16])  # warm-up
        tokens = [len(i) for i in text.tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
        table = BenchTable(["input", "before", "now", "before / now", "now against before"])
        tensors = [image.load(p) for p in paths]
        t_before, f_before = timed(lambda: films_before(image, tensors))
        with torch.no_grad():
            t_floor, _ = timed(lambda: [image.features(torch.stack(tensors[i:i + 16]).contiguous(
                memory_format=torch.channels_last)) for i in range(0, len(tensors), 16)])
        t_now, f_now = timed(lambda: image.encode(paths))
        table.add("films, DenseNet-121 forward pass (contiguous -> channels-last memory)",
                  ms(t_before, len(paths)), f"{ms(t_floor, len(paths))} (end to end, reading "
                  f"included: {ms(t_now, len(paths))})", f"**{t_before / t_floor:.2f}x**",
                  agreement(f_now, f_before))
        t_before, n_before = timed(lambda: notes_before(text, texts))
        t_now, n_now = timed(lambda: text.encode(texts))
        table.add("notes, MiniLM-L6 (batched in cohort order -> by token count)",
                  ms(t_before, len(texts)), ms(t_now, len(texts)), f"**{t_before / t_now:.2f}x**",
                  agreement(n_now, n_before))
        text.model = torch.ao.quantization.quantize_dynamic(text.model, {torch.nn.Linear},
                                                             dtype=torch.qint8)
        t_int8, n_int8 = timed(lambda: text.encode(texts))
        table.add("notes, dynamic int8 quantization of the linear layers (not adopted; now -> "
                  "int8)", ms(t_now, len(texts)), ms(t_int8, len(texts)),
                  f"{t_now / t_int8:.2f}x", agreement(n_int8, n_now))
        table.summary(f"{len(texts)} notes (tokens median {int(np.median(tokens))}, max "
                      f"{max(tokens)}), {len(paths)} films (256 px, encoded at 224 px); torch "
                      f"threads {torch.get_num_threads()}.")
    return table


def population_encoding(count: int) -> BenchTable:
    """Milliseconds per note and per film of the benchmark preset's site-0 against its test
    population, ``count`` of each, the same encoders in the same process (site-0 measured again
    last, to see the drift of the machine)."""
    import os

    import numpy as np

    from client.data.sites import read_site_samples
    from client.features.image import ImageEncoder
    from client.features.text import TextEncoder
    from client.mimic.cohort import read_cohort
    from shared_model.run_config import pyproject_defaults
    from simulation.prepare import FederationData, partition_sites, test_population_cohort

    data = FederationData.from_run_config({**pyproject_defaults(), "data.preset": "benchmark"})
    site = read_site_samples(partition_sites(data)["site-0"])
    population = read_cohort(test_population_cohort(data))
    config = data.encoder_config()
    text = TextEncoder(config.text_model_path, max_tokens=config.text_max_tokens)
    image = ImageEncoder(config.image_weights, image_size=config.image_size)
    table = BenchTable(["inputs", "ms per note", "note tokens (median)", "ms per film",
                        "film file (median kB)"])
    for name, samples in (("site-0", site), ("test population", population),
                          ("site-0 again", site)):
        notes = [str(t) for t in samples.loc[samples.has_notes, "note_text"].head(count)]
        films = [str(p) for p in samples.cxr_path.dropna().head(count)]
        tokens = [len(ids) for ids in text.tokenizer(notes, truncation=True,
                                                      max_length=config.text_max_tokens)["input_ids"]]
        started = time.perf_counter()
        text.encode(notes)
        per_note = (time.perf_counter() - started) / len(notes) * 1000
        started = time.perf_counter()
        image.encode(films)
        per_film = (time.perf_counter() - started) / len(films) * 1000
        size = np.median([os.path.getsize(p) for p in films]) / 1000
        table.add(name, f"{per_note:.1f}", f"{np.median(tokens):.0f}", f"{per_film:.1f}",
                  f"{size:.0f}")
    return table


MIMIC_FILM = (2544, 3056)  # width x height of a common MIMIC-CXR-JPG frontal film


def _write_mimic_size_films(folder: Path, count: int) -> list[str]:
    """``count`` synthetic films drawn at MIMIC-CXR-JPG size (the generator's ``draw_film`` at
    full resolution, cropped to portrait), saved as JPEG quality 95."""
    import numpy as np

    from simulation.synth.images import draw_film

    rng, width, height = np.random.default_rng(0), *MIMIC_FILM
    paths = []
    for i in range(count):
        findings = {"cardio": rng.uniform(), "effusion": rng.uniform(), "opacity": rng.uniform(),
                    "device": float(rng.uniform() < 0.3)}
        film = draw_film(rng, findings, size=height).crop(((height - width) // 2, 0,
                                                            (height + width) // 2, height))
        paths.append(str(folder / f"film-{i}.jpg"))
        film.save(paths[-1], quality=95)
    return paths


def films(count: int, workers: list[int], image_size: int) -> BenchTable:
    """Films/s on MIMIC-size JPEGs: the decode floors (full and draft decoding alone), the
    network's forward pass on preloaded tensors (the compute floor), and the encoder end to end,
    before (full decode, one film after another in the loop) and now (draft decode, with each
    number of loader workers); the cosine of each film's features now against before."""
    import os

    import numpy as np
    import torch
    from PIL import Image

    from client.features.image import DRAFT_FACTOR, ImageEncoder, read_film

    def rate(step, items) -> float:
        started = time.perf_counter()
        for item in items:
            step(item)
        return len(items) / (time.perf_counter() - started)

    def decode(path: str, draft: bool) -> None:
        with Image.open(path) as img:
            if draft:
                img.draft("L", (DRAFT_FACTOR * image_size,) * 2)
            img.convert("L").load()

    with tempfile.TemporaryDirectory() as tmp:
        paths = _write_mimic_size_films(Path(tmp), count)
        before_enc = ImageEncoder(image_size=image_size, draft=False, loader_workers=0)
        table = BenchTable(["step", "films/s", "time / the forward pass's",
                            "rate / before's", "feature cosine to before (min, mean)"])
        floors = {"decode, full": rate(lambda p: decode(p, False), paths),
                  "decode, draft": rate(lambda p: decode(p, True), paths),
                  "decode + resize, full (before)": rate(
                      lambda p: read_film(p, before_enc.transform, image_size, False), paths),
                  "decode + resize, draft (now)": rate(
                      lambda p: read_film(p, before_enc.transform, image_size, True), paths)}
        tensors = torch.stack([read_film(p, before_enc.transform, image_size) for p in paths])
        with torch.no_grad():
            floors["forward pass on preloaded tensors"] = rate(
                lambda b: before_enc.features(b), list(tensors.split(16))) * 16
        for name, value in floors.items():
            table.add(name, f"{value:.1f}", "", "", "")
        forward = floors["forward pass on preloaded tensors"]
        started = time.perf_counter()
        before = before_enc.encode(paths)
        before_rate = count / (time.perf_counter() - started)
        table.add("**encode end to end, before** (full decode, no workers)", f"{before_rate:.1f}",
                  f"{forward / before_rate:.2f}x", "1.00x", "")
        for n in workers:
            encoder = ImageEncoder(image_size=image_size, loader_workers=n)
            started = time.perf_counter()
            now = encoder.encode(paths)
            now_rate = count / (time.perf_counter() - started)
            cosine = np.sum(now * before, 1) / (np.linalg.norm(now, axis=1)
                                               * np.linalg.norm(before, axis=1))
            table.add(f"**encode end to end, now** (draft, {n} loader workers)",
                      f"{now_rate:.1f}", f"{forward / now_rate:.2f}x",
                      f"{now_rate / before_rate:.2f}x", f"{cosine.min():.5f}, {cosine.mean():.5f}")
        table.summary(f"{count} films {MIMIC_FILM[0]} x {MIMIC_FILM[1]} px JPEG quality 95, "
                      f"network input {image_size} px, batch 16; {os.cpu_count()} CPUs, torch "
                      f"threads {torch.get_num_threads()}.")
    return table


def _busy() -> None:
    while True:
        pass


def boosting_threads() -> BenchTable:
    """HistGradientBoosting (the yardstick's settings) on 10,000 x 200 features: seconds per fit
    with one OpenMP thread and with every core's, on an idle machine and beside one process that
    keeps a core busy (as a CI run or a second experiment does)."""
    import multiprocessing
    import os

    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x = rng.normal(size=(10_000, 200)).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=len(x)) > 1.5).astype(int)

    def fit(threads: int) -> float:
        model = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.03, max_leaf_nodes=7,
                                               early_stopping=False, random_state=0)
        with threadpool_limits(limits=threads, user_api="openmp"):
            started = time.perf_counter()
            model.fit(x, y)
            return time.perf_counter() - started

    cores = os.cpu_count() or 1
    table = BenchTable(["machine state", "1 thread s", f"{cores} threads s",
                        f"{cores} threads / 1 thread"])
    for state in ("idle", "one core busy"):
        busy = multiprocessing.Process(target=_busy, daemon=True) if state != "idle" else None
        if busy:
            busy.start()
        one, every = min(fit(1) for _ in range(2)), min(fit(cores) for _ in range(2))
        if busy:
            busy.terminate()
        table.add(state, f"{one:.2f}", f"{every:.2f}", f"{every / one:.2f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=["cohort-scaling", "feature-cache", "repartition",
                                         "site-scaling", "bytes", "boosting-threads", "films",
                                         "encoders", "population-encoding"])
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--sites", type=int, nargs="+", default=[2, 5, 10, 20])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--films", type=int, default=160)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=224)
    add_store_arg(parser)
    args = parser.parse_args()
    if args.name == "cohort-scaling":
        table = cohort_scaling(args.sizes)
    elif args.name == "feature-cache":
        table = feature_cache(args.patients)
    elif args.name == "repartition":
        table = repartition(args.patients)
    elif args.name == "site-scaling":
        table = site_scaling(args.sites, args.rounds)
    elif args.name == "boosting-threads":
        table = boosting_threads()
    elif args.name == "population-encoding":
        table = population_encoding(args.films)
    elif args.name == "encoders":
        table = encoders(args.patients)
    elif args.name == "films":
        table = films(args.films, args.workers, args.image_size)
    else:
        table = bytes_per_round(args.run_dir)
    table.store(args.store)


if __name__ == "__main__":
    main()
