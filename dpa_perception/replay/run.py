"""Replay rosbag2 camera topics through the node's runtime (:func:`dpa_perception.runtime.assemble`).

Two paces, one scheduling rule: frames go into the newest-frame slots at their recording time, and
the pipeline runs whenever frames are waiting, so frames of several cameras that are due together
are batched (and shed) exactly as in the node. ``realtime`` plays the bag at wall speed with the
inference worker; ``fast`` runs the pipeline inline and jumps bag time over idle gaps.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dpa_perception.bags.reader import (
    COMPRESSED_TYPE,
    BagImage,
    count_images,
    image_topics,
    iter_images,
    select_topics,
    time_span,
)
from dpa_perception.bags.writer import DetectionBagWriter
from dpa_perception.core.errors import BagError, ConfigError
from dpa_perception.core.pipeline import FrameResult
from dpa_perception.core.types import NS_PER_S
from dpa_perception.demo.weather import WeatherSpec
from dpa_perception.inference.engine import DualModeEngine
from dpa_perception.replay.report import write_report
from dpa_perception.replay.summary import summarize
from dpa_perception.runtime import Runtime, assemble

NS = NS_PER_S
PACES = ("realtime", "fast")
DRAIN_TIMEOUT_S = 5.0


class ReplayClock:
    """Bag time that runs at wall speed from the last ``sync``: the pipeline's "now"."""

    def __init__(self) -> None:
        self._bag_ns = 0
        self._wall_ns = time.perf_counter_ns()
        self._lock = threading.Lock()

    def sync(self, bag_ns: int) -> None:
        with self._lock:
            self._bag_ns, self._wall_ns = bag_ns, time.perf_counter_ns()

    def __call__(self) -> int:
        with self._lock:
            return self._bag_ns + (time.perf_counter_ns() - self._wall_ns)


@dataclass
class Meta:
    """What the pipeline carries along with each frame for the outputs."""

    topic: str
    header_stamp_ns: int
    frame_id: str
    log_ns: int


@dataclass
class _Outputs:
    """frames.jsonl records and the detections bag, written from the worker or the reading thread."""

    runtime: Runtime
    writer: DetectionBagWriter
    out_topics: dict[str, str]
    clock: ReplayClock
    frames: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, r: FrameResult) -> None:
        m: Meta = r.meta
        spec = self.runtime.engine.spec
        rec = {"topic": m.topic, "stamp_ns": m.header_stamp_ns, "status": r.status, "mode": r.mode,
               "reason": r.reason, "batch": r.batch, "e2e_ms": r.timing_ms.get("e2e"), "timing_ms": r.timing_ms,
               "visibility": {"score": round(r.visibility.degradation, 3), "label": r.visibility.label}
               if r.visibility else None,
               "detections": len(r.detections),
               "classes": dict(Counter(spec.class_name(int(c)) for c in r.detections.class_ids))}  # fmt: skip
        with self.lock:
            self.frames.append(rec)
            if r.status == "processed":  # stamped like the node: the output header is the input header
                self.writer.write_detections(self.out_topics[m.topic], max(self.clock(), m.log_ns),
                                             m.header_stamp_ns, m.frame_id, r.detections)  # fmt: skip

    def diagnostics(self, at_ns: int) -> None:
        with self.lock:
            self.writer.write_diagnostics(at_ns, self.runtime.status(at_ns, active=True))


def _feed(runtime: Runtime, msg: BagImage, i: int, weather: WeatherSpec | None, progress: float, emit: _Outputs) -> None:
    """One bag message into the pipeline (decoded, weather applied); a malformed one is rejected on its camera."""
    meta = Meta(msg.topic, msg.stamp_ns, msg.frame_id, msg.log_time_ns)
    transform = None if weather is None else (lambda f: weather.apply(f, progress, seed=0, frame=i))
    rejected = runtime.pipeline.submit_message(msg.topic, msg.msg, msg.msgtype == COMPRESSED_TYPE, msg.stamp_ns,
                                               meta, transform=transform)  # fmt: skip
    if rejected is not None:
        emit(rejected)


def _play(runtime: Runtime, bags: Sequence[Path], chosen: Sequence[str], clock: ReplayClock, pace: str,
          weather: WeatherSpec | None, emit: _Outputs, bar: Any) -> int:
    """Feed every message at its recording time; returns the bag time of the last diagnostics written."""
    pipeline = runtime.pipeline
    first_log, last_log = time_span(bags)  # weather ramps are positioned in the bag's time span
    span_ns = max(1, last_log - first_log)
    next_diag = first_log + NS
    clock.sync(first_log)
    if pace == "realtime":
        pipeline.start(emit)
    for i, msg in enumerate(iter_images(bags, chosen)):
        if pace == "realtime":
            wait = (msg.log_time_ns - clock()) / NS
            if wait > 0:
                time.sleep(wait)
        else:  # the pipeline runs while frames wait; bag time jumps over the idle gaps between them
            while msg.log_time_ns > clock() and pipeline.has_pending():
                for r in pipeline.step():
                    emit(r)
            if msg.log_time_ns > clock():
                clock.sync(msg.log_time_ns)
        _feed(runtime, msg, i, weather, (msg.log_time_ns - first_log) / span_ns, emit)
        while msg.log_time_ns >= next_diag:
            emit.diagnostics(next_diag)
            next_diag += NS
        bar.update(1)
    for r in pipeline.drain(DRAIN_TIMEOUT_S):  # realtime: waits for the worker; fast: runs what is left
        emit(r)
    return max(next_diag, last_log)


def replay_cameras(values: Mapping[str, Any], available: Mapping[str, str]) -> list[str] | None:
    """The parameters' camera topics when the bag holds every one of them, else None (all of the bag's)."""
    cams = list(values.get("camera_topics") or [])
    return cams if cams and all(c in available for c in cams) else None


def run_replay(
    bags: Sequence[Path],
    values: Mapping[str, Any],
    out: Path,
    *,
    pace: str = "realtime",
    weather: WeatherSpec | None = None,
    progress: bool = True,
    topics: Sequence[str] | None = None,
    engine: DualModeEngine | None = None,
) -> dict[str, Any]:
    """Replay ``bags`` through the runtime the node would build from ``values``; write the outputs to ``out``.

    ``values`` are node parameters. Cameras: ``topics`` if given (each must be in the bags), else the
    parameters' ``camera_topics`` when the bags hold all of them, else every image topic of the bags.
    ``engine``: reuse a loaded engine (tests, benchmarks) instead of loading ``engine_dir``.
    Returns the summary (also written to ``out/summary.json``).
    """
    if pace not in PACES:
        raise ConfigError(f"pace must be one of {', '.join(PACES)}")
    where = ", ".join(map(str, bags))
    available = image_topics(bags)
    chosen = select_topics(available, topics or replay_cameras(values, available), where)
    total = count_images(bags, chosen)
    if total == 0:
        raise BagError(f"{where}: the image topics hold no messages")
    clock = ReplayClock()
    own = list(values.get("camera_topics") or []) == chosen  # the parameters' cameras: keep their outputs
    runtime = assemble({**values, "camera_topics": chosen,
                        "detection_topics": list(values.get("detection_topics") or []) if own else []},
                       clock_ns=clock, engine=engine)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    bag_path = out / "detections"
    if bag_path.exists():
        import shutil

        shutil.rmtree(bag_path)
    writer = DetectionBagWriter(bag_path)
    emit = _Outputs(runtime, writer, dict(zip(chosen, runtime.values["detection_topics"])), clock)
    bar = tqdm(total=total, desc="replay", unit="frame", disable=not progress, file=sys.stderr)
    try:
        last = _play(runtime, bags, chosen, clock, pace, weather, emit, bar)
    finally:
        bar.close()
        runtime.pipeline.stop()
    emit.diagnostics(last)
    writer.close()
    return _write_outputs(out, emit.frames, runtime, pace, weather, bags, chosen, writer.count)


def _write_outputs(out: Path, frames: list[dict[str, Any]], runtime: Runtime, pace: str, weather: WeatherSpec | None,
                   bags: Sequence[Path], chosen: Sequence[str], written: int) -> dict[str, Any]:
    frames = sorted(frames, key=lambda f: (f["stamp_ns"], f["topic"]))
    with (out / "frames.jsonl").open("w") as fh:
        for f in frames:
            fh.write(json.dumps({k: v for k, v in f.items() if k != "classes"}) + "\n")
    cfg = runtime.config.pipeline
    summary = summarize(frames, runtime.pipeline.stats(), cfg, runtime.engine_desc, pace=pace,
                        weather=str(weather) if weather else "none", bags=bags, topics=chosen, written=written)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(out / "report.png", frames, cfg.latency_budget_ms,
                 f"dpa-replay {', '.join(b.name for b in bags)} ({pace}, mode {cfg.precision_mode}"
                 f"{', weather ' + str(weather) if weather else ''})",
                 thresholds=(cfg.enter_high_threshold, cfg.leave_high_threshold))  # fmt: skip
    return summary
