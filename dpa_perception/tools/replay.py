"""``dpa-replay``: run the node's runtime over rosbag2 files and write detections, stats and a report.

Parameters are the node's: ``--params`` takes the node's ROS 2 parameter YAML files (merged in
order, validated exactly as the node validates them), single flags and ``--set NAME=VALUE``
override values, and the engine, pipeline and diagnostics are built by the same function the node's
configure calls (:func:`dpa_perception.runtime.assemble`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dpa_perception.core import node_params as P
from dpa_perception.core.errors import ConfigError
from dpa_perception.demo.weather import parse_weather
from dpa_perception.replay.run import PACES, run_replay
from dpa_perception.runtime import load_parameter_files
from dpa_perception.tools.cli_common import run_cli

# flag -> node parameter (defaults: the parameter files, else the parameter table)
FLAGS: dict[str, str] = {
    "--engine": "engine_dir",
    "--backend": "backend",
    "--input-shape": "input_shape",
    "--threads": "ort_intra_op_threads",
    "--mode": "precision_mode",
    "--budget-ms": "latency_budget_ms",
    "--safety-margin-ms": "safety_margin_ms",
    "--max-batch": "max_batch",
}
_PY_TYPES = {P.INT: int, P.DOUBLE: float, P.STRING: str}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dpa-replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bags", nargs="+", type=Path, help="rosbag2 folders (sqlite3 or mcap)")
    p.add_argument("--params", action="append", type=Path, default=[],
                   help="the node's ROS 2 parameter YAML (repeatable; later files win)")
    for flag, name in FLAGS.items():
        spec = P.SPECS[name]
        p.add_argument(flag, dest=name, type=_PY_TYPES[spec.type], choices=spec.choices or None,
                       help=f"node parameter {name} (default {P.default(name)!r}). {spec.description}")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any node parameter, value in YAML syntax (repeatable), e.g. --set score_threshold=0.4")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--topics", nargs="*", help="camera topics (default: the parameters' camera_topics when the bag "
                                               "has them all, else every image topic)")
    p.add_argument("--pace", default="realtime", choices=PACES)
    p.add_argument("--weather", default="none", help="none, fog-ramp, rain-ramp, night, fog:DENSITY, ...")
    p.add_argument("--no-progress", action="store_true")
    return p


def replay_values(a: argparse.Namespace) -> dict[str, Any]:
    """The node parameters of this replay: parameter files, then single flags, then --set."""
    values = load_parameter_files(a.params)
    for name in FLAGS.values():
        if getattr(a, name) is not None:
            values[name] = str(getattr(a, name)) if name == "engine_dir" else getattr(a, name)
    for item in a.set:
        name, sep, text = item.partition("=")
        if not sep or name.strip() not in P.SPECS:
            raise ConfigError(f"--set {item!r}: expected NAME=VALUE with a node parameter name")
        values[name.strip()] = yaml.safe_load(text)
    if not values.get("engine_dir"):
        raise ConfigError("no engine: give --engine DIR or engine_dir in a --params file")
    P.validate_values(values)  # every refusal before the bag is opened
    return values


def main(argv: Sequence[str] | None = None) -> int:
    a = parser().parse_args(argv)

    def body() -> int:
        weather = parse_weather(a.weather)
        s = run_replay(a.bags, replay_values(a), a.out, topics=a.topics, pace=a.pace,
                       weather=None if weather.kind == "none" else weather, progress=not a.no_progress)
        lat = s["latency_ms"]
        print(f"dpa-replay: {s['frames_processed']}/{s['frames_in']} frames processed, {s['frames_dropped']} dropped, "
              f"{s['deadline_misses']} deadline misses; e2e p50 {lat['p50']} p99 {lat['p99']} ms; "
              f"modes {s['frames_per_mode']}, {s['switches']} switches; batch sizes {s['batch_sizes']}")
        print(f"dpa-replay: report {a.out / 'report.png'}, summary {a.out / 'summary.json'}, "
              f"detections bag {a.out / 'detections'}")
        return 0

    return run_cli("dpa-replay", body)


if __name__ == "__main__":
    sys.exit(main())
