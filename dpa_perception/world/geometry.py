"""Per-camera ground geometry: image pixels to the world ground plane (metres), vectorised.

A camera is either an image-to-ground homography ``H`` (pixel ``(u, v, 1)`` -> ground
``(x, y, 1)``, up to scale) or a pinhole: intrinsics ``K``, distortion (OpenCV order), the pose of
the optical frame (z forward, x right, y down) in the world frame and the height ``ground_z`` of
the ground plane. Without distortion the pinhole is turned into its equivalent homography.

Range (``max_range_m``, the ray direction of the contact correction) is measured from
:attr:`CameraGeometry.origin_xy`: the camera's ground position when a pose is known. For a
homography alone that position is recovered when the image size is given (a pinhole with square
pixels, no skew and the principal point at the image centre is fitted to ``H``); otherwise it is
the world origin (the RSU reference point, where the cameras are mounted) and the viewing-ray
direction is taken from the image column through the point instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from dpa_perception.core.errors import ConfigError
from dpa_perception.core.world_params import CAMERA_FIELDS, camera_param

_FIELD_DEFAULTS = {f.name: f.default for f in CAMERA_FIELDS}
_DIST_LENGTHS = (0, 4, 5, 8, 12, 14)
_FD_STEP_PX = 0.5  # finite-difference step of the Jacobian with distortion
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10)


def _matrix(values: Any, what: str) -> np.ndarray:
    m = np.asarray(values, np.float64)
    if m.size != 9:
        raise ConfigError(f"{what}: expected 9 values (3x3 row-major), got {m.size}")
    m = m.reshape(3, 3)
    if not np.all(np.isfinite(m)):
        raise ConfigError(f"{what}: values must be finite")
    if np.linalg.cond(m) > 1e12:
        raise ConfigError(f"{what}: matrix is singular")
    return m


def _roi(roi: Any) -> np.ndarray:
    if roi is None:
        return np.zeros((0, 2), np.float64)
    r = np.asarray(roi, np.float64).ravel()
    if r.size == 0:
        return np.zeros((0, 2), np.float64)
    if r.size % 2 or r.size < 6:
        raise ConfigError(f"roi: expected an even number (>= 6) of values x0, y0, x1, y1, ..., got {r.size}")
    if not np.all(np.isfinite(r)):
        raise ConfigError("roi: values must be finite")
    return r.reshape(-1, 2)


def _undistort(uv: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Normalised image coordinates (N, 2) of distorted pixels (N, 2), iterated to 1e-10."""
    src = uv.reshape(-1, 1, 2)
    it = getattr(cv2, "undistortPointsIter", None)  # OpenCV 4.x names the overload with criteria so
    if it is not None:
        return it(src, K, dist, None, None, _UNDISTORT_CRITERIA).reshape(-1, 2)
    return cv2.undistortPoints(src, K, dist, None, None, None, _UNDISTORT_CRITERIA).reshape(-1, 2)


def _quat_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _orient(H: np.ndarray, image_size: tuple[int, int] | None) -> np.ndarray:
    """``H`` scaled so that the third coordinate is positive on the visible ground.

    With the image size: positive at the bottom-centre pixel. Without: positive below the
    horizon line (``h32 > 0``, an upright camera), or, when the horizon is more than 10^4 px away
    (a camera looking almost straight down), positive at pixel (0, 0).
    """
    H = H / np.linalg.norm(H)
    if image_size is not None:
        w = H[2] @ np.array([image_size[0] / 2.0, image_size[1] - 1.0, 1.0])
        sign = 1.0 if w >= 0 else -1.0
    elif abs(H[2, 1]) * 1e4 >= abs(H[2, 2]):
        sign = 1.0 if H[2, 1] > 0 else -1.0
    else:
        sign = 1.0 if H[2, 2] > 0 else -1.0
    return H * sign


def _pinhole_origin(H: np.ndarray, cx: float, cy: float) -> tuple[float, float, float] | None:
    """Position (x, y, height above the ground) of the camera behind ``H``, fitting a pinhole (square pixels,
    no skew, principal point cx, cy)."""
    G = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]]) @ np.linalg.inv(H)
    (a1, a2, _), (b1, b2, _), (c1, c2, _) = G
    # r1 . r2 = 0 and |r1| = |r2| with r_i = (a_i / f, b_i / f, c_i): linear in k = 1 / f^2.
    A = np.array([a1 * a2 + b1 * b2, a1 * a1 + b1 * b1 - a2 * a2 - b2 * b2])
    B = np.array([-c1 * c2, c2 * c2 - c1 * c1])
    if float(A @ A) < 1e-30:
        return None
    k = float(A @ B) / float(A @ A)
    if not k > 0:
        return None
    f = 1.0 / math.sqrt(k)
    M = np.diag([1.0 / f, 1.0 / f, 1.0]) @ G
    lam = 0.5 * (np.linalg.norm(M[:, 0]) + np.linalg.norm(M[:, 1]))
    u, _, vt = np.linalg.svd(M[:, :2] / lam, full_matrices=False)
    r12 = u @ vt  # nearest orthonormal pair
    R = np.column_stack([r12, np.cross(r12[:, 0], r12[:, 1])])  # world -> camera
    C = -R.T @ (M[:, 2] / lam)
    if C[2] < 0:  # the other sign of the scale: the camera is above the ground
        R = np.column_stack([-r12, np.cross(r12[:, 0], r12[:, 1])])
        C = -R.T @ (-M[:, 2] / lam)
    return (float(C[0]), float(C[1]), float(C[2])) if np.all(np.isfinite(C)) else None


@dataclass(frozen=True, eq=False)
class CameraGeometry:
    """The ground geometry of one camera. Build with :meth:`from_homography` or :meth:`from_intrinsics`."""

    homography: np.ndarray | None  # (3, 3) pixel -> ground, w > 0 on the visible ground; None with distortion
    camera_matrix: np.ndarray | None  # (3, 3) K of a pinhole camera
    distortion: np.ndarray  # OpenCV coefficients (empty: none)
    rotation: np.ndarray | None  # (3, 3) optical frame -> world (columns: the camera axes in the world)
    position: np.ndarray | None  # (3,) camera centre in the world frame
    ground_z: float
    roi: np.ndarray  # (M, 2) image polygon (px); empty = the whole image
    origin_xy: tuple[float, float]  # ground point that range is measured from
    origin_is_camera: bool  # True: origin_xy is the camera's ground position (viewing rays exact)
    camera_height: float | None = None  # metres above the ground plane, when known (pose, or the pinhole fit)

    @staticmethod
    def from_homography(H: Any, roi: Any = None, *, image_size: tuple[int, int] | None = None,
                        origin_xy: tuple[float, float] | None = None) -> CameraGeometry:
        """From a 3x3 pixel -> ground homography; ``image_size`` (width, height) lets the camera's position be recovered."""
        Hm = _orient(_matrix(H, "homography"), image_size)
        origin, is_cam, height = (0.0, 0.0), False, None
        rec = _pinhole_origin(Hm, image_size[0] / 2.0, image_size[1] / 2.0) if image_size is not None else None
        if origin_xy is not None:
            origin, is_cam = (float(origin_xy[0]), float(origin_xy[1])), True
        elif rec is not None:
            origin, is_cam = (rec[0], rec[1]), True
        if rec is not None and rec[2] > 0:
            height = rec[2]
        return CameraGeometry(Hm, None, np.zeros(0), None, None, 0.0, _roi(roi), origin, is_cam, height)

    @staticmethod
    def from_intrinsics(K: Any, dist: Any, pose: Any, ground_z: float = 0.0, roi: Any = None) -> CameraGeometry:
        """From intrinsics, distortion, the optical frame's pose ``x, y, z, qx, qy, qz, qw`` and the ground height."""
        Km = _matrix(K, "camera_matrix")
        if Km[0, 0] <= 0 or Km[1, 1] <= 0 or abs(Km[2, 2]) < 1e-12:
            raise ConfigError("camera_matrix: focal lengths must be positive and k[8] non-zero")
        Km = Km / Km[2, 2]
        d = np.asarray(dist if dist is not None else [], np.float64).ravel()
        if d.size not in _DIST_LENGTHS or not np.all(np.isfinite(d)):
            raise ConfigError(f"distortion: expected 0, 4, 5, 8, 12 or 14 finite values, got {d.size}")
        p = np.asarray(pose, np.float64).ravel()
        if p.size != 7 or not np.all(np.isfinite(p)):
            raise ConfigError(f"pose: expected 7 finite values x, y, z, qx, qy, qz, qw, got {p.size}")
        if np.linalg.norm(p[3:]) < 1e-9:
            raise ConfigError("pose: the quaternion qx, qy, qz, qw is zero")
        if not math.isfinite(float(ground_z)):
            raise ConfigError("ground_z: must be finite")
        R, C = _quat_matrix(p[3:]), p[:3].copy()
        if abs(C[2] - ground_z) < 1e-6:
            raise ConfigError("pose: the camera lies on the ground plane (z == ground_z)")
        H = None
        if not np.any(d):
            G = Km @ R.T @ np.column_stack([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], np.array([0.0, 0.0, ground_z]) - C])
            H = np.linalg.inv(G)  # third coordinate = 1 / depth: positive in front of the camera
            H = H / np.linalg.norm(H)
        height = float(C[2] - ground_z) if C[2] > ground_z else None
        return CameraGeometry(H, Km, d, R, C, float(ground_z), _roi(roi), (float(C[0]), float(C[1])), True, height)

    # ---------------------------------------------------------------- projection

    def ground(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground points (N, 2) of pixels (N, 2) and a validity mask (False at/above the horizon, behind the camera)."""
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        if self.homography is not None:
            H = self.homography
            p = uv @ H[:, :2].T + H[:, 2]
            w = p[:, 2]
            valid = w > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                xy = p[:, :2] / np.where(valid, w, np.nan)[:, None]
        else:
            assert self.camera_matrix is not None and self.rotation is not None and self.position is not None
            if len(uv) == 0:
                return np.zeros((0, 2)), np.zeros(0, bool)
            n = _undistort(uv, self.camera_matrix, self.distortion)
            d = np.column_stack([n, np.ones(len(n))]) @ self.rotation.T
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (self.ground_z - self.position[2]) / d[:, 2]
            valid = np.isfinite(t) & (t > 0)
            xy = self.position[:2] + np.where(valid, t, np.nan)[:, None] * d[:, :2]
        valid &= np.all(np.isfinite(xy), axis=1)
        return xy, valid

    def at_height(self, uv: np.ndarray, height: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground positions (N, 2) below points ``height`` (N,) metres up seen at pixels ``uv``, and validity.

        The viewing ray through a pixel meets the ground at ``g``; the point on it ``height`` up lies
        above ``c + (g - c) (H - height) / H`` (``c``: the camera's ground position, ``H``: its
        height). Needs the camera's position (all False without it).
        """
        xy, valid = self.ground(uv)
        if self.camera_height is None or not self.origin_is_camera:
            return xy, np.zeros(len(xy), bool)
        c = np.asarray(self.origin_xy, np.float64)
        k = (self.camera_height - np.asarray(height, np.float64)) / self.camera_height
        return c + (xy - c) * k[:, None], valid & (k > 0)

    def jacobian(self, uv: np.ndarray) -> np.ndarray:
        """d(x, y)/d(u, v) at each pixel (N, 2, 2): analytic for a homography, central differences with distortion."""
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        if self.homography is not None:
            H = self.homography
            p = uv @ H[:, :2].T + H[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                xy = p[:, :2] / p[:, 2:3]
                return (H[None, :2, :2] - xy[:, :, None] * H[None, 2:3, :2]) / p[:, 2, None, None]
        h = _FD_STEP_PX
        steps = np.array([[h, 0.0], [-h, 0.0], [0.0, h], [0.0, -h]])
        xy, _ = self.ground((uv[None, :, :] + steps[:, None, :]).reshape(-1, 2))
        xy = xy.reshape(4, -1, 2)
        return np.stack([(xy[0] - xy[1]) / (2 * h), (xy[2] - xy[3]) / (2 * h)], axis=2)

    def in_roi(self, uv: np.ndarray) -> np.ndarray:
        """Which pixels (N, 2) lie inside the ROI polygon (even-odd rule); all of them without an ROI."""
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        if len(self.roi) == 0:
            return np.ones(len(uv), bool)
        x, y = uv[:, 0:1], uv[:, 1:2]
        x1, y1 = self.roi[:, 0], self.roi[:, 1]
        x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        return (np.count_nonzero(crosses & (x < xint), axis=1) % 2) == 1

    def range_m(self, xy: np.ndarray) -> np.ndarray:
        """Ground distance (N,) of points from :attr:`origin_xy`."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        return np.hypot(xy[:, 0] - self.origin_xy[0], xy[:, 1] - self.origin_xy[1])

    def ray_angle(self, xy: np.ndarray, jac: np.ndarray) -> np.ndarray:
        """Direction (rad, CCW from +x) of the viewing ray on the ground at each point, away from the camera.

        From the camera's ground position when known, else along the image column (``-d(x, y)/dv``).
        """
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        if self.origin_is_camera:
            return np.arctan2(xy[:, 1] - self.origin_xy[1], xy[:, 0] - self.origin_xy[0])
        return np.arctan2(-jac[:, 1, 1], -jac[:, 0, 1])

    def fov_polygon(self, width: int, height: int, max_range: float, columns: int = 33, rows: int = 160) -> np.ndarray:
        """World polygon (M, 2) of the ground visible in a ``width`` x ``height`` image within ``max_range``.

        Per sampled image column: its nearest and farthest visible ground point in range; the
        polygon runs along the near points left to right and back along the far points.
        """
        us = np.linspace(0.0, float(width), columns)
        vs = np.linspace(float(height), 0.0, rows)
        grid = np.stack(np.meshgrid(us, vs), axis=-1).reshape(-1, 2)  # (rows * columns, 2), bottom row first
        xy, valid = self.ground(grid)
        valid &= self.range_m(np.nan_to_num(xy, nan=np.inf)) <= max_range
        xy, valid = xy.reshape(rows, columns, 2), valid.reshape(rows, columns)
        cols = np.flatnonzero(valid.any(axis=0))
        if len(cols) == 0:
            return np.zeros((0, 2))
        near = valid[:, cols].argmax(axis=0)
        far = rows - 1 - valid[::-1, cols].argmax(axis=0)
        return np.concatenate([xy[near, cols], xy[far, cols][::-1]])


def _values_array(values: Mapping[str, Any], name: str, field: str) -> np.ndarray:
    v = values.get(name, _FIELD_DEFAULTS[field])
    try:
        a = np.asarray([] if v is None else v, np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}: not a list of numbers ({e})") from None
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{name}: values must be finite")
    return a


def geometry_from_values(values: Mapping[str, Any], camera_topic: str,
                         image_size: tuple[int, int] | None = None) -> CameraGeometry | None:
    """The geometry of ``camera_topic`` from parameter values (``cameras.<key>.<field>``; missing = defaults).

    A homography takes precedence; else camera_matrix + pose (+ distortion, ground_z). None when
    the camera has neither (2D output only). Raises :class:`ConfigError` naming the parameter.
    """
    names = {f: camera_param(camera_topic, f) for f in ("homography", "camera_matrix", "distortion", "pose", "roi")}
    arrays = {f: _values_array(values, n, f) for f, n in names.items()}
    gz_name = camera_param(camera_topic, "ground_z")
    try:
        ground_z = float(values.get(gz_name, _FIELD_DEFAULTS["ground_z"]))
    except (TypeError, ValueError):
        raise ConfigError(f"{gz_name}: not a number") from None
    size_name = camera_param(camera_topic, "image_size")
    given = values.get(size_name) or []
    if given and (len(given) != 2 or any(int(v) < 1 for v in given)):
        raise ConfigError(f"{size_name}: expected [width, height] in pixels, got {list(given)}")
    if image_size is None and given:
        image_size = (int(given[0]), int(given[1]))
    try:
        roi = arrays["roi"]
        if arrays["homography"].size:
            return CameraGeometry.from_homography(arrays["homography"], roi, image_size=image_size)
        if arrays["camera_matrix"].size and arrays["pose"].size:
            return CameraGeometry.from_intrinsics(arrays["camera_matrix"], arrays["distortion"], arrays["pose"],
                                                  ground_z, roi)
    except ConfigError as e:
        field = str(e).split(":", 1)[0]
        name = names.get(field, gz_name if field == "ground_z" else camera_param(camera_topic, field))
        raise ConfigError(f"{name}{str(e)[len(field):]}") from None
    return None


def geometries_from_values(values: Mapping[str, Any], camera_topics: Sequence[str]) -> dict[str, CameraGeometry]:
    """The geometries of the cameras that have one, by topic."""
    out = {}
    for t in camera_topics:
        g = geometry_from_values(values, t)
        if g is not None:
            out[t] = g
    return out
