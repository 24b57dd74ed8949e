#!/usr/bin/env python3
"""Benchmark the perception pipeline end to end with dpa-replay's engine room (``run_replay``).

Run from the repository root:

    python benchmarks/bench_pipeline.py --engine ENGINE_DIR [--no-multi] [--threads 1] [--budget-ms 85]

ENGINE_DIR is a folder written by ``dpa-build`` (e.g. ``make demo`` builds out/engine_yolox_nano).
Scenarios, all in ``auto`` precision mode:

1. the shared roadside bag (one JPEG camera, 5 Hz, 42 frames) replayed at real time;
2. unless ``--no-multi``: a synthetic multi-camera bag written on the fly to a temporary mcap
   from the roadside bag's frames: three JPEG cameras at 10 Hz (phases 0 / 33 / 66 ms, each
   starting at a different frame) and one raw rgb8 camera (640x360) at 5 Hz, replayed at real
   time: the cameras compete for one engine;
3. the roadside bag under ``--weather fog-ramp``, at fast pace and at real time: the fraction
   of int8 frames over the first quarter and of high frames over the last quarter of the
   processed frames.

For each it prints frames processed (%), e2e p50/p95/p99 (ms), % of processed frames over the
budget, deadline misses, drops by reason and frames per mode (per camera for the multi-camera
bag). No assertion: these are measurements of this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dpa_perception.backends.onnxruntime_backend import OrtOptions
from dpa_perception.bags.reader import iter_images
from dpa_perception.core.machine import cpu_summary
from dpa_perception.demo.weather import WeatherSpec, parse_weather
from dpa_perception.inference.engine import DualModeEngine
from dpa_perception.replay.run import run_replay

BAG = REPO.parent / "shared" / "testdata" / "bags" / "uadetrac_roadside_compressed_sqlite3"
NS = 1_000_000_000


def _frames(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


def _pct(values: list[float]) -> str:
    if not values:
        return "p50 n/a"
    p50, p95, p99 = np.percentile(np.asarray(values, np.float64), [50, 95, 99])
    return f"p50 {p50:6.1f}  p95 {p95:6.1f}  p99 {p99:6.1f} ms"


def _line(frames: list[dict[str, Any]], budget: float) -> str:
    proc = [f for f in frames if f["status"] == "processed"]
    e2e = [f["e2e_ms"] for f in proc]
    over = sum(1 for v in e2e if v > budget)
    drops = Counter(f["reason"] for f in frames if f["status"] == "dropped")
    rejected = sum(1 for f in frames if f["status"] == "rejected")
    modes = Counter(f["mode"] for f in proc)
    misses = over + drops.get("stale", 0) + drops.get("late", 0)
    return (f"{len(proc):4d}/{len(frames):4d} processed ({100.0 * len(proc) / max(len(frames), 1):5.1f} %)  "
            f"e2e {_pct(e2e)}  over budget {100.0 * over / max(len(proc), 1):5.1f} %  misses {misses}  "
            f"int8 {modes.get('int8', 0)} high {modes.get('high', 0)}  "
            f"drops {dict(drops) or '{}'}{f'  rejected {rejected}' if rejected else ''}")


def report(title: str, out: Path, budget: float, per_camera: bool = False) -> list[dict[str, Any]]:
    frames = _frames(out)
    print(f"\n{title}")
    print(f"  all cameras   {_line(frames, budget)}")
    if per_camera:
        for topic in sorted({f["topic"] for f in frames}):
            print(f"  {topic:<13.13s} {_line([f for f in frames if f['topic'] == topic], budget)}" if len(topic) <= 13
                  else f"  {topic}\n                {_line([f for f in frames if f['topic'] == topic], budget)}")
    return frames


def quarters(frames: list[dict[str, Any]]) -> str:
    proc = [f for f in frames if f["status"] == "processed"]
    q = max(1, len(proc) // 4)
    first = sum(f["mode"] == "int8" for f in proc[:q]) / q
    last = sum(f["mode"] == "high" for f in proc[-q:]) / q
    return f"int8 over the first quarter {100 * first:5.1f} %, high over the last quarter {100 * last:5.1f} % ({q} frames each)"


def write_multicam_bag(path: Path, seconds: float = 8.4) -> dict[str, int]:
    """Three 10 Hz JPEG cameras and one 5 Hz raw rgb8 camera from the roadside bag's frames."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    imgs = [m.decode() for m in iter_images([BAG])]
    jpegs = [cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for im in imgs]
    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    t0 = 1_700_000_000 * NS

    def header(t: int, frame_id: str) -> Any:
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t // NS, nanosec=t % NS),
                                        frame_id=frame_id)

    msgs: list[tuple[int, str, str, Any]] = []
    for cam in range(3):
        topic = f"/rsu/cam{cam}/image_raw/compressed"
        for i in range(int(seconds * 10)):
            t = t0 + i * 100_000_000 + cam * 33_000_000
            data = np.frombuffer(jpegs[(i + 14 * cam) % len(jpegs)], np.uint8)
            msgs.append((t, topic, "sensor_msgs/msg/CompressedImage",
                         T["sensor_msgs/msg/CompressedImage"](header=header(t, f"cam{cam}_optical"), format="jpeg", data=data)))
    raw_topic = "/rsu/cam3/image_raw"
    for i in range(int(seconds * 5)):
        t = t0 + i * 200_000_000 + 17_000_000
        rgb = cv2.cvtColor(cv2.resize(imgs[(i * 2 + 7) % len(imgs)], (640, 360), interpolation=cv2.INTER_AREA),
                           cv2.COLOR_BGR2RGB)
        msgs.append((t, raw_topic, "sensor_msgs/msg/Image",
                     T["sensor_msgs/msg/Image"](header=header(t, "cam3_optical"), height=360, width=640, encoding="rgb8",
                                                is_bigendian=0, step=640 * 3, data=rgb.reshape(-1))))
    msgs.sort(key=lambda m: m[0])
    counts: Counter[str] = Counter()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for t, topic, msgtype, msg in msgs:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=ts)
            w.write(conns[topic], t, ts.serialize_cdr(msg, msgtype))
            counts[topic] += 1
    return dict(counts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", type=Path, required=True, help="engine folder written by dpa-build")
    ap.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"))
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (dpa-replay's default: 1)")
    ap.add_argument("--budget-ms", type=float, default=85.0)
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--no-multi", action="store_true", help="skip the synthetic multi-camera bag")
    ap.add_argument("--keep", type=Path, help="write the replay outputs here instead of a temporary folder")
    args = ap.parse_args()

    engine = DualModeEngine(args.engine, backend=args.backend, ort_options=OrtOptions(intra_op_threads=args.threads),
                            max_batch=args.max_batch)
    engine.warmup(3)
    lat = {m: engine.stats[m].summary()["p50_ms"] for m in ("int8", "high")}
    print(cpu_summary())
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}; "
          f"backend {args.backend}, {args.threads} thread(s); budget {args.budget_ms:g} ms; "
          f"warm-up inference p50 int8 {lat['int8']:.1f} ms, high {lat['high']:.1f} ms (batch 1)")

    values = {"engine_dir": str(args.engine), "backend": args.backend, "precision_mode": "auto",
              "latency_budget_ms": args.budget_ms, "max_batch": args.max_batch,
              "ort_intra_op_threads": args.threads}  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="dpa_bench_") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)

        def replay(name: str, bags: list[Path], pace: str, weather: WeatherSpec | None = None) -> tuple[Path, float]:
            out = root / name
            t = time.perf_counter()
            run_replay(bags, values, out, pace=pace, weather=weather, progress=False, engine=engine, force=True)
            return out, time.perf_counter() - t

        out, wall = replay("roadside_realtime", [BAG], "realtime")
        report(f"1. roadside bag, 1 JPEG camera at 5 Hz, realtime, auto ({wall:.1f} s wall)", out, args.budget_ms)

        if not args.no_multi:
            bag = root / "multicam_mcap"
            counts = write_multicam_bag(bag)
            out, wall = replay("multicam_realtime", [bag], "realtime")
            desc = ", ".join(f"{t} {n}" for t, n in sorted(counts.items()))
            report(f"2. synthetic 4-camera bag ({desc}), realtime, auto ({wall:.1f} s wall)", out, args.budget_ms,
                   per_camera=True)

        fog = parse_weather("fog-ramp")
        out, wall = replay("fog_ramp_fast", [BAG], "fast", fog)
        frames = report(f"3a. roadside bag, fog-ramp, fast pace, auto ({wall:.1f} s wall)", out, args.budget_ms)
        print(f"  fog ramp      {quarters(frames)}")
        out, wall = replay("fog_ramp_realtime", [BAG], "realtime", fog)
        frames = report(f"3b. roadside bag, fog-ramp, realtime, auto ({wall:.1f} s wall)", out, args.budget_ms)
        print(f"  fog ramp      {quarters(frames)}")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
