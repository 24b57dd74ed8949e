"""Arguments and error handling shared by the command-line tools.

Every error of a tool is one line on stderr, ``PROG: error: ...``, and a non-zero exit status:
usage errors (:class:`Parser`, status 2), library errors (:class:`DpaError`, status 2), system
errors (:class:`OSError`: a full disk, a permission, status 2) and, for a bug, any other exception
(status 1; ``DPA_DEBUG=1`` prints its traceback too). Ctrl-C exits 130; SIGTERM inside
:func:`sigterm_raises` exits 143, after the cleanup of the work under way.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from dpa_perception.backends.onnxruntime_backend import OrtOptions
from dpa_perception.core.errors import ConfigError, DpaError
from dpa_perception.core.types import BACKENDS, INPUT_SHAPE_POLICIES


def one_line(text: object) -> str:
    return " ".join(str(text).split())


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", type=Path, required=True, help="engine folder written by dpa-build")
    p.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    p.add_argument("--input-shape", default="square", choices=INPUT_SHAPE_POLICIES,
                   help="square: the model's native canvas; rect: trimmed to the frame's aspect")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (0 = its default)")
    p.add_argument("--spin", action="store_true", help="let ONNX Runtime threads spin (slower on shared cores)")


def ort_options(a: argparse.Namespace) -> OrtOptions:
    """The session options of :func:`add_engine_args`, validated (:class:`ConfigError` naming the flag)."""
    if not 0 <= a.threads <= 1024:
        raise ConfigError(f"--threads must be within [0, 1024] (0 = ONNX Runtime's default), not {a.threads}")
    opts = OrtOptions(intra_op_threads=a.threads, allow_spinning=a.spin)
    opts.validate()
    return opts


def folder_arg(text: str) -> Path:
    """argparse type of an output folder: a non-empty path (``""`` would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty folder name")
    return Path(text)


def engine_folder(path: Path, flag: str = "--engine") -> Path:
    """``path`` if it is an engine folder (holds ``manifest.json``), else :class:`ConfigError`."""
    if not path.exists():
        raise ConfigError(f"{flag} {path}: engine folder not found (build one with dpa-build)")
    if not path.is_dir():
        raise ConfigError(f"{flag} {path} is not a folder (an engine folder written by dpa-build)")
    return path


def int_in(value: int, flag: str, low: int, high: int | None = None) -> int:
    """``value`` if within [low, high], else :class:`ConfigError` naming ``flag``."""
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"within [{low}, {high}]"
        raise ConfigError(f"{flag} must be {bound}, not {value}")
    return value


def finite_in(value: float, flag: str, low: float, high: float) -> float:
    """``value`` if finite and within [low, high], else :class:`ConfigError` naming ``flag``."""
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{flag} must be a number within [{low:g}, {high:g}], not {value}")
    return value


class Terminated(BaseException):
    """SIGTERM, raised in the main thread by :func:`sigterm_raises` so that cleanup handlers run
    (a BaseException: ``except Exception`` blocks do not swallow it)."""


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run ``body``; an error becomes one line on stderr: status 2 for library and system errors
    (:class:`DpaError`, :class:`OSError`), 1 for anything else (a bug), 130 on Ctrl-C."""
    try:
        return body()
    except DpaError as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return 143
    except Exception as exc:  # a bug: still one line; DPA_DEBUG=1 for the traceback
        if os.environ.get("DPA_DEBUG"):
            traceback.print_exc()
        print(f"{prog}: error: internal error ({type(exc).__name__}: {one_line(exc)}); "
              f"DPA_DEBUG=1 shows the traceback", file=sys.stderr)  # fmt: skip
        return 1
