"""Small rosbag2 folders for the replay fault tests, written with rosbags (ROS 2 Humble types)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
COMPRESSED = "sensor_msgs/msg/CompressedImage"
IMAGE = "sensor_msgs/msg/Image"
JPEG_IMAGE = "uadetrac_MVI_20011_img00001.jpg"


def _ts():  # -> rosbags Typestore
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def header(stamp_ns: int, frame_id: str = "cam") -> Any:
    T = _ts().types
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // NS, nanosec=stamp_ns % NS),
                                    frame_id=frame_id)  # fmt: skip


def jpeg_msg(stamp_ns: int, data: bytes) -> Any:
    return _ts().types[COMPRESSED](header=header(stamp_ns), format="jpeg", data=np.frombuffer(data, np.uint8))


def raw_msg(stamp_ns: int, img: np.ndarray, encoding: str = "bgr8") -> Any:
    h, w = img.shape[:2]
    step = img.strides[0]
    return _ts().types[IMAGE](header=header(stamp_ns), height=h, width=w, encoding=encoding, is_bigendian=0,
                              step=step, data=np.ascontiguousarray(img).view(np.uint8).ravel())  # fmt: skip


def write(path: Path, items: Sequence[tuple[str, str, int, Any]], mcap: bool = True) -> Path:
    """A bag of ``(topic, msgtype, log_ns, message or raw CDR bytes)``."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = _ts()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if mcap else StoragePlugin.SQLITE3) as w:
        conns: dict[tuple[str, str], Any] = {}
        for topic, msgtype, t, msg in items:
            if (topic, msgtype) not in conns:
                conns[topic, msgtype] = w.add_connection(topic, msgtype, typestore=ts)
            raw = msg if isinstance(msg, bytes) else ts.serialize_cdr(msg, msgtype)
            w.write(conns[topic, msgtype], t, raw)
    return path


def jpeg_bag(path: Path, jpeg: bytes, topic: str = "/cam/image_raw/compressed", n: int = 10, hz: float = 10.0,
             t0: int = T0, mcap: bool = True) -> Path:
    period = int(NS / hz)
    return write(path, [(topic, COMPRESSED, t0 + i * period, jpeg_msg(t0 + i * period, jpeg)) for i in range(n)], mcap)


def set_metadata_start(bag: Path, start_ns: int) -> None:
    """Edit metadata.yaml's starting_time (the messages keep their times)."""
    meta = bag / "metadata.yaml"
    doc = yaml.safe_load(meta.read_text())
    info = doc["rosbag2_bagfile_information"]
    info["starting_time"]["nanoseconds_since_epoch"] = start_ns
    for f in info.get("files") or []:
        f["starting_time"]["nanoseconds_since_epoch"] = start_ns
    meta.write_text(yaml.safe_dump(doc))
