"""Intra-op threads and batch size from what dpa-build measured on this machine (pure).

dpa-build runs each variant on each input shape at every (threads, batch) of :data:`THREADS` x
:data:`BATCHES` the way the node would, with one inference worker per that many cores running at once,
and records the frames per second of all of them together (the manifest's ``throughput`` section,
with the machine it ran on). ``ort_intra_op_threads: 0`` and ``max_batch: 0`` take their values from
that table: the threads per call that give the most frames per second, and the batch with the best
rate for that thread count (the smallest within :data:`BATCH_TIE` of it). The batch is a cap: the
scheduler only fills it when that many cameras wait, i.e. under load, where the rate is what counts;
a batch measured slower (cache pressure) is never used. A folder
without the table, or measured on another machine (CPU, features, cores), gives the fallbacks, and
says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

THREADS: tuple[int, ...] = (1, 2)
BATCHES: tuple[int, ...] = (1, 2, 4, 8)
BATCH_TIE = 0.02  # within 2 % of the best rate, the smaller batch (less latency per call)
THREADS_TIE = 0.03  # within 3 % of the best rate, fewer threads per call (more calls in parallel) win
FALLBACK_THREADS = 1


@dataclass(frozen=True)
class ThroughputChoice:
    threads: int
    batch: int
    frames_per_s: float | None  # the measured rate of the choice (all workers), None for a fallback
    reason: str


def _table(section: Mapping[str, Any] | None, modes: tuple[str, ...], shape: str) -> dict[int, dict[int, float]] | None:
    """Milliseconds per frame (all workers together) by threads and batch, averaged over ``modes`` (a
    frame runs in one of them; each loaded variant counts the same), or None when a mode or shape is
    missing or malformed."""
    per_mode = (section or {}).get("frames_per_s") or {}
    out: dict[int, dict[int, float]] = {}
    for mode in modes:
        rows = (per_mode.get(mode) or {}).get(shape)
        if not isinstance(rows, Mapping):
            return None
        for t, cols in rows.items():
            if not isinstance(cols, Mapping):
                return None
            for b, rate in cols.items():
                if not str(t).isdigit() or not str(b).isdigit() or isinstance(rate, bool) \
                        or not isinstance(rate, (int, float)) or not rate > 0:
                    return None
                cell = out.setdefault(int(t), {})
                cell[int(b)] = cell.get(int(b), 0.0) + 1000.0 / float(rate) / len(modes)
    return out or None


def choose_throughput(section: Mapping[str, Any] | None, shape: str, modes: Iterable[str], machine: str,
                      threads: int, max_batch: int) -> ThroughputChoice:
    """The threads per call (``threads`` when set, > 0; else measured) and the batch (at most ``max_batch``:
    the best measured rate, the smallest within :data:`BATCH_TIE` of it) to run.

    ``machine``: this machine's :func:`~dpa_perception.core.machine.machine_key` (its last field is the
    usable cores). Without a measurement for this machine: ``threads`` or 1, and ``max_batch``.
    """
    cap = max_batch
    table = _table(section, tuple(modes), shape)
    measured_on = (section or {}).get("machine")
    why = None
    if table is None:
        why = "the engine folder has no throughput measurement for this shape (rebuild with dpa-build)"
    elif measured_on != machine:
        why = f"measured on another machine ({measured_on}), this is {machine}"
    if why is not None:
        return ThroughputChoice(threads or FALLBACK_THREADS, cap, None, why)
    assert table is not None
    cores = int(machine.rsplit("|", 1)[-1].split()[0])
    rates: dict[int, tuple[float, int]] = {}
    for t, cols in table.items():
        if t > cores or (threads and t != threads):
            continue
        usable = {b: ms for b, ms in cols.items() if b <= cap}
        if not usable:
            continue
        cheapest = min(usable.values())
        b = min(b for b, ms in usable.items() if ms <= cheapest * (1 + BATCH_TIE))
        rates[t] = (1000.0 / usable[b], b)
    if not rates:
        return ThroughputChoice(threads or FALLBACK_THREADS, cap, None,
                                f"no measurement with {threads or 'at most ' + str(cores)} thread(s) up to batch {cap}")
    best = max(r for r, _ in rates.values())
    t = min(t for t, (r, _) in rates.items() if r >= best * (1 - THREADS_TIE))
    rate, b = rates[t]
    return ThroughputChoice(t, b, round(rate, 1), f"measured by dpa-build here: {rate:.0f} frames/s with "
                            f"{t} thread(s) per call at batch {b}")
