"""``dpa-bench``: time both variants interleaved in one run; last line is a JSON summary."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dpa_perception.core.errors import ConfigError
from dpa_perception.core.image_codec import IMAGE_SUFFIXES, read_image
from dpa_perception.core.machine import cpu_summary
from dpa_perception.core.types import INPUT_SHAPE_POLICIES, MODES
from dpa_perception.inference.engine import DualModeEngine
from dpa_perception.tools.cli_common import Parser, add_engine_args, engine_folder, int_in, ort_options, run_cli

MAX_BATCH = 256  # frames per timed call (each a full-size copy in memory)


def _image_files(images: Path) -> list[Path]:
    """The images ``--images`` names (a file or a folder of them), or :class:`ConfigError`."""
    if not images.exists():
        raise ConfigError(f"--images {images}: not found")
    if not images.is_dir():
        return [images]
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"--images {images}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def _frames(images: Path | None, batch: int) -> list[np.ndarray]:
    if images is None:
        rng = np.random.default_rng(0)  # a synthetic 960x540 frame when no images are given
        return [rng.integers(0, 255, (540, 960, 3), dtype=np.uint8) for _ in range(batch)]
    imgs = [read_image(p) for p in _image_files(images)]
    return [imgs[i % len(imgs)] for i in range(batch)]


def _check(a: argparse.Namespace) -> None:
    """Option errors, one line each, before the engine loads."""
    int_in(a.batch, "--batch", 1, MAX_BATCH)
    int_in(a.runs, "--runs", 1)
    if a.images is not None:
        _image_files(a.images)
    engine_folder(a.engine)


def time_modes(engine: DualModeEngine, frames: list[np.ndarray], runs: int, input_shape: str) -> dict[str, list[float]]:
    """Per-frame milliseconds of end-to-end engine calls for each mode, interleaved run by run."""
    for m in MODES:
        engine.infer(frames, m, input_shape)
    out: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(runs):
        for m in MODES:
            t0 = time.perf_counter()
            engine.infer(frames, m, input_shape)
            out[m].append((time.perf_counter() - t0) * 1e3 / len(frames))
    return out


def make_parser() -> argparse.ArgumentParser:
    p = Parser(prog="dpa-bench", description=__doc__)
    add_engine_args(p)
    p.add_argument("--batch", type=int, default=1, help=f"frames per call, 1 to {MAX_BATCH}")
    p.add_argument("--runs", type=int, default=30, help="timed calls per mode (at least 1)")
    p.add_argument("--images", type=Path, help="image or folder to time on (default: a synthetic 960x540 frame)")
    p.add_argument("--compare-shapes", action="store_true", help="also time the other input shape policy")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = make_parser().parse_args(argv)

    def body() -> int:
        _check(a)
        options = ort_options(a)
        frames = _frames(a.images, a.batch)
        engine = DualModeEngine(a.engine, backend=a.backend, ort_options=options, max_batch=a.batch)
        try:
            return _bench(engine, frames, a)
        finally:
            engine.close()

    return run_cli("dpa-bench", body)


def _bench(engine: DualModeEngine, frames: list[np.ndarray], a: argparse.Namespace) -> int:
    policies = [a.input_shape]
    if a.compare_shapes:
        policies += [s for s in INPUT_SHAPE_POLICIES if s != a.input_shape and engine.supports(s)]
    print(cpu_summary())  # INT8 speed-ups depend on the CPU's instruction sets (AVX-512 VNNI, AVX-VNNI, AMX)
    print(f"engine {a.engine} backend {a.backend} batch {a.batch} runs {a.runs} "
          f"threads {a.threads} spin {a.spin}")
    print(f"{'shape':8s} {'mode':6s} {'p50 ms/frame':>13s} {'p90':>8s} {'min':>8s}")
    summary: dict[str, dict[str, float]] = {}
    for policy in policies:
        times = time_modes(engine, frames, a.runs, policy)
        summary[policy] = {}
        for m, v in times.items():
            arr = np.asarray(v)
            summary[policy][m] = float(np.median(arr))
            print(f"{policy:8s} {m:6s} {np.median(arr):13.2f} {np.percentile(arr, 90):8.2f} {arr.min():8.2f}")
    main_p = summary[a.input_shape]
    if len(policies) > 1:
        other = policies[1]
        print(f"{other} vs {a.input_shape}: high {main_p['high'] / summary[other]['high']:.2f}x, "
              f"int8 {main_p['int8'] / summary[other]['int8']:.2f}x faster")
    print(json.dumps({"high_ms": round(main_p["high"], 3), "int8_ms": round(main_p["int8"], 3),
                      "ratio": round(main_p["high"] / main_p["int8"], 3), "batch": a.batch,
                      "input_shape": a.input_shape}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
