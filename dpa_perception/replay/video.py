"""Annotated outputs: one MP4 per camera for a replay, one JPEG per image for ``dpa-detect --annotate``.

The drawing is :func:`dpa_perception.core.drawing.draw_detections`. Videos are written with OpenCV's
``cv2.VideoWriter`` (fourcc ``mp4v``); every frame of a camera is resized to that camera's first frame
size, as a video has one frame size.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from dpa_perception.core.drawing import draw_detections
from dpa_perception.core.errors import ConfigError
from dpa_perception.core.types import Detections

TrackIds = Sequence[int] | np.ndarray | None


def safe_name(topic: str, default: str = "camera") -> str:
    """A file-system-safe stem for a topic: ``/rsu/cam0`` -> ``rsu_cam0``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", topic).strip("._-")
    return stem or default


def output_folder(path: Path, flag: str = "--annotate") -> Path:
    """``path`` as a folder, created if missing; :class:`ConfigError` when it exists and is not one."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


class AnnotatedVideo:
    """One annotated MP4 per camera in ``folder`` (``<safe topic>.mp4``), at ``fps`` frames a second."""

    def __init__(self, folder: Path | str, fps: float = 10.0) -> None:
        if not (np.isfinite(fps) and fps > 0):
            raise ConfigError(f"video fps must be a positive number, not {fps}")
        self.folder = Path(folder)
        self.fps = float(fps)
        self._writers: dict[str, cv2.VideoWriter] = {}
        self._sizes: dict[str, tuple[int, int]] = {}  # camera -> (width, height)
        self._paths: dict[str, Path] = {}
        self._frames: dict[str, int] = {}
        self._closed = False

    def _path_for(self, camera: str) -> Path:
        stem = safe_name(camera)
        taken = {p.name for p in self._paths.values()}
        name, n = f"{stem}.mp4", 1
        while name in taken:  # two topics that map to one stem ("/a/b" and "/a_b") keep apart
            n += 1
            name = f"{stem}_{n}.mp4"
        return self.folder / name

    def _open(self, camera: str, w: int, h: int) -> cv2.VideoWriter:
        output_folder(self.folder, "video folder")
        path = self._path_for(camera)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h))
        if not writer.isOpened():
            raise OSError(f"cannot open a video writer for {path} (OpenCV without an mp4v encoder?)")
        self._writers[camera], self._sizes[camera], self._paths[camera] = writer, (w, h), path
        self._frames[camera] = 0
        return writer

    def add(
        self,
        camera_topic: str,
        frame_bgr: np.ndarray,
        dets: Detections | None = None,
        class_names: Sequence[str] = (),
        track_ids: TrackIds = None,
        header: str | None = None,
    ) -> None:
        """Draw ``dets`` (and the header) on ``frame_bgr`` and append it to ``camera_topic``'s video."""
        if self._closed:
            raise RuntimeError("AnnotatedVideo is closed")
        img = draw_detections(frame_bgr, dets if dets is not None else Detections.empty(), class_names,
                              track_ids=track_ids, header=header)  # fmt: skip
        h, w = img.shape[:2]
        if h == 0 or w == 0:
            raise ValueError(f"empty frame for {camera_topic}")
        writer = self._writers.get(camera_topic)
        if writer is None:
            writer = self._open(camera_topic, w, h)
        size = self._sizes[camera_topic]
        if (w, h) != size:
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if w > size[0] else cv2.INTER_LINEAR)
        writer.write(img)
        self._frames[camera_topic] += 1

    @property
    def frame_counts(self) -> dict[str, int]:
        return dict(self._frames)

    def close(self) -> dict[str, Path]:
        """Finish every video; the paths written, by camera topic. Closing twice is harmless."""
        for writer in self._writers.values():
            writer.release()
        self._writers.clear()
        self._closed = True
        return dict(self._paths)

    def __enter__(self) -> AnnotatedVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_annotated_image(folder: Path | str, name: str, frame: np.ndarray, dets: Detections | None = None,
                          class_names: Sequence[str] = (), track_ids: TrackIds = None, header: str | None = None,
                          quality: int = 90) -> Path:  # fmt: skip
    """Write ``frame`` annotated as ``<folder>/<name>.jpg`` (``name`` made file-system safe); its path."""
    out = output_folder(Path(folder), "annotation folder")
    img = draw_detections(frame, dets if dets is not None else Detections.empty(), class_names,
                          track_ids=track_ids, header=header)  # fmt: skip
    path = out / f"{safe_name(name, 'image')}.jpg"
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError(f"cannot encode {path} as JPEG")
    path.write_bytes(buf.tobytes())
    return path
