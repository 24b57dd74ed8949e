"""Bring up dpa_perception_node as a lifecycle node: configure, then activate (Humble and Jazzy).

    ros2 launch dpa_perception dpa_perception.launch.py \
        config:=/path/params.yaml namespace:=rsu_east autostart:=true use_sim_time:=false

Arguments:
  config        parameters YAML (default: the installed config/rsu_cpu.yaml)
  cameras       camera geometry YAML written by dpa-calibrate (cameras.<key>.homography...), loaded
                before config (default: config/no_camera_geometry.yaml, 2D output only)
  namespace     node namespace ('' = root); relative camera topics resolve inside it
  node_name     node name (default dpa_perception; also the prefix of its diagnostic names)
  autostart     true: configure, and activate when 'inactive' is first reached, via lifecycle events
                (EmitEvent(ChangeState) + OnStateTransition; launch_ros' own `autostart` argument
                exists only on Jazzy, so it is not used). It acts once: after a manual cleanup,
                configure stops at inactive. false: the node waits unconfigured
                (`ros2 lifecycle set /dpa_perception configure`).
  use_sim_time  true when replaying bags with --clock
"""

from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessStart
from launch.events import matches_action
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition


def generate_launch_description() -> LaunchDescription:
    config = LaunchConfiguration("config")
    cameras = LaunchConfiguration("cameras")
    namespace = LaunchConfiguration("namespace")
    node_name = LaunchConfiguration("node_name")
    autostart = LaunchConfiguration("autostart")
    use_sim_time = LaunchConfiguration("use_sim_time")

    node = LifecycleNode(
        package="dpa_perception",
        executable="dpa_perception_node",
        name=node_name,
        namespace=namespace,
        output="screen",
        parameters=[cameras, config, {"use_sim_time": ParameterValue(use_sim_time, value_type=bool)}],
    )
    configure = EmitEvent(
        event=ChangeState(
            lifecycle_node_matcher=matches_action(node),
            transition_id=Transition.TRANSITION_CONFIGURE,
        ),
        condition=IfCondition(autostart),
    )
    activate_when_inactive = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            start_state="configuring",
            goal_state="inactive",
            # once: a later cleanup -> configure by hand must stop at inactive, not re-activate
            handle_once=True,
            entities=[
                EmitEvent(
                    event=ChangeState(
                        lifecycle_node_matcher=matches_action(node),
                        transition_id=Transition.TRANSITION_ACTIVATE,
                    )
                )
            ],
        ),
        condition=IfCondition(autostart),
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "config",
                default_value=PathJoinSubstitution([FindPackageShare("dpa_perception"), "config", "rsu_cpu.yaml"]),
                description="parameters YAML file",
            ),
            DeclareLaunchArgument(
                "cameras",
                default_value=PathJoinSubstitution(
                    [FindPackageShare("dpa_perception"), "config", "no_camera_geometry.yaml"]),
                description="camera geometry YAML (dpa-calibrate), loaded before config",
            ),
            DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
            DeclareLaunchArgument("node_name", default_value="dpa_perception", description="node name"),
            DeclareLaunchArgument(
                "autostart", default_value="true", description="configure and activate automatically"
            ),
            DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock time"),
            activate_when_inactive,  # registered before the node starts, so no transition is missed
            node,
            RegisterEventHandler(OnProcessStart(target_action=node, on_start=[configure])),
        ]
    )
