"""The world-frame object record: what a track is at one instant, in metres, for every output.

Frame conventions: the world frame (``world_frame``, ``map`` by default) is a local East-North-Up
frame in metres from the RSU's reference point; ``x`` east, ``y`` north, ``z`` up. ``heading`` is
the direction of motion in radians, counter-clockwise from ``+x`` (ROS REP 103 yaw). The position
is the centre of the object's footprint on the ground.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class WorldObject:
    """One tracked (or, with ``track_id`` 0, untracked) object on the ground at ``stamp_ns``."""

    track_id: int  # >= 1 for tracks; 0 = a projected detection not (yet) confirmed as a track
    stamp_ns: int  # the capture stamp of the frame this state is for
    camera: str  # the camera topic whose detection updated it last
    class_id: int  # the detector's class id
    class_name: str
    class_score: float  # confidence of the class hypothesis, 0..1
    x: float  # metres, world frame
    y: float
    z: float
    position_cov: tuple[float, float, float, float]  # 2x2 row-major (xx, xy, yx, yy), m^2
    vx: float  # m/s, world frame
    vy: float
    velocity_cov: tuple[float, float, float, float]  # 2x2 row-major, (m/s)^2
    heading: float  # rad, CCW from +x; the direction of motion (or of the class prior when still)
    heading_std: float  # rad
    length: float  # metres (class prior, adjusted by the box width)
    width: float
    height: float
    age_s: float  # since the track was born
    hits: int  # detections associated so far
    confirmed: bool
    existence: float  # 0..1, how sure the tracker is that the object exists
    box: tuple[float, float, float, float] | None = None  # this frame's image box (x1, y1, x2, y2), if any
    detection_score: float = 0.0  # this frame's detection score (0 when predicted only)

    @property
    def speed(self) -> float:
        return math.hypot(self.vx, self.vy)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tracks.jsonl); lists instead of tuples."""
        d = asdict(self)
        for k in ("position_cov", "velocity_cov", "box"):
            if d[k] is not None:
                d[k] = [round(float(v), 6) for v in d[k]]
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> WorldObject:
        kw = dict(d)
        for k in ("position_cov", "velocity_cov", "box"):
            if kw.get(k) is not None:
                kw[k] = tuple(float(v) for v in kw[k])
        return WorldObject(**kw)
