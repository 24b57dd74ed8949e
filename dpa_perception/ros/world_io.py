"""The node's world-frame outputs and geometry inputs (rclpy, vision_msgs 4.x, tf2_ros).

Outputs (lifecycle publishers, created at configure for cameras with a geometry):
``<camera ns>/objects`` per camera and the fused ``objects`` in the node's namespace, both
``vision_msgs/Detection3DArray`` in ``world_frame`` stamped with the frame's capture stamp
(:mod:`dpa_perception.bags.messages` documents the layout; the builder here fills rclpy messages the
same way), plus ``objects/cpm``: the fused objects as ETSI CPM perceived-object JSON
(``std_msgs/String``), since Detection3D has no velocity field.

Inputs: a camera whose ``cameras.<key>.camera_info_topic`` is set takes ``k`` and ``d`` from the
first CameraInfo (and again when they change); one whose ``tf_frame`` is set looks its pose up with
tf2 (``world_frame`` -> ``tf_frame``) once a second until found. Either rebuilds that camera's
geometry in the world stage (:meth:`~dpa_perception.world.stage.WorldStage.set_geometry`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dpa_perception.bags.messages import pose_covariance, yaw_quaternion
from dpa_perception.core.topics import OBJECTS_NAME, objects_topic
from dpa_perception.core.world_params import camera_param
from dpa_perception.world.cpm import cpm_objects
from dpa_perception.world.objects import WorldObject

CPM_NAME = OBJECTS_NAME + "/cpm"


def fill_objects_array(msg: Any, det_cls: Any, hyp_cls: Any, header: Any, objects: Sequence[WorldObject]) -> Any:
    """``msg`` (a Detection3DArray) filled with one Detection3D per object (rclpy message classes)."""
    msg.header = header
    for o in objects:
        det = det_cls()
        det.header = header
        det.id = str(o.track_id)
        pose = det.bbox.center
        pose.position.x, pose.position.y, pose.position.z = float(o.x), float(o.y), float(o.z)
        qx, qy, qz, qw = yaw_quaternion(o.heading)
        pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = qx, qy, qz, qw
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = float(o.length), float(o.width), float(o.height)
        hyp = hyp_cls()
        hyp.hypothesis.class_id = str(o.class_id)
        hyp.hypothesis.score = float(o.class_score)
        hyp.pose.pose = pose
        hyp.pose.covariance = [float(v) for v in pose_covariance(o)]
        det.results.append(hyp)
        msg.detections.append(det)
    return msg


class WorldIO:
    """Publishers of the world-frame objects and the CameraInfo / tf2 geometry updates of one node."""

    def __init__(self, node: Any, runtime: Any, values: dict[str, Any], qos: Any) -> None:
        from std_msgs.msg import String
        from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

        self.node, self.runtime, self.values = node, runtime, values
        self._types = (Detection3DArray, Detection3D, ObjectHypothesisWithPose, String)
        cams = list(runtime.config.tracked_cameras)
        self.pubs = {c: node.create_lifecycle_publisher(Detection3DArray, objects_topic(c), qos) for c in cams}
        self.fused = node.create_lifecycle_publisher(Detection3DArray, OBJECTS_NAME, qos) if cams else None
        self.cpm = node.create_lifecycle_publisher(String, CPM_NAME, qos) if cams else None
        self._subs: list[Any] = []
        self._tf_pending = [c for c in values["camera_topics"] if values[camera_param(c, "tf_frame")]]
        self._tf: Any = None
        self._timer: Any = None

    def publishers(self) -> list[Any]:
        return [*self.pubs.values(), *(p for p in (self.fused, self.cpm) if p is not None)]

    def start(self) -> None:
        """Subscribe to the CameraInfo topics and start the tf2 look-ups (activate)."""
        from sensor_msgs.msg import CameraInfo

        for cam in self.values["camera_topics"]:
            topic = self.values[camera_param(cam, "camera_info_topic")]
            if topic:
                self._subs.append(self.node.create_subscription(CameraInfo, topic, self._info_cb(cam), 1))
        if self._tf_pending:
            from tf2_ros import Buffer, TransformListener

            buffer = Buffer()
            self._tf = (buffer, TransformListener(buffer, self.node))
            self._timer = self.node.create_timer(1.0, self._lookup_poses)

    def stop(self) -> None:
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self._subs = []
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = None
        self._tf = None

    def publish(self, result: Any, header: Any) -> None:
        """One processed frame's objects and the fused objects (worker thread, under the node's lock)."""
        world = result.world
        pub = self.pubs.get(result.camera)
        if world is None or pub is None:
            return
        Array, Det, Hyp, String = self._types
        h = type(header)()
        h.stamp = header.stamp
        h.frame_id = str(self.values["world_frame"])
        pub.publish(fill_objects_array(Array(), Det, Hyp, h, world.objects))
        if self.fused is not None:
            self.fused.publish(fill_objects_array(Array(), Det, Hyp, h, world.fused))
        if self.cpm is not None:
            self.cpm.publish(String(data=json.dumps(cpm_objects(world.fused, world.stamp_ns))))

    # ------------------------------------------------------------------ geometry inputs

    def _info_cb(self, camera: str) -> Any:
        def cb(msg: Any) -> None:
            self._update(camera, {camera_param(camera, "camera_matrix"): [float(v) for v in msg.k],
                                  camera_param(camera, "distortion"): [float(v) for v in msg.d]})  # fmt: skip

        return cb

    def _lookup_poses(self) -> None:
        if self._tf is None:
            return
        buffer = self._tf[0]
        from rclpy.time import Time

        for cam in list(self._tf_pending):
            frame = self.values[camera_param(cam, "tf_frame")]
            try:
                t = buffer.lookup_transform(str(self.values["world_frame"]), frame, Time()).transform
            except Exception as exc:  # not yet published: try again next second
                self.node.get_logger().info(f"camera {cam}: waiting for tf {frame}: {type(exc).__name__}",
                                            throttle_duration_sec=10.0)  # fmt: skip
                continue
            pose = [t.translation.x, t.translation.y, t.translation.z,
                    t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w]  # fmt: skip
            if self._update(cam, {camera_param(cam, "pose"): [float(v) for v in pose]}):
                self._tf_pending.remove(cam)

    def _update(self, camera: str, changes: dict[str, Any]) -> bool:
        """The runtime's geometry update (:meth:`Runtime.update_camera_geometry`), logged; False when refused."""
        try:
            changed = self.runtime.update_camera_geometry(camera, changes)
        except Exception as exc:
            self.node.get_logger().error(f"camera {camera}: geometry update refused: {exc}")
            return False
        if changed:
            self.values.update(changes)
            self.node.get_logger().info(f"camera {camera}: geometry updated from {', '.join(changes)}")
        return True
