"""Replay a rosbag2 through dpa_perception_node on simulated time.

    ros2 launch dpa_perception replay.launch.py bag:=/path/to/bag config:=/path/params.yaml \
        rate:=1.0 loop:=false

Runs `ros2 bag play BAG --clock` (publishes /clock from the bag's time) and the node with
use_sim_time:=true, configured and activated through lifecycle events (dpa_perception.launch.py).
The node's camera_topics must name the bag's image topics (remap or set them in the config).
Diagnostics are stamped and timed on the node clock, so they advance with the bag.

Arguments: bag (required), config, namespace, rate (playback rate), loop (true/false), clock_hz
(/clock rate, default 200),
start_delay_s (seconds between bringing the node up and starting playback, default 8: configure
loads and warms up the engine; frames published before activation are simply not received).
"""

from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    TimerAction,
)
from launch.conditions import IfCondition, UnlessCondition
from launch.launch_description import LaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    bag = LaunchConfiguration("bag")
    rate = LaunchConfiguration("rate")
    loop = LaunchConfiguration("loop")
    share = FindPackageShare("dpa_perception")

    # --clock HZ: /clock at clock_hz (ros2 bag play's default is 40 Hz); the node measures ages as
    # "node clock at arrival + steady time since", so latencies stay exact and non-negative anyway.
    play = ["ros2", "bag", "play", bag, "--clock", LaunchConfiguration("clock_hz"), "--rate", rate]
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "dpa_perception.launch.py"])),
        launch_arguments={
            "config": LaunchConfiguration("config"),
            "namespace": LaunchConfiguration("namespace"),
            "autostart": "true",
            "use_sim_time": "true",
        }.items(),
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", description="rosbag2 folder (or file) to play"),
            DeclareLaunchArgument(
                "config",
                default_value=PathJoinSubstitution([share, "config", "rsu_cpu.yaml"]),
                description="parameters YAML file",
            ),
            DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
            DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
            DeclareLaunchArgument("loop", default_value="false", description="loop the bag"),
            DeclareLaunchArgument("clock_hz", default_value="200", description="/clock publish rate (Hz)"),
            DeclareLaunchArgument("start_delay_s", default_value="8.0", description="delay before playing"),
            node,
            TimerAction(
                period=LaunchConfiguration("start_delay_s"),
                actions=[
                    ExecuteProcess(cmd=play + ["--loop"], output="screen", condition=IfCondition(loop)),
                    ExecuteProcess(cmd=play, output="screen", condition=UnlessCondition(loop)),
                ],
            ),
        ]
    )
