"""``dpa-replay``: run the node's runtime over rosbag2 files and write detections, stats and a report.

Parameters are the node's: ``--params`` takes the node's ROS 2 parameter YAML files (merged in
order, validated exactly as the node validates them), single flags and ``--set NAME=VALUE``
override values, and the engine, pipeline and diagnostics are built by the same function the node's
configure calls (:func:`dpa_perception.runtime.assemble`).

Several bags play on one timeline whatever their clocks (back to back, gaps over --max-gap
collapsed). The outputs are written beside --out and swapped in at the end, so --out holds a
complete run or what was there before; an existing --out needs --force. Exit status: 0 complete;
1 nothing processed or a bag that stopped reading part-way (outputs written, summary.json "ended"
says which); 2 a command-line, parameter or bag error (nothing written); 130/143 SIGINT/SIGTERM
(the partial results written, "ended": "interrupted"; a second signal writes nothing).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dpa_perception.core import node_params as P
from dpa_perception.core.errors import ConfigError
from dpa_perception.demo.weather import parse_weather
from dpa_perception.replay.run import PACES, ReplayInterrupted, run_replay
from dpa_perception.replay.timeline import MAX_GAP_S
from dpa_perception.runtime import load_parameter_files
from dpa_perception.tools.cli_common import folder_arg, run_cli

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


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (no usage block), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return v


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dpa-replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bags", nargs="+", type=Path, help="rosbag2 folders (sqlite3 or mcap)")
    p.add_argument("--params", action="append", type=Path, default=[],
                   help="the node's ROS 2 parameter YAML (repeatable; later files win)")
    for flag, name in FLAGS.items():
        spec = P.SPECS[name]
        p.add_argument(flag, dest=name, type=_PY_TYPES[spec.type], choices=spec.choices or None,
                       help=f"node parameter {name} (default {P.default(name)!r}). {spec.description}")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any node parameter, value in YAML syntax (repeatable), e.g. --set score_threshold=0.4")
    p.add_argument("--out", type=Path, required=True, help="output folder (written beside it, swapped in at the end)")
    p.add_argument("--force", action="store_true", help="replace an existing --out that holds a previous replay")
    p.add_argument("--max-gap", type=_positive, default=MAX_GAP_S, metavar="S",
                   help=f"collapse gaps between successive messages longer than S seconds to 1 s (default {MAX_GAP_S:g})")
    p.add_argument("--topics", nargs="*", help="camera topics (default: the parameters' camera_topics when the bag "
                                               "has them all, else every image topic)")
    p.add_argument("--pace", default="realtime", choices=PACES)
    p.add_argument("--weather", default="none", help="none, fog-ramp, rain-ramp, night, fog:DENSITY, ...")
    p.add_argument("--video", type=folder_arg, metavar="DIR",
                   help="also write one annotated MP4 per camera into DIR (boxes, classes, track ids, mode, visibility)")
    p.add_argument("--video-fps", type=_positive, default=10.0, metavar="FPS", help="frame rate of --video (default 10)")
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
        if not sep or (name.strip() not in P.SPECS and not P.is_camera_param(name.strip())):
            raise ConfigError(f"--set {item!r}: expected NAME=VALUE with a node parameter name")
        try:
            values[name.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: not a YAML value ({' '.join(str(exc).split())})") from None
    if not values.get("engine_dir"):
        raise ConfigError("no engine: give --engine DIR or engine_dir in a --params file")
    P.validate_values(values)  # every refusal before the bag is opened
    return values


def _report(s: dict[str, Any], out: Path) -> int:
    lat = s["latency_ms"]
    print(f"dpa-replay: {s['frames_processed']}/{s['frames_in']} frames processed, {s['frames_dropped']} dropped, "
          f"{s['frames_rejected']} rejected, {s['frames_failed']} failed, {s['deadline_misses']} deadline misses; "
          f"e2e p50 {lat['p50']} p99 {lat['p99']} ms; modes {s['frames_per_mode']}, {s['switches']} switches; "
          f"batch sizes {s['batch_sizes']}")
    print(f"dpa-replay: report {out / 'report.png'}, summary {out / 'summary.json'} (ended: {s['ended']}), "
          f"detections bag {out / 'detections'}")
    w = s.get("world") or {}
    if "tracks" in w:
        print(f"dpa-replay: world frame: {w['tracks']} tracks, {w['objects_published']} objects published, dropped "
              f"{w['dropped'] or 0}; tracks {out / 'tracks.jsonl'}, bird's-eye view {out / 'birdseye.png'}")
    for cam, path in (w.get("videos") or {}).items():
        print(f"dpa-replay: video {cam}: {path}")
    if s["ended"] == "nothing_processed":
        reasons = "; ".join(f"{n}x {r}" for r, n in s.get("reject_reasons", {}).items())
        print(f"dpa-replay: error: no frame processed ({s['frames_in']} in: {s['frames_rejected']} rejected"
              f"{' (' + reasons[:300] + ')' if reasons else ''}, {s['frames_dropped']} dropped "
              f"{s['drop_reasons']}, {s['frames_failed']} failed{_first(s['fail_reasons'])}); outputs in {out}",
              file=sys.stderr)
        return 1
    if s["ended"] == "read_error":
        print(f"dpa-replay: error: {s['read_errors'][0]}; the part read was replayed, outputs in {out}", file=sys.stderr)
        return 1
    return 0


def _first(reasons: dict[str, int]) -> str:
    return f" ({next(iter(reasons))[:200]})" if reasons else ""


def _interrupted(exc: ReplayInterrupted, out: Path) -> int:
    name = signal.Signals(exc.signum).name
    if exc.summary is None:
        print(f"dpa-replay: interrupted by {name}; nothing written ({out} unchanged)", file=sys.stderr)
    else:
        s = exc.summary
        print(f"dpa-replay: interrupted by {name} after {s['messages_read']}/{s['messages_expected']} messages; "
              f"partial results in {out} (summary.json ended: interrupted)", file=sys.stderr)
    return 128 + int(exc.signum)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise ReplayInterrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    a = parser().parse_args(argv)

    def body() -> int:
        try:
            weather = parse_weather(a.weather)
            values = replay_values(a)
            s = run_replay(a.bags, values, a.out, topics=a.topics, pace=a.pace, force=a.force, max_gap_s=a.max_gap,
                           weather=None if weather.kind == "none" else weather, progress=not a.no_progress,
                           video_dir=a.video, video_fps=a.video_fps)
        except ReplayInterrupted as exc:
            return _interrupted(exc, a.out)
        except KeyboardInterrupt:
            return _interrupted(ReplayInterrupted(signal.SIGINT), a.out)
        # other errors: run_cli's one line (status 2, or 1 for a bug); --out is staged, so never half-written
        return _report(s, a.out)

    # SIGTERM before or after the play loop (which handles it itself): an interrupt, nothing written
    old = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        return run_cli("dpa-replay", body)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())
