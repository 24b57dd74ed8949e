#!/usr/bin/env python3
"""Benchmark the visibility estimator and the synthetic weather on the shared test images.

Run from the repository root:

    python benchmarks/bench_visibility.py [--images DIR] [--runs 200]

Prints the per-frame ``VisibilityEstimator.estimate`` time (median and 90th percentile over
``--runs`` calls, downscale included) for every image, the time of each weather function on
the 960x540 UA-DETRAC frame, and the score table of every image clean and under synthetic
fog at densities 0.3 / 0.6 / 0.9 (seed 0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dpa_perception.core.machine import cpu_summary
from dpa_perception.core.visibility import VisibilityEstimator
from dpa_perception.demo.weather import add_fog, add_glare, add_night, add_rain

IMAGES = REPO.parent / "shared" / "testdata" / "images"
UADETRAC = "uadetrac_MVI_20011_img00001.jpg"


def _times_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and 90th percentile of ``runs`` calls, in milliseconds (after one warm-up)."""
    fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples), float(np.percentile(samples, 90))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=IMAGES, help="folder of test images")
    ap.add_argument("--runs", type=int, default=200, help="timed calls per image")
    args = ap.parse_args()
    files = sorted(p for p in args.images.glob("*") if p.suffix.lower() in (".jpg", ".png"))
    images = {p.name: img for p in files if (img := cv2.imread(str(p))) is not None}
    if not images:
        print(f"no images in {args.images}", file=sys.stderr)
        return 1
    est = VisibilityEstimator()

    print(cpu_summary())
    print(f"estimate() per frame, {args.runs} runs")
    print(f"{'image':40s} {'size':>10s} {'median ms':>10s} {'p90 ms':>8s}")
    for name, img in images.items():
        med, p90 = _times_ms(partial(est.estimate, img), args.runs)
        size = f"{img.shape[1]}x{img.shape[0]}"
        print(f"{name:40s} {size:>10s} {med:10.3f} {p90:8.3f}")

    if UADETRAC in images:
        frame = images[UADETRAC]
        runs = max(1, args.runs // 4)
        print(f"\nweather functions on {UADETRAC} (strength 0.6), {runs} runs")
        for fn in (add_fog, add_rain, add_night, add_glare):
            med, p90 = _times_ms(partial(fn, frame, 0.6, 0), runs)
            print(f"{fn.__name__:12s} median {med:6.2f} ms  p90 {p90:6.2f} ms")

    print("\nscores (degradation = max of the condition scores)")
    cols = ("fog", "low_light", "glare", "blur", "blockage", "degradation")
    print(f"{'image':40s} {'fog dens.':>9s} " + " ".join(f"{c:>11s}" for c in cols) + "  label")
    for name, img in images.items():
        for density in (0.0, 0.3, 0.6, 0.9):
            r = est.estimate(add_fog(img, density, seed=0))
            values = [*r.scores.values(), r.degradation]
            print(f"{name:40s} {density:9.1f} " + " ".join(f"{v:11.3f}" for v in values)
                  + f"  {r.label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
