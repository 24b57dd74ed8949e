"""Frames per second of each variant here at every (threads, batch), run the way the node runs it:
one inference worker per ``cores // threads`` (at most four), all sharing one ONNX Runtime session and
calling it at once. The manifest's ``throughput`` section; :mod:`dpa_perception.core.throughput`
chooses from it at run time."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.backends.base import Placement
from dpa_perception.backends.onnxruntime_backend import OnnxRuntimeSession, OrtOptions
from dpa_perception.core.machine import machine_key, usable_cores
from dpa_perception.core.model_spec import ModelSpec
from dpa_perception.core.preprocess import canvas_hw, letterbox_batch
from dpa_perception.core.throughput import BATCHES, THREADS
from dpa_perception.core.worker import MAX_AUTO_WORKERS

RUN_S = 0.15  # each worker calls for about this long per (threads, batch) and round, after one unmeasured call
ROUNDS = 3  # every configuration once per round, rounds interleaved: the median of each is kept (a shared
# machine's slow moments land on one round of each configuration, not on all of one)


def _rate(session: OnnxRuntimeSession, x: np.ndarray, workers: int, run_s: float) -> float:
    """Frames per second of ``workers`` threads each calling ``session`` on ``x`` for ``run_s``."""
    counts = [0] * workers
    start = threading.Barrier(workers + 1)

    def work(i: int) -> None:
        session.run(x)  # this thread's first call (its scratch) is not measured
        start.wait()
        end = time.perf_counter() + run_s
        while time.perf_counter() < end or counts[i] < 2:
            session.run(x)
            counts[i] += 1

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts) * len(x) / (time.perf_counter() - t0)


def measure_throughput(paths: dict[str, Path], spec: ModelSpec, frame: np.ndarray, shapes: tuple[str, ...],
                       dynamic_batch: bool, run_s: float = RUN_S, rounds: int = ROUNDS) -> dict[str, Any]:
    """The ``throughput`` section: frames per second (median over ``rounds`` interleaved rounds) by
    variant, input shape, threads and batch (string keys, as JSON has them), with the machine it was
    measured on and the workers per thread count."""
    cores = usable_cores()
    threads = [t for t in THREADS if t <= cores]
    batches = list(BATCHES) if dynamic_batch else [1]
    workers = {t: max(1, min(MAX_AUTO_WORKERS, cores // t)) for t in threads}
    inputs = {}
    for shape in shapes:
        one, _ = letterbox_batch([frame], spec, canvas_hw([frame.shape[:2]], spec, shape))
        inputs[shape] = {b: np.repeat(one, b, axis=0) for b in batches}
    sessions = {(m, t): OnnxRuntimeSession(path, Placement("cpu"), OrtOptions(intra_op_threads=t))
                for m, path in paths.items() for t in threads}  # fmt: skip
    samples: dict[tuple[str, str, int, int], list[float]] = {}
    try:
        for _ in range(rounds):
            for (mode, t), s in sessions.items():
                for shape in shapes:
                    for b in batches:
                        rate = _rate(s, inputs[shape][b], workers[t], run_s)
                        samples.setdefault((mode, shape, t, b), []).append(rate)
    finally:
        for s in sessions.values():
            s.close()
    rates: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (mode, shape, t, b), v in samples.items():
        rates.setdefault(mode, {}).setdefault(shape, {}).setdefault(str(t), {})[str(b)] = round(float(np.median(v)), 1)
    return {"machine": machine_key(), "workers": {str(t): w for t, w in workers.items()}, "rounds": rounds,
            "frames_per_s": rates}


def describe_throughput(section: dict[str, Any]) -> str:
    """One line of the build log: the best rate of each variant and shape, and where it was reached."""
    parts = []
    for mode, shapes in section["frames_per_s"].items():
        for shape, rows in shapes.items():
            t, b, rate = max(((t, b, r) for t, cols in rows.items() for b, r in cols.items()), key=lambda x: x[2])
            parts.append(f"{mode} {shape} {rate:.0f} frames/s ({t} thread(s) x {section['workers'][t]} worker(s), batch {b})")
    return ", ".join(parts)
