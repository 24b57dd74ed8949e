#!/usr/bin/env python3
"""Frame decode + letterbox cost, full versus reduced-scale JPEG decoding, and their detection agreement.

    python benchmarks/bench_decode.py ENGINE_DIR [--runs 200]

For every shared street image (re-encoded as JPEG, quality 92) prints the decode and letterbox time
with full decoding and with the reduction the detector's letterbox allows (``reduced_decode``), and
over all images the detection agreement of reduced against full decoding (high precision,
class-aware, IoU 0.5, 0.3 +- 0.05 score margin). Interleaved runs, medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dpa_perception.build.metrics import agreement
from dpa_perception.core.image_codec import decode_frame
from dpa_perception.core.machine import cpu_summary
from dpa_perception.core.preprocess import canvas_hw, letterbox_batch, resized_hw
from dpa_perception.inference.engine import DualModeEngine

IMAGES = REPO.parent / "shared" / "testdata" / "images"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("engine", type=Path)
    ap.add_argument("--runs", type=int, default=200)
    a = ap.parse_args()
    print(cpu_summary())
    engine = DualModeEngine(a.engine)
    spec = engine.spec
    target = lambda h, w: resized_hw((h, w), spec)  # noqa: E731
    hit_r = n_r = hit_p = n_p = 0
    for path in sorted(p for p in IMAGES.iterdir() if not p.name.startswith("dog")):
        data = cv2.imencode(".jpg", cv2.imread(str(path)), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
        msg = SimpleNamespace(format="jpeg", data=data)
        times: dict[str, list[float]] = {"full": [], "reduced": []}
        for _ in range(a.runs):  # interleaved
            for name, tgt in (("full", None), ("reduced", target)):
                t0 = time.perf_counter()
                img = decode_frame(msg, True, target=tgt).image
                letterbox_batch([img], spec, canvas_hw([img.shape[:2]], spec, "square"))
                times[name].append((time.perf_counter() - t0) * 1e3)
        full, red = decode_frame(msg, True), decode_frame(msg, True, target=target)
        d_full = engine.infer([full.image], "high").detections[0]
        d_red = engine.infer([red.image], "high").detections[0].scaled(*red.scale_xy)
        a1 = agreement(d_full.filter(d_full.scores >= 0.35), d_red, iou=0.5, min_score=0.25)
        a2 = agreement(d_red.filter(d_red.scores >= 0.35), d_full, iou=0.5, min_score=0.25)
        hit_r, n_r, hit_p, n_p = hit_r + a1.matched, n_r + a1.n_ref, hit_p + a2.matched, n_p + a2.n_ref
        f, r = statistics.median(times["full"]), statistics.median(times["reduced"])
        print(f"{path.name:38s} {full.image.shape[1]}x{full.image.shape[0]} -> {red.image.shape[1]}x{red.image.shape[0]}: "
              f"decode+letterbox {f:.2f} ms full, {r:.2f} ms reduced ({f / r:.2f}x)")
    print(f"agreement reduced vs full (high): recall {hit_r}/{n_r} = {hit_r / max(n_r, 1):.3f}, "
          f"precision {hit_p}/{n_p} = {hit_p / max(n_p, 1):.3f}")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
