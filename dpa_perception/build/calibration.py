"""Calibration frames for the build: loaded from a folder of images or a rosbag2, and split into
calibration and held-out sets."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dpa_perception.core.errors import ConfigError, ImageError
from dpa_perception.core.image_codec import IMAGE_SUFFIXES, read_image

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def is_image_folder(source: Path) -> bool:
    """A folder of images (a rosbag2 folder holds ``metadata.yaml``)."""
    return source.is_dir() and not (source / "metadata.yaml").is_file()


def load_frames(source: Path, limit: int, topics: Sequence[str] | None = None, log: Log = _stderr) -> list[np.ndarray]:
    """Calibration frames from a folder of images or from a rosbag2 (every ``n``-th image message)."""
    if is_image_folder(source):
        return _folder_frames(source, limit)
    return _bag_frames(source, limit, topics, log)


def _folder_frames(source: Path, limit: int) -> list[np.ndarray]:
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) for calibration")
    step = max(1, len(files) // limit)
    return [read_image(p) for p in files[::step][:limit]]


def _bag_frames(source: Path, limit: int, topics: Sequence[str] | None, log: Log) -> list[np.ndarray]:
    from dpa_perception.bags.reader import count_images, iter_images

    total = count_images([source], topics)
    step = max(1, total // limit)
    frames: list[np.ndarray] = []
    for i, msg in enumerate(iter_images([source], topics)):
        if i % step == 0 and len(frames) < limit:
            try:
                frames.append(msg.decode())
            except ImageError as exc:
                log(f"dpa-build: skipping a calibration frame on {msg.topic}: {exc}")
    if not frames:
        raise ConfigError(f"{source}: no decodable image messages for calibration")
    return frames


def split_holdout(frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """Calibration and held-out frames.

    With 8 frames or more every 4th frame is held out. With fewer, all frames calibrate and the
    held-out set is made of variations the calibration never saw: each frame mirrored, mirrored
    at 0.8x scale, and mirrored with darker exposure.
    """
    if len(frames) >= 8:
        return [f for i, f in enumerate(frames) if i % 4], frames[::4], "every 4th frame"
    import cv2

    lut = (255.0 * (np.arange(256) / 255.0) ** 1.6).astype(np.uint8)
    held = []
    for f in frames:
        m = np.ascontiguousarray(f[:, ::-1])
        held += [m, cv2.resize(m, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA), cv2.LUT(m, lut)]
    return frames, held, "mirrored, mirrored 0.8x and mirrored darker copies of the calibration frames"
