"""Read camera frames from rosbag2 files (sqlite3 or mcap) with the ``rosbags`` library, without ROS."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.core.errors import BagError
from dpa_perception.core.image_codec import decode_message
from dpa_perception.core.types import NS_PER_S

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)


@dataclass
class BagImage:
    """One image message: where and when it was recorded, and its undecoded payload."""

    topic: str
    msgtype: str
    log_time_ns: int
    stamp_ns: int
    frame_id: str
    msg: Any

    def decode(self) -> np.ndarray:
        """The frame as BGR uint8 (raises ImageError for a malformed payload)."""
        return decode_message(self.msg, self.msgtype == COMPRESSED_TYPE)


def _open(paths: Sequence[Path]):  # -> rosbags AnyReader
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    for p in paths:
        if not p.exists():
            raise BagError(f"{p}: no such bag")
    try:
        # Older bags carry no message definitions: fall back to the standard ROS 2 types.
        reader = AnyReader([Path(p) for p in paths], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except Exception as exc:  # rosbags raises its own ReaderError/AnyReaderError
        raise BagError(f"{', '.join(map(str, paths))}: cannot read bag ({exc})") from exc
    return reader


def image_topics(paths: Sequence[Path]) -> dict[str, str]:
    """Image topics (topic -> message type) found in the bags."""
    reader = _open(paths)
    try:
        return {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_TYPES}
    finally:
        reader.close()


def select_topics(available: dict[str, str], wanted: Sequence[str] | None, where: str) -> list[str]:
    """Validate ``wanted`` against the bag's image topics (all of them when ``wanted`` is empty)."""
    if not available:
        raise BagError(f"{where}: no sensor_msgs/Image or CompressedImage topic in the bag")
    if not wanted:
        return sorted(available)
    unknown = [t for t in wanted if t not in available]
    if unknown:
        raise BagError(f"{where}: unknown image topic(s) {', '.join(unknown)}; the bag has {', '.join(sorted(available))}")
    return list(wanted)


def iter_images(paths: Sequence[Path], topics: Sequence[str] | None = None) -> Iterator[BagImage]:
    """Image messages of the selected topics in recorded order."""
    reader = _open(paths)
    try:
        available = {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_TYPES}
        chosen = set(select_topics(available, topics, ", ".join(map(str, paths))))
        conns = [c for c in reader.connections if c.topic in chosen]
        for conn, log_ns, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = msg.header.stamp
            yield BagImage(conn.topic, conn.msgtype, int(log_ns),
                           int(stamp.sec) * NS_PER_S + int(stamp.nanosec), msg.header.frame_id, msg)
    finally:
        reader.close()


def time_span(paths: Sequence[Path]) -> tuple[int, int]:
    """First and last recording time (ns) over the bags, from their metadata."""
    reader = _open(paths)
    try:
        return int(reader.start_time), int(reader.end_time)
    finally:
        reader.close()


def count_images(paths: Sequence[Path], topics: Sequence[str] | None = None) -> int:
    reader = _open(paths)
    try:
        return sum(c.msgcount for c in reader.connections if c.msgtype in IMAGE_TYPES and (not topics or c.topic in topics))
    finally:
        reader.close()
