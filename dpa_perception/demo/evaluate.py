"""Evaluate a demo engine folder: mAP@0.5 per weather condition for high, int8 and auto.

    dpa-eval --engine DIR [--frames 100] [--json out.json]
    dpa-eval --tracks REPLAY_DIR --bag DEMO_BAG [--points POINTS.yaml] [--max-distance 2.5] [--class-aware]
             [--json out.json]

The second form scores a replay's world tracks (``REPLAY_DIR/tracks.jsonl``) against the demo bag's
3D ground truth: MOTA, IDF1, ID switches, position and velocity errors (:mod:`.track_eval`).

Refuses an engine folder not built from the demo detector, and never writes into the engine folder.

Frames are rendered by :mod:`dpa_perception.demo.scene` from scene seeds in a range the trainer
never uses (``EVAL_SEED_BASE``), the same scenes under each condition (clear, fog, rain, night).
``auto`` is the precision governor's visibility rule applied per frame: the frame's
:class:`~dpa_perception.core.visibility.VisibilityEstimator` degradation against the governor's
``enter_high_threshold`` (high at or above it, INT8 below; no latency pressure, no hysteresis,
since the frames are independent).  Ground truth and detections are compared in the detector's
class space (0..5 = person, bicycle, car, motorcycle, bus, truck).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dpa_perception.core.types import Detections

EVAL_SEED_BASE = 2_000_000_000
CONDITIONS = ("clear", "fog", "rain", "night")
MODES = ("high", "int8", "auto")


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    a = (box[2:] - box[:2]).prod()
    b = (boxes[:, 2:] - boxes[:, :2]).prod(1)
    return inter / np.maximum(a + b - inter, 1e-9)


def mean_ap(dets: Sequence[Detections], gts: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int,
            iou_thr: float = 0.5) -> dict:
    """Mean over classes present in the ground truth of the all-point interpolated AP (VOC 2010+ / COCO style).

    ``gts``: per frame (boxes xyxy, class ids).  Greedy matching by score, each ground truth
    matched at most once at IoU >= ``iou_thr``.
    """
    aps: dict[int, float] = {}
    for c in range(num_classes):
        n_gt = sum(int((g[1] == c).sum()) for g in gts)
        if n_gt == 0:
            continue
        scores, tps = [], []
        for d, (gb, gc) in zip(dets, gts):
            m = d.class_ids == c
            db, ds = d.boxes[m], d.scores[m]
            g = gb[gc == c]
            used = np.zeros(len(g), bool)
            for k in np.argsort(-ds, kind="stable"):
                tp = False
                if len(g):
                    ious = _iou(db[k], g)
                    ious[used] = -1
                    j = int(ious.argmax())
                    if ious[j] >= iou_thr:
                        used[j] = True
                        tp = True
                scores.append(float(ds[k]))
                tps.append(tp)
        if not scores:
            aps[c] = 0.0
            continue
        order = np.argsort(-np.asarray(scores), kind="stable")
        hits = np.asarray(tps, np.float64)[order]
        ctp, cfp = np.cumsum(hits), np.cumsum(1 - hits)
        recall = ctp / n_gt
        precision = ctp / np.maximum(ctp + cfp, 1e-9)
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        i = np.nonzero(mrec[1:] != mrec[:-1])[0]
        aps[c] = float(((mrec[i + 1] - mrec[i]) * mpre[i + 1]).sum())
    return {"map": float(np.mean(list(aps.values()))) if aps else 0.0, "per_class": aps}


def eval_frames(n: int, condition: str, strength: float | None = None):
    """``n`` evaluation frames of ``condition``: (images, ground truth in demo class space)."""
    from dpa_perception.demo.scene import COCO_TO_DEMO, Scene

    rng = np.random.default_rng(12345)
    strengths = {"clear": 0.0, "fog": 0.7, "rain": 0.7, "night": 0.85}
    images, gts = [], []
    for i in range(n):
        seed = EVAL_SEED_BASE + i
        t = float(rng.uniform(0, 60))
        scene = Scene(seed, density=float(rng.uniform(0.6, 1.4)))
        img, lab = scene.frame(t, condition, strengths[condition] if strength is None else strength)
        images.append(img)
        gts.append((lab.boxes.copy(), np.array([COCO_TO_DEMO[int(c)] for c in lab.class_ids], np.int64)))
    return images, gts


def evaluate(engine_dir: Path, frames: int = 100, score_threshold: float = 0.05, log=None) -> dict:
    from dpa_perception.core.governor import GovernorConfig
    from dpa_perception.core.postprocess import DecodeConfig
    from dpa_perception.core.visibility import VisibilityEstimator
    from dpa_perception.inference.engine import DualModeEngine

    engine = DualModeEngine(engine_dir, decode=DecodeConfig(score_threshold=score_threshold, nms_iou=0.5))
    num_classes = engine.spec.num_classes
    vis = VisibilityEstimator()
    enter = GovernorConfig().enter_high_threshold
    result: dict = {"engine": str(engine_dir), "frames_per_condition": frames, "score_threshold": score_threshold,
                    "enter_high_threshold": enter, "map50": {}, "high_fraction_in_auto": {}, "per_class": {}}
    try:
        for cond in CONDITIONS:
            t0 = time.time()
            images, gts = eval_frames(frames, cond)
            dets: dict[str, list[Detections]] = {m: [] for m in ("high", "int8")}
            for img in images:
                for m in dets:
                    dets[m].append(engine.infer([img], m).detections[0])  # type: ignore[arg-type]
            use_high = [vis.estimate(img).degradation >= enter for img in images]
            dets["auto"] = [dets["high"][i] if h else dets["int8"][i] for i, h in enumerate(use_high)]
            result["map50"][cond] = {}
            result["per_class"][cond] = {}
            for m in MODES:
                r = mean_ap(dets[m], gts, num_classes)
                result["map50"][cond][m] = round(r["map"], 4)
                result["per_class"][cond][m] = {engine.spec.class_name(c): round(v, 4) for c, v in r["per_class"].items()}
            result["high_fraction_in_auto"][cond] = round(float(np.mean(use_high)), 3)
            if log:
                log(f"{cond}: {result['map50'][cond]} (auto used high on "
                    f"{result['high_fraction_in_auto'][cond]:.0%} of frames, {time.time() - t0:.0f} s)")
    finally:
        engine.close()
    return result


def markdown_table(result: dict) -> str:
    lines = ["| precision | " + " | ".join(CONDITIONS) + " |", "|---|" + "---|" * len(CONDITIONS)]
    for m in MODES:
        lines.append(f"| {m} | " + " | ".join(f"{result['map50'][c][m]:.3f}" for c in CONDITIONS) + " |")
    lines.append("| auto: share of frames on high | " + " | ".join(
        f"{result['high_fraction_in_auto'][c]:.0%}" for c in CONDITIONS) + " |")
    return "\n".join(lines)


MAX_FRAMES = 10_000  # per condition


def check_demo_engine(engine_dir: Path) -> None:
    """:class:`ConfigError` (one line) unless ``engine_dir`` was built from the demo detector (the
    shipped one or one retrained by :mod:`dpa_perception.demo.train`: a YOLOX with the demo classes).
    Other engines would be scored against the renderer's labels in the wrong class space."""
    from dpa_perception.core.errors import ConfigError
    from dpa_perception.core.manifest import Manifest
    from dpa_perception.demo.scene import DEMO_CLASSES

    model = Manifest.load(engine_dir, verify=False).model
    if model.spec.family != "yolox" or tuple(model.spec.class_names) != DEMO_CLASSES:
        names = ", ".join(model.spec.class_names[:4]) + (", ..." if len(model.spec.class_names) > 4 else "")
        raise ConfigError(f"--engine {engine_dir} was not built from the demo detector (its model "
                          f"{model.source or '?'}: {model.family}, {model.num_classes} classes: {names}); dpa-eval "
                          f"scores only the demo detector's classes ({', '.join(DEMO_CLASSES)})")  # fmt: skip


def _check_json(a: argparse.Namespace) -> None:
    from dpa_perception.core.errors import ConfigError

    if a.json is not None:
        out = a.json.resolve()
        if out.is_dir():
            raise ConfigError(f"--json {a.json} is a folder; give a file name")
        if not out.parent.is_dir():
            raise ConfigError(f"--json {a.json}: folder {out.parent} not found")
        if a.engine is not None and a.engine.resolve() in (out, *out.parents):
            raise ConfigError(f"--json {a.json} is inside the engine folder; dpa-eval never writes there")


TRACK_FLAGS = (("bag", "--bag"), ("points", "--points"), ("max_distance", "--max-distance"), ("class_aware", "--class-aware"))
MAP_FLAGS = (("frames", "--frames"), ("score_threshold", "--score-threshold"))


def _check_mode(a: argparse.Namespace) -> None:
    """Exactly one of --engine (mAP) and --tracks (tracking), each with its own options only."""
    from dpa_perception.core.errors import ConfigError

    if (a.engine is None) == (a.tracks is None):
        raise ConfigError("give either --engine (detection mAP) or --tracks with --bag (tracking), not both or neither")
    other = TRACK_FLAGS if a.engine is not None else MAP_FLAGS
    stray = [flag for dest, flag in other if getattr(a, dest) not in (None, False)]
    if stray:
        raise ConfigError(f"{', '.join(stray)} only with {'--tracks' if a.engine is not None else '--engine'}")


def _check_track_args(a: argparse.Namespace) -> None:
    import math

    from dpa_perception.core.errors import ConfigError

    if a.bag is None:
        raise ConfigError("--tracks needs --bag (the demo bag the replay ran on)")
    if a.max_distance is not None and not (math.isfinite(a.max_distance) and 0 < a.max_distance <= 100):
        raise ConfigError(f"--max-distance must be a number of metres within (0, 100], not {a.max_distance}")
    if a.points is not None and not a.points.is_file():
        raise ConfigError(f"--points {a.points}: no such file")
    _check_json(a)


def _check_args(a: argparse.Namespace) -> None:
    """Option errors before anything renders; the results never go into the engine folder."""
    from dpa_perception.core.postprocess import DecodeConfig
    from dpa_perception.tools.cli_common import engine_folder, int_in

    frames = 100 if a.frames is None else a.frames
    int_in(frames, "--frames", 1, MAX_FRAMES)
    DecodeConfig(score_threshold=0.05 if a.score_threshold is None else a.score_threshold).validate()
    engine_folder(a.engine)
    _check_json(a)
    check_demo_engine(a.engine)


def make_parser() -> argparse.ArgumentParser:
    from dpa_perception.tools.cli_common import Parser

    p = Parser(prog="dpa-eval", description=__doc__.split("\n")[0])
    p.add_argument("--engine", type=Path, default=None, help="engine folder built by dpa-build from the demo model")
    p.add_argument("--frames", type=int, default=None, help=f"frames per condition (1 to {MAX_FRAMES}; default 100)")
    p.add_argument("--score-threshold", type=float, default=None, help="detection score threshold (default 0.05)")
    p.add_argument("--tracks", type=Path, default=None,
                   help="dpa-replay output folder with tracks.jsonl: score tracking instead of detection")
    p.add_argument("--bag", type=Path, default=None, help="with --tracks: the demo bag the replay ran on")
    p.add_argument("--points", type=Path, default=None,
                   help="with --tracks: surveyed points file with the camera positions (default: BAG_points.yaml)")
    p.add_argument("--max-distance", type=float, default=None,
                   help="with --tracks: largest ground distance (m) of a match (default 2.5)")
    p.add_argument("--class-aware", action="store_true", help="with --tracks: match only objects of the same class")
    p.add_argument("--json", type=Path, default=None,
                   help="also write the results (per-class AP too) to this file, outside the engine folder")
    return p


def _track_body(a: argparse.Namespace, log) -> int:
    from dpa_perception.demo import track_eval

    _check_track_args(a)
    res = track_eval.evaluate_replay(a.tracks, a.bag, a.points, track_eval.MAX_DISTANCE_M if a.max_distance is None
                                     else a.max_distance, a.class_aware)  # fmt: skip
    print(track_eval.markdown_table(res))
    if a.json is not None:
        a.json.write_text(json.dumps(res, indent=1))
        log(f"wrote {a.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from dpa_perception.tools.cli_common import run_cli

    a = make_parser().parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def body() -> int:
        _check_mode(a)
        if a.tracks is not None:
            return _track_body(a, log)
        _check_args(a)
        res = evaluate(a.engine, 100 if a.frames is None else a.frames,
                       0.05 if a.score_threshold is None else a.score_threshold, log)
        print(markdown_table(res))
        if a.json is not None:
            a.json.write_text(json.dumps(res, indent=1))
            log(f"wrote {a.json}")
        return 0

    return run_cli("dpa-eval", body)


if __name__ == "__main__":
    raise SystemExit(main())
