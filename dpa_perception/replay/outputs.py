"""What a replay writes: one record per input frame (frames.jsonl), the detections bag, summary.json
and report.png. Every frame fed to the pipeline is accounted for: a frame that got no result (its
batch failed, or the replay was interrupted before the worker reached it) is recorded as ``failed``.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpa_perception.bags.writer import DetectionBagWriter
from dpa_perception.core.pipeline import FrameResult
from dpa_perception.demo.weather import WeatherSpec
from dpa_perception.replay.report import write_report
from dpa_perception.replay.summary import summarize
from dpa_perception.replay.world_outputs import WorldRecorder
from dpa_perception.runtime import Runtime


@dataclass
class Meta:
    """What the pipeline carries along with each frame for the outputs."""

    topic: str
    header_stamp_ns: int  # as recorded (the output header is the input header, like the node)
    frame_id: str
    log_ns: int  # as recorded
    play_ns: int = 0  # on the replay's timeline (bags back to back, gaps collapsed)
    seq: int = 0


def _record(m: Meta, status: str, reason: str | None, **kw: Any) -> dict[str, Any]:
    rec = {"topic": m.topic, "stamp_ns": m.header_stamp_ns, "play_ns": m.play_ns, "status": status, "mode": None,
           "reason": reason, "batch": 0, "e2e_ms": None, "timing_ms": {}, "visibility": None, "detections": 0,
           "classes": {}}  # fmt: skip
    rec.update(kw)
    return rec


@dataclass
class Outputs:
    """frames.jsonl records and the detections bag, written from the worker or the reading thread."""

    runtime: Runtime
    writer: DetectionBagWriter
    out_topics: dict[str, str]
    clock: Callable[[], int]
    frames: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    outstanding: dict[int, Meta] = field(default_factory=dict)  # fed, no result yet
    batch_errors: list[str] = field(default_factory=list)
    world: WorldRecorder | None = None  # objects topics, tracks.jsonl, bird's-eye view, videos

    def fed(self, m: Meta) -> None:
        with self.lock:
            self.outstanding[m.seq] = m

    def __call__(self, r: FrameResult) -> None:
        m: Meta = r.meta
        spec = self.runtime.engine.spec
        vis = {"score": round(r.visibility.degradation, 3), "label": r.visibility.label} if r.visibility else None
        rec = _record(m, r.status, r.reason, mode=r.mode, batch=r.batch, e2e_ms=r.timing_ms.get("e2e"),
                      timing_ms=r.timing_ms, visibility=vis, detections=len(r.detections),
                      classes=dict(Counter(spec.class_name(int(c)) for c in r.detections.class_ids)))  # fmt: skip
        with self.lock:
            self.outstanding.pop(m.seq, None)
            self.frames.append(rec)
            if r.status == "processed":  # stamped like the node: the output header is the input header
                log_ns = max(self.clock(), m.play_ns)
                self.writer.write_detections(self.out_topics[m.topic], log_ns, m.header_stamp_ns, m.frame_id,
                                             r.detections, r.track_ids)  # fmt: skip
                if self.world is not None:
                    self.world.add(r, m.topic, m.header_stamp_ns, log_ns)

    def diagnostics(self, at_ns: int) -> None:
        with self.lock:
            self.writer.write_diagnostics(at_ns, self.runtime.status(at_ns, active=True))

    def fail_outstanding(self, why: str) -> int:
        """Record every frame fed without a result as ``failed``; how many there were."""
        worker = self.runtime.pipeline.last_worker_error
        errors = self.batch_errors + ([worker] if worker else [])
        reason = f"no result: {why}" + (f" (batch error: {errors[-1]})" if errors else "")
        with self.lock:
            left = sorted(self.outstanding.values(), key=lambda m: m.seq)
            self.outstanding.clear()
            self.frames += [_record(m, "failed", reason) for m in left]
        return len(left)


def write_outputs(out: Path, frames: list[dict[str, Any]], runtime: Runtime, pace: str, weather: WeatherSpec | None,
                  bags: Sequence[Path], chosen: Sequence[str], written: int, extra: Mapping[str, Any],
                  world: WorldRecorder | None = None) -> dict[str, Any]:
    """frames.jsonl, summary.json (with ``extra``: how the run ended, the timeline) and report.png."""
    frames = sorted(frames, key=lambda f: (f["play_ns"], f["stamp_ns"], f["topic"]))
    if world is not None:
        extra = {**extra, "world": world.write(out)}
    with (out / "frames.jsonl").open("w") as fh:
        for f in frames:
            fh.write(json.dumps({k: v for k, v in f.items() if k != "classes"}) + "\n")
    cfg = runtime.config.pipeline
    summary = summarize(frames, runtime.pipeline.stats(), cfg, runtime.engine_desc, pace=pace,
                        weather=str(weather) if weather else "none", bags=bags, topics=chosen, written=written,
                        extra=extra)  # fmt: skip
    write_report(out / "report.png", frames, cfg.latency_budget_ms,
                 f"dpa-replay {', '.join(b.name for b in bags)} ({pace}, mode {cfg.precision_mode}"
                 f"{', weather ' + str(weather) if weather else ''}; {summary['ended']})",
                 thresholds=(cfg.enter_high_threshold, cfg.leave_high_threshold))  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")  # last: its presence means complete
    return summary
