"""Fit each camera's image-to-ground homography from surveyed point pairs and write the node's YAML.

    dpa-calibrate POINTS.yaml --out CAMERAS.yaml [--camera TOPIC ...] [--ransac M] [--force]

Prints, per camera, the reprojection error of the fit (pixels: ground -> image through H^-1;
metres: image -> ground through H; RMS and max) and writes the ROS 2 parameter file
(``dpa_perception: ros__parameters: cameras: <key>: homography: [...]``, plus ``reference_point``
when the points file has one: it must when points are given as latitude / longitude) for ``dpa_perception_node`` and ``dpa-replay
--params``. The points file format is in :mod:`dpa_perception.world.calibration`.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dpa_perception.core.errors import ConfigError


def make_parser() -> argparse.ArgumentParser:
    from dpa_perception.tools.cli_common import Parser

    p = Parser(prog="dpa-calibrate", description=__doc__.split("\n")[0])
    p.add_argument("points", type=Path, help="surveyed point pairs (YAML; dpa-demo-bag writes OUT_points.yaml)")
    p.add_argument("--out", type=Path, required=True, help="parameter YAML to write")
    p.add_argument("--camera", action="append", default=None, metavar="TOPIC",
                   help="calibrate only this camera topic (repeatable; default: every camera of the file)")
    p.add_argument("--ransac", type=float, default=None, metavar="M",
                   help="RANSAC with this ground reprojection threshold (m) instead of least squares over all points")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return p


def _check_out(out: Path, points: Path, force: bool) -> None:
    if str(out).strip() == "" or out.name == "":
        raise ConfigError(f"--out {str(out)!r}: give a file name")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name")
    if out.exists() and not force:
        raise ConfigError(f"--out {out} already exists (--force overwrites it)")
    if points.exists() and out.exists() and os.path.samefile(out, points):
        raise ConfigError(f"--out {out} is the points file itself")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: folder {parent} not found")


def _write(out: Path, text: str) -> None:
    """Atomic: a temporary file in the same folder, renamed over ``out``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.resolve().parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    from dpa_perception.tools.cli_common import run_cli
    from dpa_perception.world import calibration as C

    a = make_parser().parse_args(argv)

    def body() -> int:
        if a.ransac is not None and not (math.isfinite(a.ransac) and a.ransac > 0):
            raise ConfigError(f"--ransac must be a positive number of metres, not {a.ransac}")
        if a.camera is not None and not all(t.strip() for t in a.camera):
            raise ConfigError("--camera: an empty topic")
        _check_out(a.out, a.points, a.force)
        points = C.load_points(a.points)
        cals = C.calibrate(points, a.camera, ransac_m=a.ransac)
        for c in cals:
            e = c.errors
            print(f"{c.topic} ({C.camera_key(c.topic)}): {c.points} points; reprojection rms {e.pixel_rms:.3f} px, "
                  f"max {e.pixel_max:.3f} px; ground rms {e.ground_rms:.3f} m, max {e.ground_max:.3f} m")
        _write(a.out, C.parameter_yaml(cals, points.reference_point))
        print(f"wrote {a.out}")
        return 0

    return run_cli("dpa-calibrate", body)


if __name__ == "__main__":
    raise SystemExit(main())
