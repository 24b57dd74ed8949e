"""Decode camera payloads (sensor_msgs Image / CompressedImage fields) to BGR uint8 with numpy and OpenCV.

Used by the ROS node and the rosbag replay alike, without cv_bridge.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import simplejpeg

from dpa_perception.core import node_params as P
from dpa_perception.core.errors import ImageError

# encoding -> (channels, OpenCV conversion to BGR or None)
RAW_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "bgr8": (3, None),
    "rgb8": (3, cv2.COLOR_RGB2BGR),
    "mono8": (1, cv2.COLOR_GRAY2BGR),
    "bgra8": (4, cv2.COLOR_BGRA2BGR),
    "rgba8": (4, cv2.COLOR_RGBA2BGR),
}


@dataclass(frozen=True)
class FrameLimits:
    """What a frame may be before it is decoded (node parameters ``max_frame_*``, ``min_frame_side``)."""

    max_width: int = P.default("max_frame_width")
    max_height: int = P.default("max_frame_height")
    max_pixels: int = P.default("max_frame_pixels")
    max_compressed_bytes: int = P.default("max_compressed_bytes")
    min_side: int = P.default("min_frame_side")

    def check(self, width: int, height: int) -> None:
        """Refuse a frame of ``width`` x ``height`` outside the limits (ImageError naming the limit)."""
        if width > self.max_width or height > self.max_height:
            raise ImageError(f"frame {width}x{height} exceeds the limit {self.max_width}x{self.max_height}")
        if width * height > self.max_pixels:
            raise ImageError(f"frame {width}x{height} has {width * height} pixels, over the limit {self.max_pixels}")
        if min(width, height) < self.min_side:
            raise ImageError(f"frame {width}x{height} is narrower than {self.min_side} px (min_frame_side)")


DEFAULT_LIMITS = FrameLimits()
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# (height, width) of a frame -> the smallest (height, width) the detector needs of it (its letterbox size)
Target = Callable[[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Decoded:
    """A decoded frame and the size of the original: smaller when a JPEG was decoded at reduced scale."""

    image: np.ndarray
    original_hw: tuple[int, int]

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Original pixels per decoded pixel (x, y): detections on ``image`` times this are in the original."""
        return self.original_hw[1] / self.image.shape[1], self.original_hw[0] / self.image.shape[0]


def decode_frame(msg: Any, compressed: bool, limits: FrameLimits = DEFAULT_LIMITS,
                 target: Target | None = None) -> Decoded:
    """:func:`decode_message`, and with ``target`` a JPEG is decoded at the largest libjpeg-turbo
    reduction of 1/2, 1/4 or 1/8 that still covers the target size (no CPU spent on pixels the
    letterbox would throw away)."""
    if not compressed:
        img = decode_message(msg, compressed, limits)
        return Decoded(img, (img.shape[0], img.shape[1]))
    return _decode_compressed(msg.format, msg.data, limits, target)


def decode_message(msg: Any, compressed: bool, limits: FrameLimits = DEFAULT_LIMITS) -> np.ndarray:
    """A sensor_msgs/CompressedImage (``compressed``) or sensor_msgs/Image message as BGR uint8.

    Duck-typed on the message fields, so rclpy messages and rosbags-deserialised ones take the same
    path (the node and the replay both call this). Raises :class:`ImageError` for a bad payload or
    one outside ``limits`` (checked before any pixel is decoded).
    """
    if compressed:
        return decode_compressed(msg.format, msg.data, limits)
    return decode_raw(msg.encoding, int(msg.height), int(msg.width), int(msg.step), msg.data, limits)


def decode_raw(encoding: str, height: int, width: int, step: int, data: bytes | np.ndarray,
               limits: FrameLimits = DEFAULT_LIMITS) -> np.ndarray:
    """A sensor_msgs/Image payload as a BGR uint8 array (row padding in ``step`` respected)."""
    enc = encoding.lower()
    if enc not in RAW_ENCODINGS:
        raise ImageError(f"unsupported image encoding {encoding!r} (supported: {', '.join(RAW_ENCODINGS)})")
    channels, conversion = RAW_ENCODINGS[enc]
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image ({width}x{height})")
    limits.check(width, height)
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


def decode_compressed(fmt: str, data: bytes | np.ndarray, limits: FrameLimits = DEFAULT_LIMITS) -> np.ndarray:
    """A sensor_msgs/CompressedImage payload (JPEG or PNG) as a BGR uint8 array.

    The codec comes from the magic bytes (``fmt`` is only a hint: a format naming another codec is
    refused); the header is read first and the size checked against ``limits`` before decoding.
    JPEG is decoded strictly by libjpeg-turbo (simplejpeg): a truncated or corrupt scan is refused
    whatever bytes follow it, trailing bytes after a complete image are ignored.
    """
    return _decode_compressed(fmt, data, limits).image


def _decode_compressed(fmt: str, data: bytes | np.ndarray, limits: FrameLimits, target: Target | None = None) -> Decoded:
    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    if buf.size == 0:
        raise ImageError("compressed image is empty")
    if buf.size > limits.max_compressed_bytes:
        raise ImageError(f"compressed image of {buf.size} bytes exceeds the limit {limits.max_compressed_bytes}")
    kind = fmt.lower()
    if kind and not any(k in kind for k in ("jpeg", "jpg", "png")):
        raise ImageError(f"unsupported compressed format {fmt!r} (JPEG and PNG are)")
    head = buf[:8].tobytes()
    if head.startswith(JPEG_MAGIC):
        return _decode_jpeg(buf, limits, target)
    if head.startswith(PNG_MAGIC):
        img = _decode_png(buf, limits)
        return Decoded(img, (img.shape[0], img.shape[1]))
    raise ImageError(f"not a JPEG or PNG payload (magic bytes {head[:4].hex()}; format says {fmt!r})")


def _decode_jpeg(buf: np.ndarray, limits: FrameLimits, target: Target | None = None) -> Decoded:
    data = buf.tobytes()
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:
        raise ImageError(f"corrupt JPEG header ({exc})") from exc
    limits.check(int(width), int(height))
    min_h, min_w = _reduction(int(height), int(width), target)
    try:
        img = simplejpeg.decode_jpeg(data, colorspace="BGR", strict=True, min_height=min_h, min_width=min_w)
        return Decoded(np.asarray(img), (int(height), int(width)))
    except ValueError as exc:
        what = "truncated JPEG" if "premature end" in str(exc).lower() else "corrupt JPEG"
        raise ImageError(f"{what} ({exc})") from exc


def _reduction(height: int, width: int, target: Target | None) -> tuple[int, int]:
    """The size to ask libjpeg-turbo for: the original over the largest power of two (8, 4, 2) that
    still covers ``target`` (the plain scaled IDCTs; M/8 factors such as 3/8 are slower than a
    full decode), or (0, 0): full size."""
    if target is None:
        return 0, 0
    th, tw = target(height, width)
    for k in (8, 4, 2):
        h, w = -(-height // k), -(-width // k)
        if h >= th and w >= tw:
            return h, w
    return 0, 0


def _decode_png(buf: np.ndarray, limits: FrameLimits) -> np.ndarray:
    # IHDR is the first chunk: length, b"IHDR", width, height (big-endian), PNG spec section 11.2.2
    if buf.size < 24 or buf[12:16].tobytes() != b"IHDR":
        raise ImageError("corrupt PNG (no IHDR header)")
    width, height = struct.unpack(">II", buf[16:24].tobytes())
    limits.check(int(width), int(height))
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"cannot decode PNG image of {buf.size} bytes")
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
