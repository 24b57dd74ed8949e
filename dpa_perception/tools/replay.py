"""``dpa-replay``: run the node's pipeline over rosbag2 files and write detections, stats and a report."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dpa_perception.bags.reader import BagImage, count_images, image_topics, iter_images, select_topics, time_span
from dpa_perception.bags.writer import DetectionBagWriter
from dpa_perception.core.diagnostics import DiagnosticsBuilder
from dpa_perception.core.errors import BagError, ConfigError, ImageError
from dpa_perception.core.pipeline import FrameResult, Pipeline, PipelineConfig
from dpa_perception.core.topics import detection_topic
from dpa_perception.core.types import PRECISION_MODES
from dpa_perception.demo.weather import WeatherSpec, parse_weather
from dpa_perception.inference.engine import DualModeEngine
from dpa_perception.replay.report import write_report
from dpa_perception.tools.cli_common import add_engine_args, ort_options, run_cli

NS = 1_000_000_000
STAMP_TRUST_NS = 10 * NS  # header stamps further than this from the recording time are not capture times


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
class ReplayResult:
    frames: list[dict[str, Any]] = field(default_factory=list)
    input_errors: list[dict[str, Any]] = field(default_factory=list)


def capture_stamp(msg: BagImage) -> int:
    """The frame's capture time in bag time: its header stamp when that is plausible."""
    return msg.stamp_ns if abs(msg.stamp_ns - msg.log_time_ns) < STAMP_TRUST_NS else msg.log_time_ns


def run_replay(
    bags: Sequence[Path],
    engine: DualModeEngine,
    out: Path,
    *,
    config: PipelineConfig,
    topics: Sequence[str] | None = None,
    pace: str = "realtime",
    weather: WeatherSpec | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Replay ``bags`` through one :class:`Pipeline`; write the outputs to ``out``; return the summary."""
    if pace not in ("realtime", "fast"):
        raise ConfigError("pace must be realtime or fast")
    where = ", ".join(map(str, bags))
    chosen = select_topics(image_topics(bags), topics, where)
    total = count_images(bags, chosen)
    if total == 0:
        raise BagError(f"{where}: the image topics hold no messages")
    out.mkdir(parents=True, exist_ok=True)
    clock = ReplayClock()
    pipeline = Pipeline(engine, config, clock_ns=clock)
    for t in chosen:
        pipeline.add_camera(t)
    out_topics = {t: detection_topic(t) for t in chosen}
    bag_path = out / "detections"
    if bag_path.exists():
        import shutil

        shutil.rmtree(bag_path)
    writer = DetectionBagWriter(bag_path)
    diag = DiagnosticsBuilder(latency_error_after_s=5.0, degraded_threshold=config.enter_high_threshold)
    result = ReplayResult()
    lock = threading.Lock()

    def on_result(r: FrameResult) -> None:
        m: Meta = r.meta
        rec = {"topic": m.topic, "stamp_ns": m.header_stamp_ns, "status": r.status, "mode": r.mode,
               "reason": r.reason, "e2e_ms": r.timing_ms.get("e2e"), "timing_ms": r.timing_ms,
               "visibility": {"score": round(r.visibility.degradation, 3), "label": r.visibility.label}
               if r.visibility else None,
               "detections": len(r.detections),
               "classes": dict(Counter(engine.spec.class_name(int(c)) for c in r.detections.class_ids))}
        with lock:
            result.frames.append(rec)
            if r.status == "processed":
                # stamped like the node: the output header is the input header
                writer.write_detections(out_topics[m.topic], max(clock(), m.log_ns), m.header_stamp_ns, m.frame_id,
                                        r.detections)

    first_log, last_log = time_span(bags)  # weather ramps are positioned in the bag's time span
    span_ns = max(1, last_log - first_log)
    next_diag = first_log + NS
    bar = tqdm(total=total, desc="replay", unit="frame", disable=not progress, file=sys.stderr)
    if pace == "realtime":
        clock.sync(first_log)
        pipeline.start(on_result)
    try:
        for i, msg in enumerate(iter_images(bags, chosen)):
            if pace == "realtime":
                wait = (msg.log_time_ns - clock()) / NS
                if wait > 0:
                    time.sleep(wait)
            else:
                clock.sync(msg.log_time_ns)
            t0 = time.perf_counter()
            meta = Meta(msg.topic, msg.stamp_ns, msg.frame_id, msg.log_time_ns)
            try:
                frame = msg.decode()
                if weather is not None:
                    frame = weather.apply(frame, (msg.log_time_ns - first_log) / span_ns, seed=0, frame=i)
            except ImageError as exc:
                pipeline.report_input_error(msg.topic, str(exc))
                with lock:
                    result.input_errors.append({"topic": msg.topic, "stamp_ns": msg.stamp_ns, "error": str(exc)})
                    result.frames.append({"topic": msg.topic, "stamp_ns": msg.stamp_ns, "status": "rejected",
                                          "mode": None, "reason": str(exc), "e2e_ms": None, "visibility": None,
                                          "detections": 0})
                bar.update(1)
                continue
            decode_ms = (time.perf_counter() - t0) * 1e3
            pipeline.submit(msg.topic, frame, capture_stamp(msg), meta, decode_ms)
            if pace == "fast":
                for r in pipeline.step():
                    on_result(r)
            while msg.log_time_ns >= next_diag:
                with lock:
                    writer.write_diagnostics(next_diag, diag.build(pipeline.stats(), engine.describe(),
                                                                   now_s=next_diag / NS, active=True))
                next_diag += NS
            bar.update(1)
        if pace == "realtime":  # let the worker finish what is still in the slots
            deadline = time.perf_counter() + 5.0
            while time.perf_counter() < deadline and any(
                c["processed"] + c["dropped"] + c["input_errors"] < c["received"] for c in pipeline.stats()["cameras"].values()
            ):
                time.sleep(0.01)
    finally:
        bar.close()
        pipeline.stop()
        for r in pipeline.step() if pace == "fast" else []:
            on_result(r)
        with lock:
            writer.write_diagnostics(max(next_diag, last_log), diag.build(pipeline.stats(), engine.describe(),
                                                                          now_s=last_log / NS, active=True))
            writer.close()

    frames = sorted(result.frames, key=lambda f: (f["stamp_ns"], f["topic"]))
    with (out / "frames.jsonl").open("w") as fh:
        for f in frames:
            fh.write(json.dumps({k: v for k, v in f.items() if k not in ("classes",)}) + "\n")
    summary = summarize(frames, pipeline.stats(), config, engine, pace, weather, bags, chosen, writer.count)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(out / "report.png", frames, config.latency_budget_ms,
                 f"dpa-replay {', '.join(b.name for b in bags)} ({pace}, mode {config.precision_mode}"
                 f"{', weather ' + str(weather) if weather else ''})",
                 thresholds=(config.enter_high_threshold, config.leave_high_threshold))
    return summary


def summarize(frames: list[dict[str, Any]], stats: dict[str, Any], config: PipelineConfig, engine: DualModeEngine,
              pace: str, weather: WeatherSpec | None, bags: Sequence[Path], topics: Sequence[str],
              written: int) -> dict[str, Any]:
    proc = [f for f in frames if f["status"] == "processed"]
    e2e = np.array([f["e2e_ms"] for f in proc], np.float64)

    def pct(a: np.ndarray) -> dict[str, float | None]:
        if not len(a):
            return {"p50": None, "p95": None, "p99": None}
        return {k: round(float(np.percentile(a, q)), 2) for k, q in (("p50", 50), ("p95", 95), ("p99", 99))}

    stages = {s: pct(np.array([f["timing_ms"][s] for f in proc], np.float64))
              for s in ("queue_wait", "decode", "visibility", "preprocess", "inference", "postprocess")}
    classes: Counter[str] = Counter()
    for f in proc:
        classes.update(f.get("classes", {}))
    vis = np.array([f["visibility"]["score"] for f in proc if f.get("visibility")], np.float64)
    labels = Counter(f["visibility"]["label"] for f in proc if f.get("visibility"))
    drops = Counter(f["reason"] for f in frames if f["status"] == "dropped")
    return {
        "bags": [str(b) for b in bags],
        "topics": list(topics),
        "pace": pace,
        "precision_mode": config.precision_mode,
        "weather": str(weather) if weather else "none",
        "budget_ms": config.latency_budget_ms,
        "input_shape": config.input_shape,
        "max_batch": config.max_batch,
        "engine": engine.describe(),
        "frames_in": len(frames),
        "frames_processed": len(proc),
        "frames_dropped": sum(1 for f in frames if f["status"] == "dropped"),
        "frames_rejected": sum(1 for f in frames if f["status"] == "rejected"),
        "drop_reasons": dict(drops),
        "deadline_misses": int(drops.get("stale", 0) + drops.get("late", 0) + np.sum(e2e > config.latency_budget_ms)),
        "processed_over_budget": int(np.sum(e2e > config.latency_budget_ms)),
        "latency_ms": pct(e2e),
        "stage_latency_ms": stages,
        "frames_per_mode": stats["precision"]["frames_per_mode"],
        "switches": stats["precision"]["switches"],
        "detections_total": int(sum(f["detections"] for f in proc)),
        "detections_per_class": dict(classes.most_common()),
        "detection_messages_written": written,
        "visibility": {"mean": round(float(vis.mean()), 3) if len(vis) else None,
                       "max": round(float(vis.max()), 3) if len(vis) else None, "labels": dict(labels)},
        "per_camera": stats["cameras"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dpa-replay", description=__doc__)
    p.add_argument("bags", nargs="+", type=Path, help="rosbag2 folders (sqlite3 or mcap)")
    add_engine_args(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--topics", nargs="*", help="camera topics (default: every image topic)")
    p.add_argument("--mode", default="auto", choices=PRECISION_MODES)
    p.add_argument("--budget-ms", type=float, default=85.0)
    p.add_argument("--safety-margin-ms", type=float, default=10.0)
    p.add_argument("--pace", default="realtime", choices=("realtime", "fast"))
    p.add_argument("--weather", default="none", help="none, fog-ramp, rain-ramp, night, fog:DENSITY, ...")
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    def body() -> int:
        weather = parse_weather(a.weather)
        cfg = PipelineConfig(precision_mode=a.mode, latency_budget_ms=a.budget_ms, safety_margin_ms=a.safety_margin_ms,
                             max_batch=a.max_batch, input_shape=a.input_shape)
        cfg.validate()
        engine = DualModeEngine(a.engine, backend=a.backend, ort_options=ort_options(a), max_batch=a.max_batch)
        engine.warmup(3, a.input_shape)
        s = run_replay(a.bags, engine, a.out, config=cfg, topics=a.topics, pace=a.pace,
                       weather=None if weather.kind == "none" else weather, progress=not a.no_progress)
        engine.close()
        lat = s["latency_ms"]
        print(f"dpa-replay: {s['frames_processed']}/{s['frames_in']} frames processed, {s['frames_dropped']} dropped, "
              f"{s['deadline_misses']} deadline misses; e2e p50 {lat['p50']} p99 {lat['p99']} ms; "
              f"modes {s['frames_per_mode']}, {s['switches']} switches")
        print(f"dpa-replay: report {a.out / 'report.png'}, summary {a.out / 'summary.json'}, "
              f"detections bag {a.out / 'detections'}")
        return 0

    return run_cli("dpa-replay", body)


if __name__ == "__main__":
    sys.exit(main())
