"""Arguments and error handling shared by the command-line tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from dpa_perception.backends.onnxruntime_backend import OrtOptions
from dpa_perception.core.errors import DpaError
from dpa_perception.core.types import BACKENDS, INPUT_SHAPE_POLICIES


def add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", type=Path, required=True, help="engine folder written by dpa-build")
    p.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    p.add_argument("--input-shape", default="square", choices=INPUT_SHAPE_POLICIES,
                   help="square: the model's native canvas; rect: trimmed to the frame's aspect")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (0 = its default)")
    p.add_argument("--spin", action="store_true", help="let ONNX Runtime threads spin (slower on shared cores)")


def ort_options(a: argparse.Namespace) -> OrtOptions:
    return OrtOptions(intra_op_threads=a.threads, allow_spinning=a.spin)


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run ``body``; a library error becomes one line on stderr and exit code 2."""
    try:
        return body()
    except DpaError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

