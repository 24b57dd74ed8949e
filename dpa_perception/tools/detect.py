"""``dpa-detect``: run the engine on image files and print one JSON object per image."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dpa_perception.core.image_codec import read_image
from dpa_perception.core.postprocess import DecodeConfig
from dpa_perception.inference.engine import DualModeEngine
from dpa_perception.tools.cli_common import Parser, add_engine_args, engine_folder, one_line, ort_options, run_cli


def make_parser() -> argparse.ArgumentParser:
    p = Parser(prog="dpa-detect", description=__doc__)
    p.add_argument("images", nargs="+", type=Path)
    add_engine_args(p)
    p.add_argument("--mode", default="high", choices=("high", "int8"))
    p.add_argument("--score-threshold", type=float, default=0.3)
    p.add_argument("--nms-iou", type=float, default=0.45)
    p.add_argument("--class-agnostic", action="store_true", help="NMS across classes")
    return p


def _detect(engine: DualModeEngine, path: Path, a: argparse.Namespace) -> bool:
    """Print one image's JSON line; an image that cannot be read or run is one error line (False)."""
    try:
        img = read_image(path)
        res = engine.infer([img], a.mode, a.input_shape)
    except Exception as exc:  # report and go on with the other images
        print(f"dpa-detect: error: {one_line(exc) if str(path) in str(exc) else f'{path}: {one_line(exc)}'}",
              file=sys.stderr)  # fmt: skip
        return False
    print(json.dumps({
        "image": str(path), "width": img.shape[1], "height": img.shape[0], "mode": a.mode,
        "input_shape": a.input_shape, "canvas_hw": list(res.input_hw),
        "detections": res.detections[0].to_dicts(list(engine.spec.class_names)),
        "timing_ms": res.timing.as_dict(),
    }), flush=True)  # fmt: skip
    return True


def main(argv: Sequence[str] | None = None) -> int:
    a = make_parser().parse_args(argv)

    def body() -> int:
        decode = DecodeConfig(score_threshold=a.score_threshold, nms_iou=a.nms_iou, class_agnostic=a.class_agnostic)
        decode.validate()  # option errors before the engine loads
        options = ort_options(a)
        engine = DualModeEngine(engine_folder(a.engine), backend=a.backend, ort_options=options, decode=decode)
        try:
            failures = sum(not _detect(engine, path, a) for path in a.images)
        finally:
            engine.close()
        return 2 if failures else 0

    return run_cli("dpa-detect", body)


if __name__ == "__main__":
    sys.exit(main())
