"""``dpa-build``: build an engine folder (high-precision + mixed INT8 variants, manifest, report) offline."""

# The console entry point only: the build itself is dpa_perception.build.engine_dir (BuildOptions, build).

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dpa_perception.backends.tensorrt.builder import add_tensorrt_args, run_tensorrt_build
from dpa_perception.backends.tensorrt.plan import parse_placement_plan
from dpa_perception.build.calibration import load_frames, split_holdout
from dpa_perception.build.engine_dir import BuildOptions, build, build_engine_dir
from dpa_perception.build.plan import PLAN_CHOICES, PLANS
from dpa_perception.build.quantize import CALIBRATION_METHODS
from dpa_perception.core.errors import ConfigError
from dpa_perception.core.types import BACKENDS
from dpa_perception.tools.cli_common import Parser, int_in, run_cli, sigterm_raises

__all__ = ["PLANS", "BuildOptions", "build_engine_dir", "load_frames", "main", "make_parser", "split_holdout"]


def make_parser() -> argparse.ArgumentParser:
    """``dpa-build``'s options; every default is :class:`BuildOptions`'."""
    d = BuildOptions()
    p = Parser(prog="dpa-build", description=__doc__)
    p.add_argument("model", type=Path, help="ONNX detector (YOLOX or YOLOv8/YOLO11 export)")
    p.add_argument("--calib", type=Path, required=True, help="folder of images or a rosbag2 with image topics")
    p.add_argument("--out", type=Path, required=True, help="engine folder to write")
    p.add_argument("--topics", nargs="*", default=d.topics, help="image topics of the calibration bag (default: all)")
    p.add_argument("--calibration", default=d.method, choices=sorted(CALIBRATION_METHODS),
                   help=f"calibration method (default {d.method}: MinMax and Entropy measured worse)")
    p.add_argument("--percentile", type=float, default=d.percentile, help="percentile for the percentile method")
    p.add_argument("--calib-frames", type=int, default=d.calib_frames, help="at most this many calibration frames")
    p.add_argument("--max-error", type=float, default=d.max_error,
                   help="1-F1 of INT8 against high precision allowed (plan search)")
    p.add_argument("--max-kept-fraction", type=float, default=d.max_kept_fraction,
                   help="cap on layers kept in high precision")
    p.add_argument("--bench-runs", type=int, default=d.bench_runs, help="timed runs per variant (per round)")
    p.add_argument("--min-int8-speedup", type=float, default=d.min_int8_speedup,
                   help="INT8 pays when its speed-up over high precision is above this with 95%% confidence "
                        "(else auto runs high precision)")
    p.add_argument("--plan", default=d.plan, choices=PLAN_CHOICES,
                   help="high-precision layers: most sensitive ones, a contiguous prefix, or auto (the faster "
                        "of the two that meets --max-error, timed here; force one when building for another target)")
    p.add_argument("--backend", default=BACKENDS[0], choices=BACKENDS,
                   help="tensorrt: also build TensorRT engines from the folder (run on the target)")
    p.add_argument("--force", action="store_true", default=d.force, help="replace an existing output folder")
    p.add_argument("--no-progress", action="store_true", default=not d.progress)
    add_tensorrt_args(p)  # every option of the TensorRT build, forwarded as they are
    return p


def options_from(a: argparse.Namespace) -> BuildOptions:
    return BuildOptions(max_error=a.max_error, max_kept_fraction=a.max_kept_fraction, method=a.calibration,
                        percentile=a.percentile, calib_frames=a.calib_frames, topics=a.topics,
                        bench_runs=a.bench_runs, min_int8_speedup=a.min_int8_speedup, plan=a.plan,
                        force=a.force, progress=not a.no_progress)  # fmt: skip


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _tensorrt(a: argparse.Namespace) -> int:
    run_tensorrt_build(a.out, a, _stderr)
    return 0


def check_tensorrt_options(a: argparse.Namespace) -> None:
    """The TensorRT options, whatever the backend (a bad value is refused before any ONNX work)."""
    parse_placement_plan(a.placement, gpu_fallback=not a.no_gpu_fallback)
    int_in(a.max_batch, "--max-batch", 1, 1024)
    if a.opt_batch is not None:
        int_in(a.opt_batch, "--opt-batch", 1, a.max_batch)
    int_in(a.workspace_mib, "--workspace-mib", 1)
    if a.timing_cache is not None and a.timing_cache.is_dir():
        raise ConfigError(f"--timing-cache {a.timing_cache} is a folder; give a file")


def _run(a: argparse.Namespace) -> int:
    check_tensorrt_options(a)  # a bad plan or batch fails before the build
    if a.backend == "tensorrt":
        if (a.out / "manifest.json").is_file() and not a.force:
            return _tensorrt(a)  # the folder exists: build only its TensorRT engines
    build(a.model, a.calib, a.out, options_from(a))
    return _tensorrt(a) if a.backend == "tensorrt" else 0


def main(argv: Sequence[str] | None = None) -> int:
    a = make_parser().parse_args(argv)
    with sigterm_raises():  # SIGTERM removes the temp folder like Ctrl-C (the old --out stays)
        return run_cli("dpa-build", lambda: _run(a))


if __name__ == "__main__":
    sys.exit(main())
