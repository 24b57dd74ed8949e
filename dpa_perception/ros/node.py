"""``dpa_perception_node``: the lifecycle node wiring the ROS-free pipeline to topics.

Lifecycle (rclpy.lifecycle, Humble and Jazzy):

* ``__init__``: declares every parameter of :data:`dpa_perception.core.node_params.PARAMS` with a
  descriptor (ranges enforced by rclpy, structural ones read-only). No engine, no topics.
* ``on_configure``: validates the parameters, loads the engine folder (manifest checked, both variants,
  warm-up; never builds), creates the pipeline, the lifecycle publishers (detections per camera,
  optional debug images, ``~/label_info``) and the ``/diagnostics`` publisher + node-clock timer.
  Any failure: one logged reason, everything released, FAILURE.
* ``on_activate``: enables the publishers, starts the inference worker, subscribes to the cameras.
* ``on_deactivate``: unsubscribes and stops the worker (the engine stays loaded).
* ``on_cleanup`` / ``on_shutdown`` / ``on_error``: release everything.

``main`` only spins the node; bring it up with lifecycle transitions (the launch file does).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Bool, Float32, Header

from dpa_perception.core import node_params as P
from dpa_perception.core.diagnostics import StatusRecord
from dpa_perception.core.errors import ConfigError, DpaError
from dpa_perception.core.topics import debug_image_topic, is_compressed
from dpa_perception.core.world_params import camera_specs
from dpa_perception.ros.conversions import (
    VisionTypes,
    annotate,
    box_records,
    detection_array_msg,
    image_msg,
    label_info_msg,
    stamp_to_ns,
    vision_types,
)
from dpa_perception.ros.qos import camera_qos, latched_qos, output_qos
from dpa_perception.ros.world_io import WorldIO
from dpa_perception.runtime import Runtime, assemble

NODE_NAME = "dpa_perception"
WARN_THROTTLE_S = 5.0

_LEVELS = {0: DiagnosticStatus.OK, 1: DiagnosticStatus.WARN, 2: DiagnosticStatus.ERROR, 3: DiagnosticStatus.STALE}


def descriptor_for(spec: P.ParamSpec) -> ParameterDescriptor:
    """The ParameterDescriptor of one table entry (type comes from the default value, as rclpy wants)."""
    constraints = []
    if spec.choices:
        constraints.append("one of: " + ", ".join(spec.choices))
    if spec.type == P.INT_ARRAY and spec.min is not None:
        constraints.append(f"each element in [{int(spec.min)}, {int(spec.max or 0)}]")
    if spec.empty_array_default:
        constraints.append("empty list by default; omit the key rather than writing []")
    d = ParameterDescriptor(
        description=spec.description,
        additional_constraints="; ".join(constraints),
        read_only=not spec.live,
        # Empty-list defaults would be typed BYTE_ARRAY by rclpy and then refuse a real list:
        # declare those dynamically typed and check the type ourselves (node_params.coerce).
        dynamic_typing=spec.empty_array_default,
    )
    if spec.type == P.DOUBLE and spec.min is not None and spec.max is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
    elif spec.type == P.INT and spec.min is not None and spec.max is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=0)]
    return d


class DpaPerceptionNode(LifecycleNode):
    """Multi-camera dual-precision detector as a managed (lifecycle) node."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        self._runtime: Runtime | None = None
        self._pipeline_running = False
        self._values: dict[str, Any] = {}
        self._declare_errors: list[str] = []
        self._det_pubs: dict[str, Any] = {}
        self._debug_pubs: dict[str, Any] = {}
        self._label_pub: Any = None
        self._diag_pub: Any = None
        self._diag_timer: Any = None
        self._subs: list[Any] = []
        self._active = False
        self._lock = threading.Lock()  # guards _active and the publishers against the worker thread
        self._last_warn: dict[str, float] = {}
        self._class_names: list[str] = []
        self._vision: VisionTypes | None = None
        self._world_io: WorldIO | None = None
        super().__init__(node_name, **kwargs)
        self._declare_parameters()
        self._values = self._read_values()
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------ parameters

    def _fq_name(self) -> str:
        ns = self.get_namespace().rstrip("/")
        return f"{ns}/{self.get_name()}"

    def _specs(self) -> tuple[P.ParamSpec, ...]:
        """The table's parameters plus the geometry parameters (cameras.<key>.*) of each camera topic."""
        cams = self.get_parameter("camera_topics").value
        return P.PARAMS + camera_specs([str(c) for c in cams] if isinstance(cams, (list, tuple)) else [])

    def _declare_parameters(self) -> None:
        """The table first (camera_topics among it), then each camera's geometry parameters."""
        for spec in P.PARAMS:
            self._declare(spec)
        for spec in self._specs()[len(P.PARAMS):]:
            if not self.has_parameter(spec.name):  # two topics of one camera share a key: refused at configure
                self._declare(spec)

    def _declare(self, spec: P.ParamSpec) -> None:
        default = list(spec.default) if isinstance(spec.default, list) else spec.default
        try:
            self.declare_parameter(spec.name, default, descriptor_for(spec))
        except Exception as exc:  # wrong type / out-of-range override: default kept, configure fails
            self._declare_errors.append(f"parameter {spec.name}: {exc}")
            self.get_logger().error(f"parameter {spec.name}: the given value is refused ({exc}); configure will fail")
            self.declare_parameter(spec.name, default, descriptor_for(spec), ignore_override=True)

    def _read_values(self) -> dict[str, Any]:
        return {spec.name: self.get_parameter(spec.name).value for spec in self._specs()}

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in P.SPECS}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            if self._runtime is not None:
                live = self._runtime.apply_live(changes)  # validates all, then applies (the pipeline swaps decode)
                if "score_threshold" in live:
                    self._publish_label_info(live["score_threshold"])
            else:  # not configured: validate only; configure reads the parameters
                live = P.validate_live_update(self._values, changes)
        except DpaError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        except Exception as exc:  # never let an exception escape into rclpy's set path
            return SetParametersResult(successful=False, reason=f"{type(exc).__name__}: {exc}")
        self._values.update(live)
        self.get_logger().info("parameters updated: " + ", ".join(f"{k}={v}" for k, v in live.items()))
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            if self._declare_errors:
                raise ConfigError(self._declare_errors[0])
            values = P.validate_values(self._read_values())
            self._values = values
            self._load(values)
        except DpaError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # rclpy swallows callback exceptions unlogged: log, FAILURE
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        d = self._runtime.engine_desc if self._runtime is not None else {}
        places = ", ".join(f"{m} on {v.get('placement')}" for m, v in (d.get("variants") or {}).items())
        self.get_logger().info(
            f"configured: {d.get('backend')} engine {str(d.get('model_sha256', ''))[:12]} ({places}), "
            f"{len(values['camera_topics'])} camera(s)"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            ret = super().on_activate(state)  # enables the lifecycle publishers
            if ret != TransitionCallbackReturn.SUCCESS:
                return ret
            with self._lock:
                self._active = True
            assert self._runtime is not None
            self._runtime.pipeline.start(self._on_result)
            self._pipeline_running = True
            self._subscribe()
            if self._world_io is not None:
                self._world_io.start()
            self._publish_label_info(self._values["score_threshold"])
        except Exception as exc:  # same: log the reason, undo, FAILURE
            self.get_logger().error(f"activate failed: {type(exc).__name__}: {exc}")
            self._deactivate_io()
            super().on_deactivate(state)
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info("active: subscribed to " + ", ".join(self._values["camera_topics"]))
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        try:
            self._deactivate_io()
        except Exception as exc:  # still disable the publishers below
            self.get_logger().error(f"deactivate: {type(exc).__name__}: {exc}")
        ret = super().on_deactivate(state)
        self.get_logger().info("inactive: subscriptions removed, engine kept")
        return ret

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: engine released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.get_logger().error(f"error processing (from {state.label}): releasing everything")
        self._release()
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ setup / teardown

    def _load(self, values: dict[str, Any]) -> None:
        # ages: node clock at arrival + steady time since (a coarse /clock under use_sim_time stays exact)
        rt = self._runtime = assemble(values, clock_ns=self._now_ns, steady_ns=time.monotonic_ns,
                                      prefix=self.get_name(), hardware_id=self._fq_name())  # fmt: skip
        self._class_names = rt.class_names
        vision = self._vision = vision_types()
        for cam, out in zip(values["camera_topics"], values["detection_topics"]):
            self._det_pubs[cam] = self.create_lifecycle_publisher(vision.Detection2DArray, out, output_qos(10))
            if values["publish_debug_image"]:
                self._debug_pubs[cam] = self.create_lifecycle_publisher(Image, debug_image_topic(out), output_qos(1))
        self._world_io = WorldIO(self, rt, values, output_qos(10))
        self._label_pub = self.create_lifecycle_publisher(vision.LabelInfo, "~/label_info", latched_qos())
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(values["diagnostics_period_s"], self._publish_diagnostics)

    def _subscribe(self) -> None:
        qos = camera_qos(self._values["qos_reliability"], self._values["qos_history"], self._values["qos_depth"])
        for cam in self._values["camera_topics"]:
            if is_compressed(cam):
                self._subs.append(self.create_subscription(CompressedImage, cam, self._image_cb(cam, True), qos))
            else:
                self._subs.append(self.create_subscription(Image, cam, self._image_cb(cam, False), qos))
        if self._values["weather_topic"]:
            self._subs.append(
                self.create_subscription(Float32, self._values["weather_topic"], self._on_visibility, 10)
            )
        if self._values["precipitation_topic"]:
            self._subs.append(
                self.create_subscription(Bool, self._values["precipitation_topic"], self._on_precipitation, 10)
            )

    def _deactivate_io(self) -> None:
        with self._lock:
            self._active = False
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._world_io is not None:
            self._world_io.stop()
        if self._runtime is not None and self._pipeline_running and not self._runtime.pipeline.stop():
            # _active is already False: nothing more is published; the worker exits after its batch
            self.get_logger().error(f"inference worker still busy after {self._values['worker_stop_timeout_s']} s")
        self._pipeline_running = False

    def _release(self) -> None:
        """Free everything configure created; safe to call in any state, twice."""
        self._deactivate_io()
        with self._lock:
            pubs = list(self._det_pubs.values()) + list(self._debug_pubs.values())
            pubs += [self._label_pub] if self._label_pub is not None else []
            pubs += self._world_io.publishers() if self._world_io is not None else []
            self._det_pubs, self._debug_pubs, self._label_pub, self._world_io = {}, {}, None, None
        for pub in pubs:
            self.destroy_lifecycle_publisher(pub)
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        if self._runtime is not None:
            if not self._runtime.close():
                self.get_logger().error("engine left to the busy inference worker; it is freed when the worker exits")
            self._runtime = None
        self._last_warn.clear()

    # ------------------------------------------------------------------ inputs

    def _now_ns(self) -> int:
        return int(self.get_clock().now().nanoseconds)

    def _image_cb(self, camera: str, compressed: bool) -> Callable[[Any], None]:
        def cb(msg: Any) -> None:
            self._on_image(camera, msg, compressed)

        return cb

    def _on_image(self, camera: str, msg: Any, compressed: bool) -> None:
        rt = self._runtime
        if not self._active or rt is None:
            return
        debug = self._debug_pubs.get(camera)
        keep_frame = debug is not None and debug.get_subscription_count() > 0
        stamp = stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec)
        rejected = rt.pipeline.submit_message(camera, msg, compressed, stamp, msg.header, keep_frame=keep_frame)
        if rejected is not None:
            self._warn_rejected(camera, rejected.reason)

    def _warn_rejected(self, camera: str, message: str) -> None:
        # Throttled per camera by hand: rclpy's throttle_duration_sec keys its state on the call site,
        # so one camera's errors would hide another's.
        now = time.monotonic()
        if now - self._last_warn.get(camera, -math.inf) >= WARN_THROTTLE_S:
            self._last_warn[camera] = now
            self.get_logger().warning(
                f"camera {camera}: frame rejected: {message} (repeats on this camera are logged at most every "
                f"{WARN_THROTTLE_S:.0f} s; see /diagnostics)"
            )

    def _on_visibility(self, msg: Any) -> None:
        if self._runtime is not None:
            self._runtime.pipeline.report_weather(visibility_m=float(msg.data))

    def _on_precipitation(self, msg: Any) -> None:
        if self._runtime is not None:
            self._runtime.pipeline.report_weather(precipitation=bool(msg.data))

    # ------------------------------------------------------------------ outputs

    def _on_result(self, result: Any) -> None:
        """Worker thread: publish one processed frame (dropped frames publish nothing)."""
        if result.status != "processed":
            return
        header = result.meta
        if header is None:
            header = Header()
        try:
            with self._lock:
                if not self._active or self._vision is None:
                    return
                pub = self._det_pubs.get(result.camera)
                if pub is None:
                    return
                records = box_records(result.detections, self._class_names)
                pub.publish(detection_array_msg(header, records, self._vision, result.track_ids))
                if self._world_io is not None:
                    self._world_io.publish(result, header)
                debug = self._debug_pubs.get(result.camera)
                if (
                    debug is not None
                    and result.frame is not None
                    and debug.get_subscription_count() > 0
                ):
                    img = annotate(result.frame, result.detections, self._class_names, track_ids=result.track_ids,
                                   header=f"{result.mode}  {result.reason}")  # fmt: skip
                    debug.publish(image_msg(header, img, Image))
        except Exception as exc:  # the worker thread must survive a bad message
            self.get_logger().error(f"publishing {result.camera}: {type(exc).__name__}: {exc}")

    def _publish_label_info(self, threshold: float) -> None:
        with self._lock:
            if self._label_pub is None or self._vision is None:
                return
            header = Header()
            header.stamp = self.get_clock().now().to_msg()
            self._label_pub.publish(label_info_msg(header, self._class_names, threshold, self._vision))

    def _publish_diagnostics(self) -> None:
        now_ns = self._now_ns()
        try:
            rt = self._runtime
            records = rt.status(now_ns, self._active) if rt is not None else []
        except Exception as exc:  # diagnostics must report, not crash the timer
            msg = f"statistics unavailable: {type(exc).__name__}: {exc}"
            records = [StatusRecord(f"{self.get_name()}: node", 2, msg, hardware_id=self._fq_name())]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        for r in records:
            msg.status.append(
                DiagnosticStatus(
                    level=_LEVELS[r.level],
                    name=r.name,
                    message=r.message,
                    hardware_id=r.hardware_id,
                    values=[KeyValue(key=k, value=v) for k, v in r.values],
                )
            )
        if self._diag_pub is not None:
            self._diag_pub.publish(msg)


def main(args: list[str] | None = None) -> None:
    """Spin the node (unconfigured). Configure/activate it via lifecycle transitions."""
    rclpy.init(args=args)
    shutdown_exc: tuple[type[BaseException], ...] = (KeyboardInterrupt,)
    ext = getattr(rclpy.executors, "ExternalShutdownException", None)
    if ext is not None:
        shutdown_exc += (ext,)
    node = None
    try:
        node = DpaPerceptionNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except shutdown_exc:
        pass
    finally:
        if node is not None:
            try:
                node._release()
                node.destroy_node()
            except Exception as exc:  # the context may already be shut down by a signal
                print(f"dpa_perception_node: teardown: {type(exc).__name__}: {exc}")
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
