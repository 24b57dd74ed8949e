"""Image-to-ground homographies from surveyed point pairs (``dpa-calibrate``), ROS-free.

Points file (YAML), one entry per camera::

    version: 1                        # optional
    frame_id: map                     # optional, informative
    reference_point: [lat, lon, alt]  # degrees, degrees, m; required when a point is geodetic
    cameras:
    - topic: /rsu/cam0/image_raw/compressed
      image_size: [640, 360]          # width, height (px)
      position: [x, y, z]             # optional: the camera's ground position and height (m, world frame)
      points:                         # at least 4 (6 or more recommended), on the ground plane
      - {pixel: [u, v], ground: [x, y]}             # world metres: x east, y north
      - {pixel: [u, v], geodetic: [lat, lon]}       # or [lat, lon, alt]: converted to local ENU metres

Pixels are OpenCV pixel coordinates (the centre of the top-left pixel is (0, 0)). Geodetic points are
converted to East-North-Up metres around ``reference_point`` with ``pymap3d.geodetic2enu`` (a point
without an altitude is taken at the reference altitude); the up component is dropped (the ground
plane).

:func:`fit_homography` fits ``H`` (pixel (u, v, 1) -> ground (x, y, 1), ``H[2, 2] = 1``) with
``cv2.findHomography`` (least squares over all points; RANSAC on request); :func:`reprojection`
gives the per-point errors in pixels (ground -> pixel through ``H^-1``) and in metres (pixel ->
ground through ``H``); :func:`parameter_document` the node's parameter YAML
(``cameras.<key>.homography``, :mod:`dpa_perception.core.world_params`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from dpa_perception.core.errors import ConfigError
from dpa_perception.core.world_params import camera_key

MIN_POINTS = 4
NODE_NAME = "/**"  # every node name and namespace, like the shipped configs
_COLLINEAR_RATIO = 1e-3  # smallest / largest singular value of the centred points below this: a line


@dataclass(frozen=True)
class CameraPoints:
    """One camera's surveyed pairs, ground already in local metres."""

    topic: str
    image_size: tuple[int, int]  # width, height
    pixels: np.ndarray  # (N, 2) float64
    ground: np.ndarray  # (N, 2) float64, world metres
    position: tuple[float, float, float] | None = None  # camera's ground position + height, if surveyed
    geodetic: bool = False  # some of its points were given as latitude / longitude


@dataclass(frozen=True)
class PointsFile:
    cameras: tuple[CameraPoints, ...]
    reference_point: tuple[float, float, float] | None
    frame_id: str = "map"


@dataclass(frozen=True)
class Reprojection:
    """Per-point errors of a homography on its pairs."""

    pixel_errors: np.ndarray  # (N,) px: |H^-1 ground - pixel|
    ground_errors: np.ndarray  # (N,) m: |H pixel - ground|

    @property
    def pixel_rms(self) -> float:
        return float(np.sqrt(np.mean(self.pixel_errors**2)))

    @property
    def pixel_max(self) -> float:
        return float(self.pixel_errors.max())

    @property
    def ground_rms(self) -> float:
        return float(np.sqrt(np.mean(self.ground_errors**2)))

    @property
    def ground_max(self) -> float:
        return float(self.ground_errors.max())


# ---------------------------------------------------------------------------------------- reading


def _numbers(value: Any, n: tuple[int, ...], where: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) not in n:
        want = " or ".join(str(k) for k in n)
        raise ConfigError(f"{where}: expected a list of {want} numbers, not {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise ConfigError(f"{where}: {v!r} is not a finite number")
        out.append(float(v))
    return out


def _reference(doc: dict, where: str) -> tuple[float, float, float] | None:
    if doc.get("reference_point") is None:
        return None
    lat, lon, alt = _numbers(doc["reference_point"], (3,), f"{where}: reference_point [lat, lon, alt]")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ConfigError(f"{where}: reference_point latitude/longitude out of range ({lat}, {lon})")
    return lat, lon, alt


def geodetic_to_local(latlon: np.ndarray, reference: tuple[float, float, float]) -> np.ndarray:
    """(N, 2) east, north metres of (N, 2) [lat, lon] or (N, 3) [lat, lon, alt] around ``reference``."""
    import pymap3d

    pts = np.asarray(latlon, np.float64).reshape(len(latlon), -1)
    lat0, lon0, alt0 = reference
    alt = pts[:, 2] if pts.shape[1] > 2 else np.full(len(pts), alt0)
    e, n, _u = pymap3d.geodetic2enu(pts[:, 0], pts[:, 1], alt, lat0, lon0, alt0)
    return np.stack([np.asarray(e, np.float64), np.asarray(n, np.float64)], 1)


def _point(p: Any, where: str, reference: tuple[float, float, float] | None) -> tuple[list[float], list[float], bool]:
    if not isinstance(p, dict) or "pixel" not in p or ("ground" in p) == ("geodetic" in p):
        raise ConfigError(f"{where}: a point is a mapping with 'pixel' and one of 'ground' or 'geodetic', not {p!r}")
    pixel = _numbers(p["pixel"], (2,), f"{where}: pixel")
    if "ground" in p:
        return pixel, _numbers(p["ground"], (2,), f"{where}: ground"), False
    geo = _numbers(p["geodetic"], (2, 3), f"{where}: geodetic [lat, lon(, alt)]")
    if reference is None:
        raise ConfigError(f"{where}: a geodetic point needs the file's reference_point [lat, lon, alt]")
    if not (-90.0 <= geo[0] <= 90.0 and -180.0 <= geo[1] <= 180.0):
        raise ConfigError(f"{where}: latitude/longitude out of range ({geo[0]}, {geo[1]})")
    return pixel, [float(v) for v in geodetic_to_local(np.array([geo]), reference)[0]], True


def _camera(entry: Any, where: str, reference: tuple[float, float, float] | None) -> CameraPoints:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a camera is a mapping with topic, image_size and points, not {entry!r}")
    topic = entry.get("topic")
    if not isinstance(topic, str) or not topic.strip():
        raise ConfigError(f"{where}: 'topic' (the camera's image topic) is missing or empty")
    where = f"{where} ({topic})"
    size = _numbers(entry.get("image_size"), (2,), f"{where}: image_size [width, height]")
    if size[0] < 1 or size[1] < 1 or not all(float(v).is_integer() for v in size):
        raise ConfigError(f"{where}: image_size must be two positive integers, not {size}")
    position = entry.get("position")
    pos = tuple(_numbers(position, (3,), f"{where}: position [x, y, z]")) if position is not None else None
    points = entry.get("points")
    if not isinstance(points, list):
        raise ConfigError(f"{where}: 'points' must be a list of point pairs")
    parsed = [_point(p, f"{where}: point {i + 1}", reference) for i, p in enumerate(points)]
    pixels = np.array([p[0] for p in parsed], np.float64).reshape(-1, 2)
    ground = np.array([p[1] for p in parsed], np.float64).reshape(-1, 2)
    outside = [i + 1 for i, (u, v) in enumerate(pixels) if not (-0.5 <= u <= size[0] - 0.5 and -0.5 <= v <= size[1] - 0.5)]
    if outside:
        raise ConfigError(f"{where}: point(s) {', '.join(map(str, outside))} lie outside the {int(size[0])}x{int(size[1])} image")
    check_pairs(pixels, ground, where)
    return CameraPoints(topic, (int(size[0]), int(size[1])), pixels, ground, pos,  # type: ignore[arg-type]
                        any(p[2] for p in parsed))


def parse_points(doc: Any, where: str) -> PointsFile:
    """A points document (already parsed YAML) validated; every refusal is a one-line :class:`ConfigError`."""
    if not isinstance(doc, dict) or not isinstance(doc.get("cameras"), list) or not doc["cameras"]:
        raise ConfigError(f"{where}: not a points file (expected a mapping with a non-empty 'cameras' list)")
    if doc.get("version", 1) != 1:
        raise ConfigError(f"{where}: unsupported points file version {doc.get('version')!r} (this reads version 1)")
    reference = _reference(doc, where)
    cams = tuple(_camera(c, f"{where}: camera {i + 1}", reference) for i, c in enumerate(doc["cameras"]))
    topics = [c.topic for c in cams]
    dup = sorted({t for t in topics if topics.count(t) > 1})
    if dup:
        raise ConfigError(f"{where}: camera topic(s) listed twice: {', '.join(dup)}")
    keys = [camera_key(t) for t in topics]
    clash = sorted({k for k in keys if keys.count(k) > 1})
    if clash:
        raise ConfigError(f"{where}: camera topics share a parameter key ({', '.join(clash)})")
    return PointsFile(cams, reference, str(doc.get("frame_id", "map")))


def load_points(path: Path) -> PointsFile:
    """Read and validate a points file."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the points file ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    return parse_points(doc, str(path))


# ---------------------------------------------------------------------------------------- fitting


def _is_line(pts: np.ndarray) -> bool:
    c = pts - pts.mean(0)
    s = np.linalg.svd(c, compute_uv=False)
    return bool(s[0] <= 0 or s[-1] / s[0] < _COLLINEAR_RATIO)


def _has_collinear_triple(pts: np.ndarray) -> bool:
    """Any three of (at most a few) points on one line (relative to the spread)."""
    scale = max(float(np.ptp(pts, 0).max()), 1e-12) ** 2
    n = len(pts)
    for i in range(n):
        for j in range(i + 1, n):
            for k in range(j + 1, n):
                a, b = pts[j] - pts[i], pts[k] - pts[i]
                if abs(a[0] * b[1] - a[1] * b[0]) < _COLLINEAR_RATIO * scale:
                    return True
    return False


def check_pairs(pixels: np.ndarray, ground: np.ndarray, where: str = "points") -> None:
    """:class:`ConfigError` unless the pairs can determine a homography."""
    pixels, ground = np.asarray(pixels, np.float64), np.asarray(ground, np.float64)
    if pixels.ndim != 2 or pixels.shape[1:] != (2,) or ground.shape != pixels.shape:
        raise ConfigError(f"{where}: pixels and ground must both be (N, 2), not {pixels.shape} and {ground.shape}")
    if len(pixels) < MIN_POINTS:
        raise ConfigError(f"{where}: {len(pixels)} point pair(s); a homography needs at least {MIN_POINTS} (6+ recommended)")
    if not (np.isfinite(pixels).all() and np.isfinite(ground).all()):
        raise ConfigError(f"{where}: non-finite coordinates")
    for name, pts in (("pixel", pixels), ("ground", ground)):
        if len(np.unique(np.round(pts, 6), axis=0)) < len(pts):
            raise ConfigError(f"{where}: two points share the same {name} coordinates")
        if _is_line(pts) or (len(pts) == MIN_POINTS and _has_collinear_triple(pts)):
            raise ConfigError(f"{where}: the {name} points are (nearly) collinear; spread them over the ground "
                              f"(at least 4 points, no 3 of 4 on one line)")  # fmt: skip


def fit_homography(pixels: np.ndarray, ground: np.ndarray, *, ransac_m: float | None = None,
                   where: str = "points") -> np.ndarray:
    """3x3 ``H`` with ``H @ (u, v, 1) ~ (x, y, 1)``, normalised to ``H[2, 2] = 1``.

    Least squares over all pairs of the pixel residuals (``cv2.findHomography`` method 0 on ground ->
    pixel: normalised DLT refined by Levenberg-Marquardt, then inverted); ``ransac_m``: RANSAC with
    that ground reprojection threshold (m) instead, on pixel -> ground.
    """
    check_pairs(pixels, ground, where)
    px = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
    gnd = np.asarray(ground, np.float64).reshape(-1, 1, 2)
    # Fitted ground -> image, so that the least squares run over the pixel residuals: the surveyed
    # ground is far more precise than a clicked pixel (centimetres against ~1 px, which is metres at range).
    if ransac_m is not None:  # outliers out first (threshold in metres), then least squares on the rest
        F, mask = cv2.findHomography(px, gnd, cv2.RANSAC, float(ransac_m))
        keep = mask.reshape(-1).astype(bool) if F is not None and mask is not None else np.zeros(0, bool)
        if keep.sum() < MIN_POINTS:
            raise ConfigError(f"{where}: RANSAC kept {int(keep.sum())} of {len(px)} points within {ransac_m} m; "
                              f"at least {MIN_POINTS} are needed")  # fmt: skip
        px, gnd = px[keep], gnd[keep]
    G, _ = cv2.findHomography(gnd, px, 0)
    if G is None or not np.isfinite(G).all() or abs(np.linalg.det(G)) < 1e-300:
        raise ConfigError(f"{where}: no homography fits these points (degenerate configuration)")
    H = np.linalg.inv(G)
    if not np.isfinite(H).all() or abs(H[2, 2]) < 1e-12:
        raise ConfigError(f"{where}: no homography fits these points (degenerate configuration)")
    H = H / H[2, 2]
    if not np.isfinite(np.linalg.cond(H)) or np.linalg.cond(H) > 1e13:
        raise ConfigError(f"{where}: the fitted homography is singular (degenerate configuration)")
    return H


def apply_homography(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N, 2) images of (N, 2) points under ``H`` (NaN where a point maps to infinity)."""
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    q = np.concatenate([p, np.ones((len(p), 1))], 1) @ np.asarray(H, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        out = q[:, :2] / q[:, 2:3]
    out[~np.isfinite(out).all(1) | (np.abs(q[:, 2]) < 1e-12)] = np.nan
    return out


def reprojection(H: np.ndarray, pixels: np.ndarray, ground: np.ndarray) -> Reprojection:
    """Per-point errors of ``H`` on its pairs: pixels (through ``H^-1``) and metres (through ``H``)."""
    to_px = apply_homography(np.linalg.inv(H), ground)
    to_m = apply_homography(H, pixels)
    return Reprojection(np.linalg.norm(to_px - pixels, axis=1), np.linalg.norm(to_m - ground, axis=1))


# ---------------------------------------------------------------------------------------- output


@dataclass(frozen=True)
class CameraCalibration:
    topic: str
    homography: np.ndarray
    errors: Reprojection
    points: int
    image_size: tuple[int, int] = (0, 0)  # width, height


def calibrate(points: PointsFile, topics: Sequence[str] | None = None, *, ransac_m: float | None = None
              ) -> list[CameraCalibration]:
    """A homography per camera of the file (those of ``topics`` only, when given)."""
    known = [c.topic for c in points.cameras]
    unknown = [t for t in topics or () if t not in known]
    if unknown:
        raise ConfigError(f"camera(s) {', '.join(unknown)} not in the points file (it has {', '.join(known)})")
    out = []
    for cam in points.cameras:
        if topics and cam.topic not in topics:
            continue
        H = fit_homography(cam.pixels, cam.ground, ransac_m=ransac_m, where=cam.topic)
        out.append(CameraCalibration(cam.topic, H, reprojection(H, cam.pixels, cam.ground), len(cam.pixels),
                                     (int(cam.image_size[0]), int(cam.image_size[1]))))
    return out


def parameter_document(calibrations: Sequence[CameraCalibration], reference_point: Sequence[float] | None = None,
                       node_name: str = NODE_NAME) -> dict[str, Any]:
    """The node's ROS 2 parameter YAML: ``camera_topics``, ``cameras.<key>.homography`` and ``image_size`` per
    camera (+ ``reference_point``)."""
    cams = {camera_key(c.topic): {"homography": [float(v) for v in np.asarray(c.homography).reshape(9)],
                                  "image_size": [int(v) for v in c.image_size]}
            for c in calibrations}  # fmt: skip
    params: dict[str, Any] = {"camera_topics": [c.topic for c in calibrations], "cameras": cams}
    if reference_point is not None:
        params["reference_point"] = [float(v) for v in reference_point]
    return {node_name: {"ros__parameters": params}}


def parameter_yaml(calibrations: Sequence[CameraCalibration], reference_point: Sequence[float] | None = None,
                   node_name: str = NODE_NAME) -> str:
    """:func:`parameter_document` as YAML text, with a comment per camera (topic, points, errors)."""
    lines = ["# Image-to-ground homographies written by dpa-calibrate (pixel (u, v, 1) -> world (x, y, 1), metres)."]
    for c in calibrations:
        e = c.errors
        lines.append(f"# {camera_key(c.topic)}: {c.topic}, {c.points} points, reprojection rms {e.pixel_rms:.3f} px "
                     f"(max {e.pixel_max:.3f}), {e.ground_rms:.3f} m (max {e.ground_max:.3f})")
    doc = parameter_document(calibrations, reference_point, node_name)
    return "\n".join(lines) + "\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=400)
