"""The world stage the pipeline runs after detection: ground projection + tracking of one camera frame.

Projection of a detection: its ground-contact pixel is the bottom centre of the box; the pixel
covariance is ``diag(sigma_u^2, sigma_v^2)`` with ``sigma_u = pixel_sigma_px`` and ``sigma_v`` adding
:data:`BOX_SIGMA_FRACTION` of the box height (a box's bottom edge is less sure for big boxes:
shadows, truncation), propagated to the ground by the geometry's Jacobian. The class-shape
correction (footprint centre behind the contact point, :mod:`.priors`) and its variance along the
viewing ray are added by the tracker. Points at or above the horizon, outside the camera's ROI or
beyond ``max_range_m`` are dropped and counted; detections below ``track_low_score`` are ignored.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpa_perception.core.errors import ConfigError
from dpa_perception.core.param_spec import INT
from dpa_perception.core.types import Detections
from dpa_perception.core.world_params import WORLD_PARAMS
from dpa_perception.world.geometry import CameraGeometry
from dpa_perception.world.measurements import NO_OFFSET, Measurements
from dpa_perception.world.objects import WorldObject
from dpa_perception.world.priors import PriorTable
from dpa_perception.world.tracker import Tracker, TrackerConfig

BOX_SIGMA_FRACTION = 0.02  # std of the bottom edge (px) per px of box height, added to pixel_sigma_px
DROP_REASONS = ("horizon", "roi", "range")
HIDDEN_BOTTOM_VAR = 3.0**2  # m^2 along the ray for a box whose bottom is hidden (a nearer object, the frame edge)
EDGE_PX = 2.0  # a box within this of the image's bottom edge is cut by it
HIDDEN_MARGIN = 0.1  # fraction of an occluder's box width/height at its sides and top that does not hide

_SPECS = {p.name: p for p in WORLD_PARAMS}


def _default(name: str) -> Any:
    return _SPECS[name].default


@dataclass(frozen=True)
class WorldConfig:
    """The live world parameters (names and defaults as in ``core.world_params.WORLD_PARAMS``)."""

    pixel_sigma_px: float = _default("pixel_sigma_px")
    max_range_m: float = _default("max_range_m")
    track_high_score: float = _default("track_high_score")
    track_low_score: float = _default("track_low_score")
    track_gate_m: float = _default("track_gate_m")
    track_confirm_hits: int = _default("track_confirm_hits")
    track_max_age_s: float = _default("track_max_age_s")
    track_accel_sigma: float = _default("track_accel_sigma")

    @staticmethod
    def from_values(values: Mapping[str, Any]) -> WorldConfig:
        """From parameter values by name (missing = defaults); validated."""
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(WorldConfig):
            if f.name in values:
                kw[f.name] = values[f.name]
        cfg = WorldConfig(**kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line) for a value of the wrong type, out of range, or inconsistent."""
        for f in dataclasses.fields(self):
            spec = _SPECS[f.name]
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (spec.type == INT and not isinstance(v, int)):
                raise ConfigError(f"{f.name}: expected {'an integer' if spec.type == INT else 'a number'}, got {v!r}")
            if not np.isfinite(v) or (spec.min is not None and v < spec.min) or (spec.max is not None and v > spec.max):
                raise ConfigError(f"{f.name}: {v!r} is outside {spec.range_text}")
        if self.track_low_score > self.track_high_score:
            raise ConfigError(f"track_low_score ({self.track_low_score}) must not exceed track_high_score "
                              f"({self.track_high_score})")

    def tracker(self) -> TrackerConfig:
        return TrackerConfig(self.track_high_score, self.track_low_score, self.track_gate_m,
                             int(self.track_confirm_hits), self.track_max_age_s, self.track_accel_sigma)


@dataclass
class WorldFrame:
    """The world output of one camera frame."""

    camera: str
    stamp_ns: int
    objects: list[WorldObject]  # this camera's detections of confirmed tracks (this frame's box and score)
    fused: list[WorldObject]  # every confirmed track, at stamp_ns (never predicted backwards)
    track_ids: list[int]  # per input detection, in order: its track id, 0 if none / unconfirmed / dropped
    dropped: dict[str, int] = field(default_factory=dict)  # this frame's drops by reason (DROP_REASONS)
    ms: float = 0.0  # projection + tracking wall time


@dataclass
class _CameraStats:
    frames: int = 0
    detections: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    total_ms: float = 0.0


class WorldStage:
    """Projects each camera's detections to the ground and tracks them with one shared tracker (thread-safe)."""

    def __init__(self, geometries: Mapping[str, CameraGeometry], config: WorldConfig, class_names: Sequence[str]):
        config.validate()
        self._geometries = dict(geometries)
        self._config = config
        self.tracker = Tracker(class_names, config.tracker())
        names = list(class_names)
        self._riders = (np.array([i for i, n in enumerate(names) if n == "person"], np.int64),
                        np.array([i for i, n in enumerate(names) if n in ("bicycle", "motorcycle")], np.int64))
        self._stats: dict[str, _CameraStats] = {}
        self._lock = threading.Lock()

    @property
    def config(self) -> WorldConfig:
        return self._config

    def has_camera(self, camera: str) -> bool:
        return camera in self._geometries

    def geometry(self, camera: str) -> CameraGeometry | None:
        return self._geometries.get(camera)

    def set_geometry(self, camera: str, geometry: CameraGeometry) -> None:
        """Give ``camera`` a (new) geometry: its next frames are projected with it (CameraInfo, tf2)."""
        with self._lock:
            self._geometries = {**self._geometries, camera: geometry}

    def update(self, **changes: Any) -> WorldConfig:
        """Apply live parameter changes (validated first: nothing changes on a ConfigError)."""
        names = {f.name for f in dataclasses.fields(WorldConfig)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"not a live world parameter: {', '.join(unknown)}")
        cfg = dataclasses.replace(self._config, **changes)
        cfg.validate()
        self._config = cfg
        self.tracker.set_config(cfg.tracker())
        return cfg

    def process(self, camera: str, stamp_ns: int, dets: Detections,
                image_hw: tuple[int, int] | None = None) -> WorldFrame | None:
        """Project and track one frame's detections (of an image ``image_hw`` high and wide: boxes cut by its
        edges are less sure); None for a camera without geometry."""
        geo = self._geometries.get(camera)
        if geo is None:
            return None
        t0 = time.perf_counter()
        cfg = self._config
        keep = np.flatnonzero(dets.scores >= cfg.track_low_score)
        meas, ok, dropped = _project(geo, cfg, camera, int(stamp_ns), dets, keep, self._riders, image_hw,
                                     self.tracker.priors)
        res = self.tracker.step(meas)
        track_ids = np.zeros(len(dets), np.int64)
        track_ids[keep[ok]] = res.track_ids
        ms = (time.perf_counter() - t0) * 1e3
        with self._lock:
            st = self._stats.setdefault(camera, _CameraStats())
            st.frames += 1
            st.detections += len(dets)
            st.total_ms += ms
            for k, v in dropped.items():
                st.dropped[k] += v
        return WorldFrame(camera, int(stamp_ns), res.objects, res.fused, track_ids.tolist(), dropped, ms)

    def stats(self) -> dict[str, Any]:
        """Per camera: frames, detections, drops by reason, mean ms; tracks live and confirmed; overall mean ms."""
        live, confirmed = self.tracker.counts()
        with self._lock:
            cams = {c: {"frames": s.frames, "detections": s.detections, "dropped": dict(s.dropped),
                        "mean_ms": round(s.total_ms / s.frames, 4) if s.frames else 0.0}
                    for c, s in self._stats.items()}
            frames = sum(s.frames for s in self._stats.values())
            total = sum(s.total_ms for s in self._stats.values())
        return {"cameras": cams, "tracks_live": live, "tracks_confirmed": confirmed,
                "mean_ms": round(total / frames, 4) if frames else 0.0}


def _member(values: np.ndarray, of: np.ndarray) -> np.ndarray:
    """``np.isin`` for a handful of ids (a few comparisons: far cheaper than isin's sort for small sets)."""
    out = np.zeros(len(values), bool)
    for v in of.tolist():
        out |= values == v
    return out


def rider_contact_v(boxes: np.ndarray, class_ids: np.ndarray, person_ids: np.ndarray,
                    wheeler_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ground-contact row of each box and, for a rider, the class of the vehicle it rides (else -1).

    A person box whose bottom lies within a two-wheeler's box (overlapping it over at least half of
    the person's width) is the rider of that bicycle or motorcycle: its feet are off the ground, so
    its contact row is the two-wheeler's bottom, and it shares the vehicle's footprint.
    """
    v = boxes[:, 3].copy()
    ridden = np.full(len(boxes), -1, np.int64)
    person = np.flatnonzero(_member(class_ids, person_ids))
    wheel = np.flatnonzero(_member(class_ids, wheeler_ids))
    if not len(person) or not len(wheel):
        return v, ridden
    p, w = boxes[person][:, None, :], boxes[wheel][None, :, :]
    overlap = np.minimum(p[..., 2], w[..., 2]) - np.maximum(p[..., 0], w[..., 0])
    rides = (overlap >= 0.5 * (p[..., 2] - p[..., 0])) & (p[..., 3] > w[..., 1]) & (p[..., 3] <= w[..., 3] + 2.0)
    best = np.where(rides, overlap, -np.inf).argmax(axis=1)
    has = rides.any(axis=1)
    v[person[has]] = np.maximum(v[person[has]], boxes[wheel[best[has]], 3])
    ridden[person[has]] = class_ids[wheel[best[has]]]
    return v, ridden


def hidden_bottom(boxes: np.ndarray, ridden: np.ndarray) -> np.ndarray:
    """Whether each box's bottom edge is probably hidden behind a nearer object.

    Its bottom centre lies inside another box whose bottom is lower in the image (nearer to the
    camera on flat ground): the visible bottom is then the occluder's top edge, not the ground
    contact, and the projected point lies too far. Riders (already on their vehicle's bottom) are not.
    """
    n = len(boxes)
    if n < 2:
        return np.zeros(n, bool)
    u = 0.5 * (boxes[:, 0] + boxes[:, 2])
    v = boxes[:, 3]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    m = HIDDEN_MARGIN  # a box's corners are often background: only its inner part counts as the occluder
    inside = ((u[:, None] > boxes[None, :, 0] + m * w) & (u[:, None] < boxes[None, :, 2] - m * w)
              & (v[:, None] > boxes[None, :, 1] + m * h) & (v[:, None] < boxes[None, :, 3] - 2.0))  # fmt: skip
    np.fill_diagonal(inside, False)
    return inside.any(axis=1) & (ridden < 0)


def _project(geo: CameraGeometry, cfg: WorldConfig, camera: str, stamp_ns: int, dets: Detections,
             keep: np.ndarray, riders: tuple[np.ndarray, np.ndarray] | None = None,
             image_hw: tuple[int, int] | None = None, priors: PriorTable | None = None,
             ) -> tuple[Measurements, np.ndarray, dict[str, int]]:
    """Measurements of detections ``keep``, which of them were kept (mask over ``keep``), drops by reason."""
    boxes = np.asarray(dets.boxes, np.float64)[keep].reshape(-1, 4)
    uv = np.stack([0.5 * (boxes[:, 0] + boxes[:, 2]), boxes[:, 3]], axis=1)
    ridden = np.full(len(boxes), -1, np.int64)
    if riders is not None:
        uv[:, 1], ridden = rider_contact_v(boxes, np.asarray(dets.class_ids, np.int64)[keep], *riders)
    hidden = hidden_bottom(boxes, ridden)
    if image_hw is not None:  # cut by the image's bottom edge: the ground contact is below the frame
        hidden |= boxes[:, 3] >= image_hw[0] - EDGE_PX
    xy, valid = geo.ground(uv)
    inside = geo.in_roi(uv)
    rng = np.where(valid, geo.range_m(np.where(valid[:, None], xy, 0.0)), np.inf)
    near = rng <= cfg.max_range_m
    ok = valid & inside & near
    dropped = {"horizon": int(np.count_nonzero(~valid)), "roi": int(np.count_nonzero(valid & ~inside)),
               "range": int(np.count_nonzero(valid & inside & ~near))}
    b, xy, uv = boxes[ok], xy[ok], uv[ok]
    J = geo.jacobian(uv)
    su2 = np.full(len(b), cfg.pixel_sigma_px ** 2)
    sv2 = su2 + (BOX_SIGMA_FRACTION * (b[:, 3] - b[:, 1])) ** 2
    # J diag(su2, sv2) J^T
    cov = su2[:, None, None] * (J[:, :, 0, None] * J[:, None, :, 0]) + sv2[:, None, None] * (
        J[:, :, 1, None] * J[:, None, :, 1])
    width_m = (b[:, 2] - b[:, 0]) * np.hypot(J[:, 0, 0], J[:, 1, 0])
    cls = np.asarray(dets.class_ids, np.int64)[keep][ok]
    contact_class, extra = ridden[ok], np.where(hidden[ok], HIDDEN_BOTTOM_VAR, 0.0)
    if priors is not None:
        _from_top(geo, cfg, priors, b, cls, xy, cov, extra, contact_class, hidden[ok] & (contact_class < 0))
    meas = Measurements(camera, stamp_ns, xy, cov, geo.ray_angle(xy, J), width_m,
                        np.asarray(dets.scores, np.float64)[keep][ok], cls, b, geo.ground_z, contact_class, extra)
    return meas, ok, dropped


def _from_top(geo: CameraGeometry, cfg: WorldConfig, priors: PriorTable, boxes: np.ndarray, cls: np.ndarray,
              xy: np.ndarray, cov: np.ndarray, extra: np.ndarray, contact_class: np.ndarray, sel: np.ndarray) -> None:
    """Objects ``sel`` whose ground contact is hidden, placed from the top of their box instead (in place).

    The top edge is the object's far top edge, its class's height up: the point at that height on
    the top pixel's ray (:meth:`CameraGeometry.at_height`) less the class's ``top_offset`` along the
    ray is the footprint centre. The height's spread (``|g - c| / H * sigma``: ``g`` the top ray's
    ground point, ``c`` and ``H`` the camera's ground position and height) and ``top_std`` make the
    along-ray variance. Needs the camera's height and a class with a ``top_offset``.
    """
    if geo.camera_height is None or not sel.any():
        return
    idx = np.flatnonzero(sel)
    ids = cls[idx]
    known = (ids >= 0) & (ids < len(priors.names))
    top = np.where(known[:, None], priors.top[np.where(known, ids, 0)], np.nan)
    _, dims, _, _ = priors.lookup(ids)
    use = np.isfinite(top[:, 0])
    idx, top, height = idx[use], top[use], dims[use, 2]
    uv = np.stack([0.5 * (boxes[idx, 0] + boxes[idx, 2]), boxes[idx, 1]], axis=1)
    est, valid = geo.at_height(uv, height)
    g, _ = geo.ground(uv)
    idx, est, g, uv, top, height = idx[valid], est[valid], g[valid], uv[valid], top[valid], height[valid]
    c = np.asarray(geo.origin_xy, np.float64)
    ray = (est - c) / np.maximum(np.linalg.norm(est - c, axis=1), 1e-6)[:, None]
    k = (geo.camera_height - height) / geo.camera_height
    J = geo.jacobian(uv) * k[:, None, None]
    xy[idx] = est - top[:, 0, None] * ray
    cov[idx] = cfg.pixel_sigma_px ** 2 * (J @ J.transpose(0, 2, 1))
    extra[idx] = (np.linalg.norm(g - c, axis=1) / geo.camera_height * top[:, 2]) ** 2 + top[:, 1] ** 2
    contact_class[idx] = NO_OFFSET
