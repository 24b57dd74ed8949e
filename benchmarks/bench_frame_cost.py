#!/usr/bin/env python3
"""Non-inference CPU per frame: decode + visibility + pre-processing + post-processing, amortised.

    python benchmarks/bench_frame_cost.py ENGINE_DIR [--shape rect] [--batch 1,4] [--rounds 5]
        [--visibility-every-n N]

Feeds the shared roadside bag's real 960x540 JPEG messages through the very path the node and the
replay use (``Pipeline.submit_message``: reduced-scale decode, visibility every N frames on the
decoding thread) and the engine (letterbox, inference, decode), one thread, and prints per frame the
median of each stage over ``--rounds`` passes, the non-inference sum (the issue-14 target is
<= 1.2 ms) and inference for comparison. The CPU and its features are printed first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dpa_perception.bags.reader import COMPRESSED_TYPE, iter_images
from dpa_perception.core import node_params as P
from dpa_perception.core.machine import cpu_summary
from dpa_perception.core.pipeline import Pipeline, PipelineConfig
from dpa_perception.core.preprocess import resized_hw
from dpa_perception.inference.engine import DualModeEngine
from dpa_perception.runtime import input_shape_of, runtime_config

BAG = REPO.parent / "shared" / "testdata" / "bags" / "uadetrac_roadside_compressed_sqlite3"
STAGES = ("decode", "visibility", "preprocess", "postprocess")


def one_pass(pipeline: Pipeline, engine: DualModeEngine, msgs: list, batch: int, shape: str, mode: str) -> dict:
    """Per-frame milliseconds of each stage over one pass of ``msgs`` in batches of ``batch``."""
    sums = dict.fromkeys((*STAGES, "inference"), 0.0)
    for i in range(0, len(msgs) - batch + 1, batch):
        frames = []
        for k, m in enumerate(msgs[i : i + batch]):
            cam = f"cam{k}"
            rejected = pipeline.submit_message(cam, m.msg, True, m.stamp_ns)
            assert rejected is None, rejected.reason
            with pipeline._lock:
                p = pipeline._cams[cam].pending
                pipeline._cams[cam].pending = None
            assert p is not None
            sums["decode"] += p.decode_ms
            sums["visibility"] += p.vis_ms
            frames.append(p.frame)
        t = engine.infer(frames, mode, shape).timing
        sums["preprocess"] += t.preprocess_ms
        sums["inference"] += t.inference_ms
        sums["postprocess"] += t.postprocess_ms
    n = (len(msgs) // batch) * batch
    return {k: v / n for k, v in sums.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("engine", type=Path)
    ap.add_argument("--shape", default="auto", choices=("auto", "square", "rect"))
    ap.add_argument("--batch", default="1,4")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mode", default="int8", choices=("int8", "high"))
    ap.add_argument("--visibility-every-n", type=int, default=P.default("visibility_every_n"))
    a = ap.parse_args()
    print(cpu_summary())
    cfg = runtime_config({"engine_dir": str(a.engine), "input_shape": a.shape})
    engine = DualModeEngine(a.engine)
    shape, why = input_shape_of(engine, cfg)
    spec = engine.spec
    msgs = [m for m in iter_images([BAG]) if m.msgtype == COMPRESSED_TYPE]
    h, w = msgs[0].decode().shape[:2]
    print(f"{len(msgs)} real {w}x{h} JPEG frames, input shape {shape} ({why}), visibility every "
          f"{a.visibility_every_n} frames, mode {a.mode}, 1 thread, median of {a.rounds} passes")
    print(f"{'batch':>5} " + " ".join(f"{s:>11}" for s in STAGES) + "  non-inference   inference  (ms per frame)")
    for batch in (int(b) for b in a.batch.split(",")):
        pipeline = Pipeline(engine, PipelineConfig(visibility_every_n=a.visibility_every_n, input_shape=shape),
                            decode_target=lambda hh, ww: resized_hw((hh, ww), spec))  # fmt: skip
        one_pass(pipeline, engine, msgs, batch, shape, a.mode)  # warm-up
        runs = [one_pass(pipeline, engine, msgs, batch, shape, a.mode) for _ in range(a.rounds)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        other = sum(med[s] for s in STAGES)
        print(f"{batch:>5} " + " ".join(f"{med[s]:>11.3f}" for s in STAGES) + f"  {other:>13.3f}  {med['inference']:>10.3f}")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
