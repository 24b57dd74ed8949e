"""Read camera frames from rosbag2 files (sqlite3 or mcap) with the ``rosbags`` library, without ROS.

Every bag is opened with a reader of its own (``rosbags``' AnyReader takes one rosbag2 only: two
bags with different type definitions in one reader end in a KeyError), so bags of different message
types, or one topic recorded as Image in one bag and CompressedImage in another, read side by side.
A message that does not deserialise is yielded with ``error`` set (and no payload) instead of
raising; a bag that stops reading part-way raises :class:`BagError` naming the bag.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.core.errors import BagError, ImageError
from dpa_perception.core.image_codec import decode_message
from dpa_perception.core.types import NS_PER_S

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)


@dataclass
class BagImage:
    """One image message: where and when it was recorded, and its undecoded payload.

    ``error``: why the message could not be deserialised (``msg`` is then None, ``stamp_ns`` the
    log time and ``frame_id`` empty).
    """

    topic: str
    msgtype: str
    log_time_ns: int
    stamp_ns: int
    frame_id: str
    msg: Any
    error: str = ""
    bag: int = 0  # index of the bag in the paths given

    def decode(self) -> np.ndarray:
        """The frame as BGR uint8 (raises ImageError for a malformed payload or message)."""
        if self.error:
            raise ImageError(self.error)
        return decode_message(self.msg, self.msgtype == COMPRESSED_TYPE)


def open_bag(path: Path):  # -> an opened rosbags AnyReader
    """One rosbag2 folder, opened; every failure is a one-line :class:`BagError`."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag")
    if not path.is_dir():
        raise BagError(f"{path}: not a rosbag2 folder (give the folder that holds metadata.yaml)")
    try:
        # Older bags carry no message definitions: fall back to the standard ROS 2 types.
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except Exception as exc:  # rosbags raises its own ReaderError/AnyReaderError, yaml and OS errors
        raise BagError(f"{path}: cannot read bag ({_one_line(exc)})") from exc
    return reader


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def topic_types(paths: Sequence[Path]) -> dict[str, set[str]]:
    """Image topics found in the bags, each with the message types it was recorded as."""
    out: dict[str, set[str]] = {}
    for p in paths:
        reader = open_bag(p)
        try:
            for c in reader.connections:
                if c.msgtype in IMAGE_TYPES:
                    out.setdefault(c.topic, set()).add(c.msgtype)
        finally:
            reader.close()
    return out


def image_topics(paths: Sequence[Path]) -> dict[str, str]:
    """Image topics (topic -> message type; types joined by ``|`` when bags disagree) found in the bags."""
    return {t: "|".join(sorted(types)) for t, types in topic_types(paths).items()}


def select_topics(available: dict[str, Any], wanted: Sequence[str] | None, where: str) -> list[str]:
    """Validate ``wanted`` against the bag's image topics (all of them when ``wanted`` is empty)."""
    if not available:
        raise BagError(f"{where}: no sensor_msgs/Image or CompressedImage topic in the bag")
    if not wanted:
        return sorted(available)
    unknown = [t for t in wanted if t not in available]
    if unknown:
        raise BagError(f"{where}: unknown image topic(s) {', '.join(unknown)}; the bag has {', '.join(sorted(available))}")
    return list(wanted)


def _image(reader: Any, conn: Any, log_ns: int, raw: bytes, index: int) -> BagImage:
    try:
        msg = reader.deserialize(raw, conn.msgtype)
        stamp = msg.header.stamp
        return BagImage(conn.topic, conn.msgtype, int(log_ns), int(stamp.sec) * NS_PER_S + int(stamp.nanosec),
                        str(msg.header.frame_id), msg, bag=index)  # fmt: skip
    except Exception as exc:  # a corrupt CDR payload raises whatever the deserialiser trips on
        return BagImage(conn.topic, conn.msgtype, int(log_ns), int(log_ns), "", None,
                        f"corrupt {conn.msgtype} message ({type(exc).__name__}: {_one_line(exc)})", index)  # fmt: skip


def iter_bag(path: Path, topics: Sequence[str] | None = None, index: int = 0) -> Iterator[BagImage]:
    """Image messages of one bag (selected topics; all image topics when None) in recorded order."""
    reader = open_bag(path)
    read = 0
    try:
        conns = [c for c in reader.connections if c.msgtype in IMAGE_TYPES and (topics is None or c.topic in topics)]
        if not conns:
            return
        messages = reader.messages(connections=conns)
        while True:
            try:
                item = next(messages, None)
            except Exception as exc:  # a damaged chunk or page: the rest of this bag is unreadable
                raise BagError(f"{path}: read error after {read} image messages ({_one_line(exc)})") from exc
            if item is None:
                return
            conn, log_ns, raw = item
            read += 1
            yield _image(reader, conn, log_ns, raw, index)
    finally:
        reader.close()


def iter_images(paths: Sequence[Path], topics: Sequence[str] | None = None) -> Iterator[BagImage]:
    """Image messages of the selected topics of all bags, merged in recorded (log time) order."""
    chosen = select_topics(topic_types(paths), topics, ", ".join(map(str, paths)))
    streams = [iter_bag(p, chosen, i) for i, p in enumerate(paths)]
    yield from heapq.merge(*streams, key=lambda m: m.log_time_ns)


def log_times(path: Path, topics: Sequence[str] | None = None) -> tuple[np.ndarray, str]:
    """Log times (ns, int64, recorded order) of one bag's selected image messages, and the read error
    that stopped the scan ("" when the whole bag was read)."""
    times: list[int] = []
    reader = open_bag(path)
    try:
        conns = [c for c in reader.connections if c.msgtype in IMAGE_TYPES and (topics is None or c.topic in topics)]
        if conns:
            for _, log_ns, _ in reader.messages(connections=conns):
                times.append(int(log_ns))
    except Exception as exc:
        return np.array(times, np.int64), f"{path}: read error after {len(times)} image messages ({_one_line(exc)})"
    finally:
        reader.close()
    return np.array(times, np.int64), ""


def metadata_span(path: Path) -> tuple[int, int]:
    """Start and end recording time (ns) that the bag's metadata declares."""
    reader = open_bag(path)
    try:
        return int(reader.start_time), int(reader.end_time)
    except Exception as exc:
        raise BagError(f"{path}: no start/end time in the metadata ({_one_line(exc)})") from exc
    finally:
        reader.close()


def time_span(paths: Sequence[Path]) -> tuple[int, int]:
    """First and last recording time (ns) over the bags, from their metadata."""
    spans = [metadata_span(p) for p in paths]
    return min(s for s, _ in spans), max(e for _, e in spans)


def count_images(paths: Sequence[Path], topics: Sequence[str] | None = None) -> int:
    """Image messages of the selected topics according to the bags' metadata."""
    total = 0
    for p in paths:
        reader = open_bag(p)
        try:
            total += sum(c.msgcount for c in reader.connections
                         if c.msgtype in IMAGE_TYPES and (not topics or c.topic in topics))  # fmt: skip
        finally:
            reader.close()
    return total
