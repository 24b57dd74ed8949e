"""Resident memory over repeated configure/cleanup cycles, measured in a fresh process of its own.

    python test/leak_probe.py assembly ENGINE_DIR [CYCLES]   # engine + pipeline, no ROS
    python test/leak_probe.py node ENGINE_DIR [CYCLES]       # the lifecycle node (needs ROS 2)

Prints one JSON line: RSS (MiB) after the warm-up cycles and after ``CYCLES`` more. A fresh process
measures only what the cycles allocate, not what a shared pytest process holds for other tests.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable
from pathlib import Path

WARMUP = 3


def _trim() -> None:
    """Hand the allocator's free pages back (glibc ``malloc_trim``): what stays resident is then what
    is alive, not what each thread's malloc arena kept after freeing two ONNX Runtime sessions a
    cycle (measured: +-80 MiB from cycle to cycle without it, once every worker thread infers)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: RSS as it is
            pass


def rss_mib() -> float:
    _trim()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def assembly_cycle(engine_dir: Path) -> Callable[[], None]:
    import numpy as np

    from dpa_perception.core.pipeline import Pipeline
    from dpa_perception.inference.engine import DualModeEngine

    frame = np.full((360, 640, 3), 90, np.uint8)

    def cycle() -> None:
        engine = DualModeEngine(engine_dir)
        engine.warmup(1)
        pipeline = Pipeline(engine)
        pipeline.start(lambda r: None)
        pipeline.submit("cam", frame, pipeline.clock_ns())
        pipeline.stop()
        engine.close()

    return cycle


def node_cycle(engine_dir: Path) -> Callable[[], None]:
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from dpa_perception.ros.node import DpaPerceptionNode

    rclpy.init()
    node = DpaPerceptionNode(
        "dpa_leak_probe",
        parameter_overrides=[
            Parameter("engine_dir", value=str(engine_dir)),
            Parameter("camera_topics", value=["/tleak/cam0/image_raw", "/tleak/cam1/image_raw/compressed"]),
        ],
    )

    def cycle() -> None:
        for trigger in (node.trigger_configure, node.trigger_activate, node.trigger_deactivate, node.trigger_cleanup):
            ret = trigger()
            if ret != TransitionCallbackReturn.SUCCESS:
                raise RuntimeError(f"{trigger.__name__} returned {ret}")

    return cycle


def main(argv: list[str]) -> int:
    kind, engine_dir = argv[0], Path(argv[1])
    cycles = int(argv[2]) if len(argv) > 2 else 20
    cycle = {"assembly": assembly_cycle, "node": node_cycle}[kind](engine_dir)
    for _ in range(WARMUP):
        cycle()
    gc.collect()
    before = rss_mib()
    for _ in range(cycles):
        cycle()
    gc.collect()
    print(json.dumps({"kind": kind, "cycles": cycles, "rss_before_mib": before, "rss_after_mib": rss_mib()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
