"""launch_testing: the installed launch file brings the node up (configure -> activate via lifecycle events).

Runs under `colcon test` / `launch_test` in a sourced workspace where dpa_perception is installed
(the launch file and the console script are found through the ament index). Skipped elsewhere.
Engine: ``$DPA_TEST_ENGINE_DIR`` or YOLOX-Nano built once into the temp dir (shared with test_ros_node.py).
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

import cv2
import pytest
import yaml
from engine_cache import cached_engine_dir

# Marks, not module-level skips: under the launch_testing pytest plugin a module-level skip skips
# the whole test folder. Only missing ROS packages skip; the package's own imports never do.
ROS_MODULES = ("rclpy", "launch", "launch_ros", "launch_testing", "lifecycle_msgs", "vision_msgs")
HAVE_ROS = all(importlib.util.find_spec(m) is not None for m in ROS_MODULES)
pytestmark = [pytest.mark.ros, pytest.mark.skipif(not HAVE_ROS, reason="needs a sourced ROS 2 workspace")]
if HAVE_ROS:
    import launch_testing
    import launch_testing.actions
    import launch_testing.asserts
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description import LaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.substitutions import FindPackageShare
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CompressedImage, Image
    from vision_msgs.msg import Detection2DArray

    from dpa_perception.ros.conversions import image_fields

    post_shutdown_test = launch_testing.post_shutdown_test
else:

    def post_shutdown_test() -> Any:  # the class below is then skipped by pytestmark
        return lambda cls: cls


TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"
FRAME_FILE = TESTDATA / "images" / "uadetrac_MVI_20011_img00001.jpg"
NODE = "dpa_launch_test"
RAW = "/tlaunch/cam0/image_raw"
JPEG = "/tlaunch/cam1/image_raw/compressed"


@pytest.mark.launch_test
def generate_test_description() -> Any:
    params = {
        "engine_dir": str(cached_engine_dir()),
        "camera_topics": [RAW, JPEG],
        "latency_budget_ms": 5000.0,
        "diagnostics_period_s": 0.25,
    }
    cfg = Path(tempfile.mkdtemp(prefix="dpa_launch_test_")) / "params.yaml"
    cfg.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    bringup = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare("dpa_perception"), "launch", "dpa_perception.launch.py"])
        ),
        launch_arguments={"config": str(cfg), "node_name": NODE, "autostart": "true"}.items(),
    )
    return LaunchDescription([bringup, launch_testing.actions.ReadyToTest()]), {}


class TestLaunchedNode(unittest.TestCase):
    node: Any
    frame: Any
    dets: dict[str, list[Any]]
    diags: list[Any]
    raw_pub: Any
    jpeg_pub: Any

    @classmethod
    def setUpClass(cls) -> None:
        rclpy.init()
        cls.node = rclpy.create_node("dpa_launch_test_client")
        cls.frame = cv2.imread(str(FRAME_FILE))
        cls.dets = {"/tlaunch/cam0/detections": [], "/tlaunch/cam1/detections": []}
        cls.diags = []
        for topic, store in cls.dets.items():
            cls.node.create_subscription(Detection2DArray, topic, store.append, 10)
        cls.node.create_subscription(DiagnosticArray, "/diagnostics", cls.diags.append, 50)
        cls.raw_pub = cls.node.create_publisher(Image, RAW, 10)
        cls.jpeg_pub = cls.node.create_publisher(CompressedImage, JPEG, 10)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.node.destroy_node()
        rclpy.try_shutdown()

    def spin_until(self, cond: Any, timeout: float) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.05)
            v = cond()
            if v:
                return v
        return cond()

    def call(self, srv_type: Any, name: str, req: Any, timeout: float = 30.0) -> Any:
        cli = self.node.create_client(srv_type, name)
        self.assertTrue(cli.wait_for_service(timeout_sec=timeout), name)
        fut = cli.call_async(req)
        self.assertTrue(self.spin_until(fut.done, timeout), f"{name} timed out")
        self.node.destroy_client(cli)
        return fut.result()

    def raw(self, **override: Any) -> Any:
        msg = Image()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = "cam0_optical"
        for k, v in {**image_fields(self.frame), **override}.items():
            setattr(msg, k, v)
        return msg

    def jpeg(self) -> Any:
        msg = CompressedImage()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = "cam1_optical"
        msg.format = "jpeg"
        msg.data = cv2.imencode(".jpg", self.frame)[1].tobytes()
        return msg

    def publish_until_detected(self, pub: Any, make: Any, topic: str, timeout: float = 30.0) -> Any:
        sent = {}
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = make()
            sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg.header.frame_id
            pub.publish(msg)
            got = self.spin_until(
                lambda: [m for m in self.dets[topic] if (m.header.stamp.sec, m.header.stamp.nanosec) in sent], 0.5
            )
            if got:
                return got[-1], sent[(got[-1].header.stamp.sec, got[-1].header.stamp.nanosec)]
        self.fail(f"no detections on {topic}")

    def test_1_autostart_reaches_active(self, proc_output: Any) -> None:
        proc_output.assertWaitFor("active: subscribed to", timeout=180)
        res = self.call(GetState, f"/{NODE}/get_state", GetState.Request())
        self.assertEqual(res.current_state.label, "active")

    def test_2_detections_on_both_cameras(self, proc_output: Any) -> None:
        proc_output.assertWaitFor("active: subscribed to", timeout=180)
        for pub, make, topic, fid in [
            (self.raw_pub, self.raw, "/tlaunch/cam0/detections", "cam0_optical"),
            (self.jpeg_pub, self.jpeg, "/tlaunch/cam1/detections", "cam1_optical"),
        ]:
            det, sent_fid = self.publish_until_detected(pub, make, topic)
            self.assertEqual(det.header.frame_id, fid)
            self.assertEqual(sent_fid, fid)
            self.assertGreater(len(det.detections), 0)

    def test_3_malformed_input_keeps_node_active(self, proc_output: Any) -> None:
        proc_output.assertWaitFor("active: subscribed to", timeout=180)
        since = len(self.diags)
        for _ in range(5):
            self.raw_pub.publish(self.raw(step=10))
            rclpy.spin_once(self.node, timeout_sec=0.05)
        name = f"{NODE}: camera {RAW}"

        def bad() -> list[Any]:
            return [s for a in self.diags[since:] for s in a.status if s.name == name and s.level != DiagnosticStatus.OK]

        statuses = self.spin_until(bad, 15.0)
        self.assertTrue(statuses, "no non-OK diagnostic for the camera fed a malformed image")
        self.assertIn("step", statuses[-1].message)
        proc_output.assertWaitFor(f"camera {RAW}: frame rejected", timeout=10)
        res = self.call(GetState, f"/{NODE}/get_state", GetState.Request())
        self.assertEqual(res.current_state.label, "active")
        self.publish_until_detected(self.jpeg_pub, self.jpeg, "/tlaunch/cam1/detections")

    def test_4_budget_parameter(self, proc_output: Any) -> None:
        proc_output.assertWaitFor("active: subscribed to", timeout=180)
        for value, ok in ((50000.0, False), (4000.0, True)):
            req = SetParameters.Request()
            req.parameters = [Parameter("latency_budget_ms", value=value).to_parameter_msg()]
            res = self.call(SetParameters, f"/{NODE}/set_parameters", req)
            self.assertEqual(res.results[0].successful, ok, res.results[0].reason)

    def state(self) -> str:
        return str(self.call(GetState, f"/{NODE}/get_state", GetState.Request()).current_state.label)

    def change(self, transition_id: int) -> None:
        req = ChangeState.Request()
        req.transition.id = transition_id
        self.assertTrue(self.call(ChangeState, f"/{NODE}/change_state", req).success, transition_id)

    def test_5_autostart_acts_once(self, proc_output: Any) -> None:
        """After a manual cleanup, configure stops at inactive: the autostart handler fired only once."""
        proc_output.assertWaitFor("active: subscribed to", timeout=180)
        self.change(Transition.TRANSITION_DEACTIVATE)
        self.change(Transition.TRANSITION_CLEANUP)
        self.assertEqual(self.state(), "unconfigured")
        self.change(Transition.TRANSITION_CONFIGURE)
        self.spin_until(lambda: False, 3.0)  # time for a (wrong) activate event to arrive
        self.assertEqual(self.state(), "inactive")
        self.change(Transition.TRANSITION_ACTIVATE)  # and by hand it still activates
        self.assertEqual(self.state(), "active")


@post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info: Any) -> None:
        launch_testing.asserts.assertExitCodes(proc_info)
