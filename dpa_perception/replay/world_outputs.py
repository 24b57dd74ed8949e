"""What a replay writes of the world stage: the objects topics in the output bag, tracks.jsonl, the
bird's-eye PNG, and (``--video``) one annotated MP4 per camera.

Topics are the node's: ``<camera ns>/objects`` per camera and the fused ``/objects`` (the node's
``objects`` in the root namespace), ``vision_msgs/Detection3DArray`` in ``world_frame``, stamped
with the frame's recorded header stamp; ``/label_info`` carries the class names once.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dpa_perception.bags.writer import DetectionBagWriter
from dpa_perception.core.pipeline import FrameResult
from dpa_perception.core.topics import LABEL_INFO_NAME, OBJECTS_NAME, objects_topic
from dpa_perception.replay.birdseye import write_birdseye
from dpa_perception.replay.video import AnnotatedVideo
from dpa_perception.runtime import Runtime, camera_geometries
from dpa_perception.world.objects import WorldObject

FUSED_TOPIC = "/" + OBJECTS_NAME
LABEL_TOPIC = "/" + LABEL_INFO_NAME


def _restamped(objects: Sequence[WorldObject], stamp_ns: int) -> list[WorldObject]:
    """The objects stamped with the recorded header stamp (the pipeline ran on the replay's timeline)."""
    return [replace(o, stamp_ns=stamp_ns) for o in objects]


@dataclass
class WorldRecorder:
    """Per processed frame: the objects into the bag and a tracks.jsonl line (camera and fused)."""

    runtime: Runtime
    writer: DetectionBagWriter
    video: AnnotatedVideo | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # camera -> (width, height)

    @property
    def frame_id(self) -> str:
        return str(self.runtime.values["world_frame"])

    def start(self, log_ns: int) -> None:
        self.writer.write_label_info(LABEL_TOPIC, log_ns, self.runtime.class_names,
                                     float(self.runtime.values["score_threshold"]))  # fmt: skip

    def add(self, r: FrameResult, camera_topic: str, stamp_ns: int, log_ns: int) -> None:
        """One processed frame (under the outputs' lock)."""
        if self.video is not None and r.frame is not None:
            self.video.add(camera_topic, r.frame, r.detections, self.runtime.class_names, r.track_ids,
                           _header(camera_topic, r, stamp_ns))  # fmt: skip
        if r.image_hw is not None:
            self.sizes[camera_topic] = (r.image_hw[1], r.image_hw[0])
        w = r.world
        if w is None:
            return
        mode = r.mode or ""
        objects, fused = _restamped(w.objects, stamp_ns), _restamped(w.fused, stamp_ns)
        topic = objects_topic(camera_topic)
        self.writer.write_objects(topic, log_ns, stamp_ns, self.frame_id, objects)
        self.writer.write_objects(FUSED_TOPIC, log_ns, stamp_ns, self.frame_id, fused)
        self.records.append({"topic": topic, "camera": camera_topic, "stamp_ns": stamp_ns, "mode": mode,
                             "objects": [o.to_dict() for o in objects]})  # fmt: skip
        self.records.append({"topic": FUSED_TOPIC, "camera": "", "stamp_ns": stamp_ns, "mode": mode,
                             "objects": [o.to_dict() for o in fused]})  # fmt: skip
        self.counts.update({f"{k}_dropped": v for k, v in w.dropped.items()})
        self.counts["objects"] += len(objects)

    def _view_range(self, origin: tuple[float, float]) -> float:
        """How far a camera's field of view is drawn: to its farthest track (plus a margin), at most max_range_m."""
        far = _farthest(self.records, origin)
        max_range = float(self.runtime.values["max_range_m"])
        return min(max_range, far + 10.0) if far > 0 else max_range

    def write(self, out: Path) -> dict[str, Any]:
        """tracks.jsonl and birdseye.png (with tracking), the videos; what was written, for the summary."""
        info: dict[str, Any] = {}
        if self.video is not None:
            info["videos"] = {cam: str(p) for cam, p in self.video.close().items()}
        if self.runtime.world is None:
            return info
        self.records.sort(key=lambda rec: (rec["stamp_ns"], rec["topic"]))
        with (out / "tracks.jsonl").open("w") as fh:
            for rec in self.records:
                fh.write(json.dumps(rec) + "\n")
        geometries = camera_geometries(self.runtime.values)
        fovs = {cam: (g.fov_polygon(*self.sizes.get(cam, (640, 360)), self._view_range(g.origin_xy)), g.origin_xy)
                for cam, g in geometries.items()}  # fmt: skip
        write_birdseye(out / "birdseye.png", self.records, fovs, self.runtime.class_names,
                       title=f"tracks in {self.frame_id} (m)")  # fmt: skip
        ids = {o["track_id"] for rec in self.records if rec["camera"] for o in rec["objects"]}
        info.update({"tracks": len(ids), "objects_published": self.counts["objects"],
                     "dropped": {k: v for k, v in self.counts.items() if k.endswith("_dropped")},
                     "world_stage": self.runtime.world.stats()})  # fmt: skip
        return info

def _farthest(records: list[dict[str, Any]], origin: tuple[float, float]) -> float:
    """The farthest object from ``origin`` in the per-camera records (0 without any)."""
    d = [math.hypot(o["x"] - origin[0], o["y"] - origin[1]) for rec in records if rec["camera"] for o in rec["objects"]]
    return max(d, default=0.0)


def _header(camera: str, r: FrameResult, stamp_ns: int) -> str:
    vis = f"visibility {r.visibility.degradation:.2f} {r.visibility.label}" if r.visibility else ""
    return f"{camera}  {r.mode}  {vis}  t={stamp_ns / 1e9:.2f} s"
