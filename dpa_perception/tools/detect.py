"""``dpa-detect``: run the engine on image files and print one JSON object per image.

``--annotate DIR`` also writes each image with its detections drawn (boxes, class names, scores and a
header line with the mode) as ``DIR/<image stem>.jpg``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dpa_perception.core.image_codec import read_image
from dpa_perception.core.postprocess import DecodeConfig
from dpa_perception.core.types import Detections
from dpa_perception.inference.engine import DualModeEngine
from dpa_perception.replay.video import output_folder, write_annotated_image
from dpa_perception.tools.cli_common import Parser, add_engine_args, engine_folder, folder_arg, one_line, ort_options, run_cli


def make_parser() -> argparse.ArgumentParser:
    p = Parser(prog="dpa-detect", description=__doc__)
    p.add_argument("images", nargs="+", type=Path)
    add_engine_args(p)
    p.add_argument("--mode", default="high", choices=("high", "int8"))
    p.add_argument("--score-threshold", type=float, default=0.3)
    p.add_argument("--nms-iou", type=float, default=0.45)
    p.add_argument("--class-agnostic", action="store_true", help="NMS across classes")
    p.add_argument(
        "--annotate",
        type=folder_arg,
        metavar="DIR",
        help="also write <image stem>.jpg with the detections drawn into DIR (created if missing)",
    )
    return p


def _annotation_names(images: Sequence[Path]) -> list[str]:
    """The annotated file's stem per input image: the image's stem, numbered where two share one."""
    seen: dict[str, int] = {}
    out = []
    for path in images:
        n = seen[path.stem] = seen.get(path.stem, 0) + 1
        out.append(path.stem if n == 1 else f"{path.stem}_{n}")
    return out


def _write_annotation(
    engine: DualModeEngine, img: np.ndarray, dets: Detections, name: str, a: argparse.Namespace, path: Path
) -> Path:
    """Write ``img`` annotated as ``--annotate``/``name``.jpg; its path."""
    header = f"{path.name}  {a.mode}  {len(dets)} detections  score >= {a.score_threshold:g}"
    return write_annotated_image(a.annotate, name, img, dets, engine.spec.class_names, header=header)


def _detect(engine: DualModeEngine, path: Path, a: argparse.Namespace, annotate_as: str | None = None) -> bool:
    """Print one image's JSON line; an image that cannot be read or run is one error line (False)."""
    try:
        img = read_image(path)
        res = engine.infer([img], a.mode, a.input_shape)
        extra = {}
        if annotate_as is not None:
            extra["annotated"] = str(_write_annotation(engine, img, res.detections[0], annotate_as, a, path))
    except Exception as exc:  # report and go on with the other images
        print(f"dpa-detect: error: {one_line(exc) if str(path) in str(exc) else f'{path}: {one_line(exc)}'}",
              file=sys.stderr)  # fmt: skip
        return False
    print(json.dumps({
        "image": str(path), "width": img.shape[1], "height": img.shape[0], "mode": a.mode,
        "input_shape": a.input_shape, "canvas_hw": list(res.input_hw),
        "detections": res.detections[0].to_dicts(list(engine.spec.class_names)),
        "timing_ms": res.timing.as_dict(), **extra,
    }), flush=True)  # fmt: skip
    return True


def main(argv: Sequence[str] | None = None) -> int:
    a = make_parser().parse_args(argv)

    def body() -> int:
        decode = DecodeConfig(score_threshold=a.score_threshold, nms_iou=a.nms_iou, class_agnostic=a.class_agnostic)
        decode.validate()  # option errors before the engine loads
        options = ort_options(a)
        names: list[str | None] = [None] * len(a.images)
        if a.annotate is not None:
            output_folder(a.annotate)  # refused (an existing file) before the engine loads
            names = list(_annotation_names(a.images))
        engine = DualModeEngine(engine_folder(a.engine), backend=a.backend, ort_options=options, decode=decode,
                                modes=(a.mode,))  # one mode is run: only its variant loads (a faster start)
        try:
            failures = sum(not _detect(engine, path, a, name) for path, name in zip(a.images, names))
        finally:
            engine.close()
        return 2 if failures else 0

    return run_cli("dpa-detect", body)


if __name__ == "__main__":
    sys.exit(main())
