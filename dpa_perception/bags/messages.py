"""vision_msgs 3D messages built from :class:`~dpa_perception.world.objects.WorldObject` records (pure).

One builder for every writer of world-frame objects: the replay's ``<camera ns>/objects`` and fused
``objects`` topics and the demo bag's ``<camera ns>/ground_truth/objects`` (ground truth is a
``WorldObject`` with ``track_id`` = the true id and ``class_score`` 1).

A ``vision_msgs/Detection3D`` per object, in the world frame:

* ``bbox.center.position`` = (x, y, z): the centre of the footprint on the ground;
  ``bbox.center.orientation`` = the heading as a yaw quaternion (REP 103, CCW from +x);
  ``bbox.size`` = (length, width, height), length along the heading.
* ``id`` = ``str(track_id)``.
* ``results[0].hypothesis`` = (``str(class_id)``, ``class_score``); ``results[0].pose`` = the same
  pose with a 6x6 row-major covariance (x, y, z, roll, pitch, yaw): the 2x2 position covariance, fixed
  small variances for z, roll and pitch (objects stand on the ground plane) and ``heading_std ** 2``
  for yaw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dpa_perception.core.types import NS_PER_S
from dpa_perception.world.objects import WorldObject

Z_VARIANCE = 0.01  # m^2: objects stand on the ground plane (0.1 m standard deviation)
TILT_VARIANCE = 0.0025  # rad^2 for roll and pitch (0.05 rad)


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation by ``yaw`` about +z."""
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)


def quaternion_yaw(x: float, y: float, z: float, w: float) -> float:
    """Yaw (rotation about +z, REP 103) of a quaternion."""
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def pose_covariance(obj: WorldObject) -> np.ndarray:
    """The 36 row-major entries of the pose covariance of ``obj`` (x, y, z, roll, pitch, yaw)."""
    cov = np.zeros(36, np.float64)
    cov[0], cov[1], cov[6], cov[7] = (float(v) for v in obj.position_cov)
    cov[14] = Z_VARIANCE
    cov[21] = cov[28] = TILT_VARIANCE
    cov[35] = float(obj.heading_std) ** 2
    return cov


def header(ts: Any, stamp_ns: int, frame_id: str) -> Any:
    T = ts.types
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=int(stamp_ns) // NS_PER_S, nanosec=int(stamp_ns) % NS_PER_S),
        frame_id=frame_id,
    )


def _pose(T: Any, obj: WorldObject) -> Any:
    qx, qy, qz, qw = yaw_quaternion(obj.heading)
    return T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=float(obj.x), y=float(obj.y), z=float(obj.z)),
        orientation=T["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
    )


def detection3d(ts: Any, hdr: Any, obj: WorldObject) -> Any:
    """One ``vision_msgs/Detection3D`` of ``obj`` (see the module docstring)."""
    T = ts.types
    pose = _pose(T, obj)
    result = T["vision_msgs/msg/ObjectHypothesisWithPose"](
        hypothesis=T["vision_msgs/msg/ObjectHypothesis"](class_id=str(int(obj.class_id)), score=float(obj.class_score)),
        pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=pose_covariance(obj)),
    )
    size = T["geometry_msgs/msg/Vector3"](x=float(obj.length), y=float(obj.width), z=float(obj.height))
    return T["vision_msgs/msg/Detection3D"](
        header=hdr, results=[result], bbox=T["vision_msgs/msg/BoundingBox3D"](center=pose, size=size),
        id=str(int(obj.track_id)),
    )


def objects_message(ts: Any, stamp_ns: int, frame_id: str, objects: Sequence[WorldObject]) -> Any:
    """A ``vision_msgs/Detection3DArray`` of ``objects`` (``ts``: a typestore with vision_msgs registered)."""
    hdr = header(ts, stamp_ns, frame_id)
    return ts.types["vision_msgs/msg/Detection3DArray"](header=hdr, detections=[detection3d(ts, hdr, o) for o in objects])


def label_info_message(ts: Any, stamp_ns: int, frame_id: str, class_names: Sequence[str], threshold: float) -> Any:
    """A ``vision_msgs/LabelInfo``: class id ``i`` -> ``class_names[i]``, and the score threshold."""
    T = ts.types
    classes = [T["vision_msgs/msg/VisionClass"](class_id=i, class_name=str(n)) for i, n in enumerate(class_names)]
    return T["vision_msgs/msg/LabelInfo"](header=header(ts, stamp_ns, frame_id), class_map=classes,
                                          threshold=float(threshold))
