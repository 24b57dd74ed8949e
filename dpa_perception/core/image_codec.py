"""Decode camera payloads (sensor_msgs Image / CompressedImage fields) to BGR uint8 with numpy and OpenCV.

Used by the ROS node and the rosbag replay alike, without cv_bridge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dpa_perception.core.errors import ImageError

# encoding -> (channels, OpenCV conversion to BGR or None)
RAW_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "bgr8": (3, None),
    "rgb8": (3, cv2.COLOR_RGB2BGR),
    "mono8": (1, cv2.COLOR_GRAY2BGR),
    "bgra8": (4, cv2.COLOR_BGRA2BGR),
    "rgba8": (4, cv2.COLOR_RGBA2BGR),
}


def decode_message(msg: Any, compressed: bool) -> np.ndarray:
    """A sensor_msgs/CompressedImage (``compressed``) or sensor_msgs/Image message as BGR uint8.

    Duck-typed on the message fields, so rclpy messages and rosbags-deserialised ones take the same
    path (the node and the replay both call this). Raises :class:`ImageError` for a bad payload.
    """
    if compressed:
        return decode_compressed(msg.format, msg.data)
    return decode_raw(msg.encoding, int(msg.height), int(msg.width), int(msg.step), msg.data)


def decode_raw(encoding: str, height: int, width: int, step: int, data: bytes | np.ndarray) -> np.ndarray:
    """A sensor_msgs/Image payload as a BGR uint8 array (row padding in ``step`` respected)."""
    enc = encoding.lower()
    if enc not in RAW_ENCODINGS:
        raise ImageError(f"unsupported image encoding {encoding!r} (supported: {', '.join(RAW_ENCODINGS)})")
    channels, conversion = RAW_ENCODINGS[enc]
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image ({width}x{height})")
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than width*channels = {row_bytes} for {encoding}")
    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    if buf.size < step * (height - 1) + row_bytes:
        raise ImageError(f"image data has {buf.size} bytes, {step * height} expected for {height} rows of {step}")
    rows = np.lib.stride_tricks.as_strided(buf, (height, row_bytes), (step, 1))
    img = rows.reshape(height, width, channels) if channels > 1 else rows.reshape(height, width)
    if conversion is None:
        return np.ascontiguousarray(img)
    return cv2.cvtColor(np.ascontiguousarray(img), conversion)


def decode_compressed(fmt: str, data: bytes | np.ndarray) -> np.ndarray:
    """A sensor_msgs/CompressedImage payload (JPEG or PNG) as a BGR uint8 array."""
    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    if buf.size == 0:
        raise ImageError("compressed image is empty")
    kind = fmt.lower()
    if kind and not any(k in kind for k in ("jpeg", "jpg", "png")):
        raise ImageError(f"unsupported compressed format {fmt!r} (JPEG and PNG are)")
    if buf[:2].tobytes() == b"\xff\xd8" and buf[-2:].tobytes() != b"\xff\xd9":
        raise ImageError("truncated JPEG (no end-of-image marker)")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"cannot decode {fmt or 'compressed'} image of {buf.size} bytes")
    return img


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_image(path: Path) -> np.ndarray:
    """Read an image file as BGR uint8 or raise :class:`ImageError` naming the file."""
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    data = np.fromfile(str(path), np.uint8)
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"{path}: not a decodable image")
    return img
