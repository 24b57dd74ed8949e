"""Write detections and diagnostics as a rosbag2 (mcap) with ``rosbags``, message definitions embedded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.bags.messages import label_info_message, objects_message
from dpa_perception.core.types import NS_PER_S, Detections
from dpa_perception.world.objects import WorldObject

# vision_msgs 4.x (Humble, Jazzy) interface definitions, registered so the bag is self-describing.
VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
    "vision_msgs/msg/BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "vision_msgs/msg/Detection3D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox3D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection3DArray": "std_msgs/Header header\nvision_msgs/Detection3D[] detections\n",
    "vision_msgs/msg/VisionClass": "uint16 class_id\nstring class_name\n",
    "vision_msgs/msg/LabelInfo": "std_msgs/Header header\nvision_msgs/VisionClass[] class_map\nfloat32 threshold\n",
}
DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"
OBJECTS_TYPE = "vision_msgs/msg/Detection3DArray"
LABEL_INFO_TYPE = "vision_msgs/msg/LabelInfo"
DIAGNOSTICS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"


def typestore():  # -> rosbags Typestore with vision_msgs registered
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    types: dict[str, Any] = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    ts.register(types)
    return ts


class DetectionBagWriter:
    """One Detection2DArray per processed frame on each camera's detections topic, plus /diagnostics."""

    def __init__(self, path: Path):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.ts = typestore()
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.connections: dict[str, Any] = {}
        self.count = 0

    def _conn(self, topic: str, msgtype: str) -> Any:
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.ts)
        return self.connections[topic]

    def _header(self, stamp_ns: int, frame_id: str) -> Any:
        T = self.ts.types
        return T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // NS_PER_S, nanosec=stamp_ns % NS_PER_S),
            frame_id=frame_id,
        )

    def write_detections(self, topic: str, log_ns: int, stamp_ns: int, frame_id: str, dets: Detections,
                         track_ids: Sequence[int] | np.ndarray | None = None) -> None:
        """One Detection2DArray; ``track_ids``: per detection, the world track id put in ``Detection2D.id``
        (0: left empty), as the node does."""
        T = self.ts.types
        header = self._header(stamp_ns, frame_id)
        pose_cov = self.ts.types["geometry_msgs/msg/PoseWithCovariance"]
        pose = T["geometry_msgs/msg/Pose"]
        zero_pose = pose_cov(
            pose=pose(position=T["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                      orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.zeros(36, np.float64),
        )
        items = []
        for i, (box, score, cid) in enumerate(zip(dets.boxes, dets.scores, dets.class_ids)):
            tid = int(track_ids[i]) if track_ids is not None and i < len(track_ids) else 0
            x1, y1, x2, y2 = (float(v) for v in box)
            items.append(T["vision_msgs/msg/Detection2D"](
                header=header,
                results=[T["vision_msgs/msg/ObjectHypothesisWithPose"](
                    hypothesis=T["vision_msgs/msg/ObjectHypothesis"](class_id=str(int(cid)), score=float(score)),
                    pose=zero_pose)],
                bbox=T["vision_msgs/msg/BoundingBox2D"](
                    center=T["vision_msgs/msg/Pose2D"](position=T["vision_msgs/msg/Point2D"](x=(x1 + x2) / 2, y=(y1 + y2) / 2),
                                                       theta=0.0),
                    size_x=x2 - x1, size_y=y2 - y1),
                id=str(tid) if tid > 0 else "",
            ))
        msg = T[DETECTIONS_TYPE](header=header, detections=items)
        self.writer.write(self._conn(topic, DETECTIONS_TYPE), log_ns, self.ts.serialize_cdr(msg, DETECTIONS_TYPE))
        self.count += 1

    def write_objects(self, topic: str, log_ns: int, stamp_ns: int, frame_id: str,
                      objects: Sequence[WorldObject]) -> None:
        """One ``Detection3DArray`` of world-frame objects (see :func:`~.messages.objects_message`)."""
        msg = objects_message(self.ts, stamp_ns, frame_id, objects)
        self.writer.write(self._conn(topic, OBJECTS_TYPE), log_ns, self.ts.serialize_cdr(msg, OBJECTS_TYPE))
        self.count += 1

    def write_label_info(self, topic: str, log_ns: int, class_names: Sequence[str], threshold: float) -> None:
        """A ``LabelInfo`` (class id -> name, score threshold), as vision_msgs' REP says, once per topic."""
        msg = label_info_message(self.ts, log_ns, "", class_names, threshold)
        self.writer.write(self._conn(topic, LABEL_INFO_TYPE), log_ns, self.ts.serialize_cdr(msg, LABEL_INFO_TYPE))

    def write_diagnostics(self, log_ns: int, statuses: Sequence[Any]) -> None:
        """``statuses``: records with name, level (0-3), message, hardware_id and (key, value) pairs."""
        T = self.ts.types
        st = [
            T["diagnostic_msgs/msg/DiagnosticStatus"](
                level=int(s.level), name=s.name, message=s.message, hardware_id=s.hardware_id,
                values=[T["diagnostic_msgs/msg/KeyValue"](key=k, value=str(v)) for k, v in s.values],
            )
            for s in statuses
        ]
        msg = T[DIAGNOSTICS_TYPE](header=self._header(log_ns, ""), status=st)
        self.writer.write(self._conn("/diagnostics", DIAGNOSTICS_TYPE), log_ns, self.ts.serialize_cdr(msg, DIAGNOSTICS_TYPE))

    def close(self) -> None:
        self.writer.close()
