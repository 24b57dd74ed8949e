"""Threads per call and batch size from dpa-build's throughput measurement on this machine, not guessed."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpa_perception.core.machine import machine_key
from dpa_perception.core.manifest import Manifest
from dpa_perception.core.throughput import BATCHES, THREADS, choose_throughput
from dpa_perception.runtime import assemble

HERE = "AMD EPYC|x86_64|avx2+fma|2 cores"


def section(rates: dict[str, dict[str, dict[int, dict[int, float]]]], machine: str = HERE) -> dict:
    """A throughput section (string keys, as in JSON) from {mode: {shape: {threads: {batch: frames/s}}}}."""
    return {"machine": machine, "frames_per_s": {
        m: {sh: {str(t): {str(b): r for b, r in cols.items()} for t, cols in rows.items()} for sh, rows in shapes.items()}
        for m, shapes in rates.items()}}  # fmt: skip


ONE_THREAD_WINS = {"1": {1: 110.0, 2: 115.0, 4: 116.0, 8: 116.5}, "2": {1: 80.0, 2: 95.0, 4: 101.0, 8: 103.0}}


def both(rows: dict, shape: str = "rect") -> dict:
    return section({m: {shape: {int(t): c for t, c in rows.items()}} for m in ("int8", "high")})


def test_the_fastest_thread_count_and_the_smallest_batch_that_is_as_fast() -> None:
    c = choose_throughput(both(ONE_THREAD_WINS), "rect", ("int8", "high"), HERE, threads=0, max_batch=8)
    # batch 2 is within 5 % of batch 8's rate; batch 1 is not: more batching only adds latency
    assert (c.threads, c.batch) == (1, 2) and c.frames_per_s == pytest.approx(115.0)
    assert "measured by dpa-build here" in c.reason


def test_two_threads_win_where_they_measured_faster_and_each_variant_counts() -> None:
    rates = section({"int8": {"square": {1: {1: 50.0}, 2: {1: 90.0}}}, "high": {"square": {1: {1: 40.0}, 2: {1: 60.0}}}})
    c = choose_throughput(rates, "square", ("int8", "high"), HERE, threads=0, max_batch=4)
    assert (c.threads, c.batch) == (2, 1)
    assert c.frames_per_s == pytest.approx(2000 / (1000 / 90 + 1000 / 60), rel=1e-3)  # a frame runs in either


def test_a_near_tie_goes_to_fewer_threads_per_call() -> None:
    rates = both({"1": {1: 100.0}, "2": {1: 102.0}})
    assert choose_throughput(rates, "rect", ("int8", "high"), HERE, threads=0, max_batch=4).threads == 1


@pytest.mark.parametrize(("threads", "max_batch", "expected"), [(2, 8, (2, 4)), (1, 1, (1, 1)), (0, 4, (1, 2))])
def test_set_threads_and_the_batch_cap_are_obeyed(threads: int, max_batch: int, expected: tuple) -> None:
    c = choose_throughput(both(ONE_THREAD_WINS), "rect", ("int8", "high"), HERE, threads, max_batch)
    assert (c.threads, c.batch) == expected


@pytest.mark.parametrize(("sec", "machine", "why"), [
    (None, HERE, "no throughput measurement"),
    (both(ONE_THREAD_WINS, "square"), HERE, "no throughput measurement"),  # measured for the other shape
    (both(ONE_THREAD_WINS), "Other CPU|x86_64|avx2|2 cores", "measured on another machine"),
    (both(ONE_THREAD_WINS), HERE.replace("2 cores", "4 cores"), "measured on another machine"),  # other cores
    (both({"1": {1: "fast"}}), HERE, "no throughput measurement"),  # malformed
    (both({"1": {1: -3.0}}), HERE, "no throughput measurement"),
])  # fmt: skip
def test_without_a_measurement_for_this_machine_the_fallbacks_and_why(sec: dict | None, machine: str, why: str) -> None:
    c = choose_throughput(sec, "rect", ("int8", "high"), machine, threads=0, max_batch=4)
    assert (c.threads, c.batch, c.frames_per_s) == (1, 4, None) and why in c.reason


def test_thread_counts_beyond_the_cores_are_not_chosen() -> None:
    rates = both({"2": {1: 500.0}, "1": {1: 100.0}})
    c = choose_throughput(rates, "rect", ("int8", "high"), HERE.replace("2 cores", "1 cores"), threads=0, max_batch=4)
    assert c.threads == 1


def test_the_build_measured_every_variant_shape_threads_and_batch_here(yolox_engine_dir: Path) -> None:
    m = Manifest.load(yolox_engine_dir)
    sec = m.sections["throughput"]
    assert sec["machine"] == machine_key()
    cores = int(sec["machine"].rsplit("|", 1)[-1].split()[0])
    for mode in ("int8", "high"):
        for shape in ("square", "rect"):
            rows = sec["frames_per_s"][mode][shape]
            assert sorted(int(t) for t in rows) == [t for t in THREADS if t <= cores]
            for cols in rows.values():
                assert sorted(int(b) for b in cols) == list(BATCHES) and all(r > 0 for r in cols.values())


def test_the_runtime_runs_what_the_measurement_chose_and_says_so(yolox_engine_dir: Path) -> None:
    sec = Manifest.load(yolox_engine_dir).sections["throughput"]
    expected = choose_throughput(sec, "square", ("int8", "high"), machine_key(), 0, 4)
    rt = assemble({"engine_dir": str(yolox_engine_dir)}, clock_ns=lambda: 0, warmup_runs=0)
    try:
        assert rt.engine.intra_op_threads == expected.threads == rt.config.ort_intra_op_threads
        assert rt.pipeline.config.max_batch == expected.batch == rt.config.max_batch
        (engine,) = [s for s in rt.status(0, active=True) if s.name.endswith(": engine")]
        assert engine.value("throughput_reason") == expected.reason and "measured by dpa-build here" in expected.reason
        assert engine.value("intra_op_threads") == str(expected.threads) and engine.value("batch") == str(expected.batch)
    finally:
        rt.close()
    rt = assemble({"engine_dir": str(yolox_engine_dir), "ort_intra_op_threads": 2, "max_batch": 1}, clock_ns=lambda: 0,
                  warmup_runs=0)  # fmt: skip
    try:
        assert (rt.engine.intra_op_threads, rt.pipeline.config.max_batch) == (2, 1)
    finally:
        rt.close()
