#!/usr/bin/env python3
"""Benchmark the TensorRT engines of an engine folder: both modes, batch 1/4/8, GPU vs DLA.

Run on the target (Jetson or x86 dGPU) from the repository root:

    python benchmarks/bench_tensorrt.py ENGINE_DIR [--batches 1,4,8] [--runs 100]

ENGINE_DIR is a folder written by ``dpa-build`` (the ONNX variants and manifest.json). Engines are
built into a scratch copy of it for each placement plan: "gpu" (both modes on the GPU) and, where
the machine has DLA cores, "dla" (int8 on dla:0, high on dla:1, GPU fallback on). DLA engines are
static (DLA has no dynamic shapes), so they are built once per batch size. The timed call is
``session.run`` as the node uses it: host batch in, host output out (copies included).
Prints a table, then one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dpa_perception.backends.base import Placement
from dpa_perception.backends.tensorrt.builder import build_tensorrt_engines
from dpa_perception.backends.tensorrt.features import import_tensorrt
from dpa_perception.backends.tensorrt.probe import probe_machine
from dpa_perception.backends.tensorrt.session import load_tensorrt_session, runtime_logger
from dpa_perception.core.errors import DpaError
from dpa_perception.core.manifest import Manifest

IMAGES = REPO.parent / "shared" / "testdata" / "images"


def _frames(hw: tuple[int, int], n: int) -> np.ndarray:
    """Letterboxed test images (BGR 0..255 on 114, top-left) or noise when they are absent."""
    try:
        import cv2

        files = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    except (ImportError, OSError):
        files = []
    out = []
    for i in range(n):
        canvas = np.full((hw[0], hw[1], 3), 114, np.uint8)
        img = cv2.imread(str(files[i % len(files)])) if files else None
        if img is not None:
            r = min(hw[0] / img.shape[0], hw[1] / img.shape[1])
            small = cv2.resize(img, (int(img.shape[1] * r), int(img.shape[0] * r)))
            canvas[: small.shape[0], : small.shape[1]] = small
        else:
            canvas[:] = np.random.default_rng(i).integers(0, 255, canvas.shape, dtype=np.uint8)
        out.append(canvas.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out).astype(np.float32))


def _time(session, batch: np.ndarray, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        session.run(batch)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(batch)
        times.append((time.perf_counter() - t) * 1e3)
    return times


def _build(src: Path, work: Path, placements: dict[str, Placement], max_batch: int, cache: Path) -> tuple[Path, Manifest]:
    d = work / f"{'_'.join(f'{k}-{v}' for k, v in placements.items()).replace(':', '')}_b{max_batch}"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("*.engine", "timing.cache"))
    manifest = Manifest.load(d, verify=False)
    manifest.tensorrt = None
    manifest.tensorrt = build_tensorrt_engines(
        d, manifest, placements=placements, max_batch=max_batch, opt_batch=None,
        workspace_mib=1024, timing_cache=cache, log=lambda m: print(f"  {m}", file=sys.stderr),
    )  # fmt: skip
    return d, manifest


def _measure(engine_dir: Path, work: Path, plan: tuple[str, dict[str, Placement]], builds: list[tuple[int, int | None]],
             batches: list[int], a: argparse.Namespace) -> list[dict]:
    """Build the engines of one placement plan for each (max batch, only batch) and time them."""
    plan_name, placements = plan
    rows: list[dict] = []
    for max_batch, only in builds:
        print(f"building {plan_name} engines (max batch {max_batch}) ...", file=sys.stderr)
        d, manifest = _build(engine_dir, work, placements, max_batch, work / "timing.cache")
        hw = manifest.model.input_hw
        assert manifest.tensorrt is not None
        for mode in ("int8", "high"):
            entry = manifest.tensorrt["engines"][mode]
            sess = load_tensorrt_session(d, manifest, mode, placements[mode], max_batch=max_batch)
            try:
                for b in batches if only is None else [only]:
                    t = _time(sess, _frames(hw, b), a.warmup, a.runs)
                    p50 = statistics.median(t)
                    p95 = float(np.percentile(t, 95))
                    rows.append({
                        "mode": mode, "placement": str(placements[mode]), "precision": entry["precision"],
                        "batch": b, "p50_ms": round(p50, 3), "p95_ms": round(p95, 3),
                        "per_frame_ms": round(p50 / b, 3), "fps": round(1e3 * b / p50, 1),
                        "layers_on_dla": entry["layers"]["on_dla"], "layers_on_gpu": entry["layers"]["on_gpu"],
                    })  # fmt: skip
            finally:
                sess.close()
    return rows


def _print_table(rows: list[dict]) -> None:
    head = (f"{'mode':5} {'placement':9} {'precision':10} {'batch':>5} {'p50 ms':>8} {'p95 ms':>8} "
            f"{'ms/frame':>9} {'fps':>8} {'DLA/GPU layers':>15}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['mode']:5} {r['placement']:9} {r['precision']:10} {r['batch']:>5} {r['p50_ms']:>8.2f} "
              f"{r['p95_ms']:>8.2f} {r['per_frame_ms']:>9.2f} {r['fps']:>8.1f} "
              f"{str(r['layers_on_dla']) + '/' + str(r['layers_on_gpu']):>15}")  # fmt: skip


def _batches(a: argparse.Namespace) -> list[int] | None:
    """The batch sizes to time (batch 1 only for a static-batch model), or None after an error."""
    batches = sorted({int(b) for b in a.batches.split(",") if b.strip()})
    if not batches or batches[0] < 1:
        print("bench_tensorrt: --batches needs positive batch sizes", file=sys.stderr)
        return None
    try:
        model = Manifest.load(a.engine_dir, verify=False).model
    except DpaError as exc:
        print(f"bench_tensorrt: cannot read {a.engine_dir}/manifest.json: {exc}", file=sys.stderr)
        return None
    if not model.dynamic_batch and batches != [1]:
        # a fixed-batch model gets batch-1 engines and runs frames one by one
        print(f"bench_tensorrt: the model's batch is static; measuring batch 1 only (not {batches})", file=sys.stderr)
        batches = [1]
    return batches


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("engine_dir", type=Path)
    p.add_argument("--batches", default="1,4,8")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-dla", action="store_true", help="skip the DLA plan even where DLA exists")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    a = p.parse_args(argv)
    batches = _batches(a)
    if batches is None:
        return 2
    try:
        trt = import_tensorrt()
        machine = probe_machine(trt)
        num_dla = int(getattr(trt.Builder(runtime_logger(trt)), "num_DLA_cores", 0) or 0)
    except DpaError as exc:
        print(f"bench_tensorrt: {exc}", file=sys.stderr)
        return 2
    gpu = Placement("gpu")
    plans: list[tuple[str, dict[str, Placement], bool]] = [("gpu", {"int8": gpu, "high": gpu}, False)]
    if num_dla and not a.no_dla:
        plans.append(("dla", {"int8": Placement("dla", 0), "high": Placement("dla", min(1, num_dla - 1))}, True))
    work = a.work or Path(tempfile.mkdtemp(prefix="bench_trt_"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    try:
        for plan_name, placements, static in plans:
            builds: list[tuple[int, int | None]] = [(b, b) for b in batches] if static else [(max(batches), None)]
            rows += _measure(a.engine_dir, work, (plan_name, placements), builds, batches, a)
    except DpaError as exc:
        print(f"bench_tensorrt: {exc}", file=sys.stderr)
        return 2
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    _print_table(rows)
    print(json.dumps({
        "bench": "tensorrt", "trt_version": machine.trt_version,
        "compute_capability": machine.compute_capability, "dla_cores": num_dla,
        "runs": a.runs, "warmup": a.warmup, "results": rows,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
