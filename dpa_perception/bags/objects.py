"""Read ``vision_msgs/Detection3DArray`` topics of a rosbag2 back into plain records (no ROS).

The message definitions come from the bag itself (mcap and recent sqlite3 bags embed them), else
from ``rosbags``' ROS 2 Humble store with the vision_msgs 4.x definitions of
:data:`dpa_perception.bags.writer.VISION_MSGS` added.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpa_perception.bags.messages import quaternion_yaw
from dpa_perception.bags.reader import _one_line, open_bag
from dpa_perception.core.errors import BagError
from dpa_perception.core.types import NS_PER_S

OBJECTS_TYPE = "vision_msgs/msg/Detection3DArray"


@dataclass(frozen=True)
class BagObject:
    """One Detection3D: its id, first hypothesis, footprint centre, yaw and size (length, width, height)."""

    id: str
    class_id: str
    score: float
    x: float
    y: float
    z: float
    yaw: float
    size: tuple[float, float, float]


@dataclass(frozen=True)
class ObjectsMessage:
    """One Detection3DArray message."""

    topic: str
    stamp_ns: int
    log_time_ns: int
    frame_id: str
    objects: tuple[BagObject, ...]


def _object(det: Any) -> BagObject:
    p, q, s = det.bbox.center.position, det.bbox.center.orientation, det.bbox.size
    hyp = det.results[0].hypothesis if len(det.results) else None
    return BagObject(
        id=str(det.id), class_id=str(hyp.class_id) if hyp is not None else "",
        score=float(hyp.score) if hyp is not None else 0.0, x=float(p.x), y=float(p.y), z=float(p.z),
        yaw=quaternion_yaw(float(q.x), float(q.y), float(q.z), float(q.w)), size=(float(s.x), float(s.y), float(s.z)),
    )


def objects_topics(path: Path) -> list[str]:
    """The Detection3DArray topics of a bag."""
    reader = open_bag(path)
    try:
        return sorted({c.topic for c in reader.connections if c.msgtype == OBJECTS_TYPE})
    finally:
        reader.close()


def iter_objects(path: Path, topics: Sequence[str] | None = None) -> Iterator[ObjectsMessage]:
    """Detection3DArray messages of the selected topics (all such topics when None) in recorded order.

    A message that does not deserialise, or a bag that stops reading, raises a one-line :class:`BagError`.
    """
    reader = open_bag(path)
    try:
        conns = [c for c in reader.connections if c.msgtype == OBJECTS_TYPE and (topics is None or c.topic in topics)]
        if not conns:
            return
        try:
            for conn, log_ns, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                stamp = msg.header.stamp
                yield ObjectsMessage(conn.topic, int(stamp.sec) * NS_PER_S + int(stamp.nanosec), int(log_ns),
                                     str(msg.header.frame_id), tuple(_object(d) for d in msg.detections))
        except BagError:
            raise
        except Exception as exc:  # a damaged chunk or a corrupt CDR payload
            raise BagError(f"{path}: cannot read the {OBJECTS_TYPE} messages ({_one_line(exc)})") from exc
    finally:
        reader.close()


def read_objects(path: Path, topics: Sequence[str] | None = None) -> dict[str, list[ObjectsMessage]]:
    """All Detection3DArray messages of a bag, per topic, in recorded order."""
    out: dict[str, list[ObjectsMessage]] = {}
    for m in iter_objects(path, topics):
        out.setdefault(m.topic, []).append(m)
    return out


def read_strings(path: Path, topic: str) -> list[tuple[int, str]]:
    """(log time ns, data) of the ``std_msgs/String`` messages on ``topic`` (the demo's ``/rsu/weather``)."""
    reader = open_bag(path)
    try:
        conns = [c for c in reader.connections if c.topic == topic and c.msgtype == "std_msgs/msg/String"]
        if not conns:  # (an empty selection would read every topic)
            return []
        try:
            return [(int(ns), str(reader.deserialize(raw, c.msgtype).data)) for c, ns, raw in reader.messages(connections=conns)]
        except Exception as exc:
            raise BagError(f"{path}: cannot read {topic} ({_one_line(exc)})") from exc
    finally:
        reader.close()
